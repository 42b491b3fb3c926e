"""Replica counts of Deployments and StatefulSets come from a watch, not from a GET of /scale on
every poll: polls cost the API server nothing while nothing changes, and a scale the operator
made itself is never undone or repeated on a stale count."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import Operator, make_pending, wait_for
from tests.e2e.workloads import (
    apply,
    condition,
    deployment,
    get,
    redis_trigger,
    replicas,
    scaled_object,
    statefulset,
)
from tests.testbed.kube import KubeAPIServer
from tests.testbed.services import Redis

pytestmark = [pytest.mark.testbed, pytest.mark.e2e]


def scale_reads(kube: KubeAPIServer, resource: str) -> float:
    """GET /scale requests the API server has served for `resource`, by its own counter."""
    text = kube.kubectl("get", "--raw", "/metrics").stdout
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "apiserver_request_total"
                and labels.get("verb") == "GET"
                and labels.get("resource") == resource
                and labels.get("subresource") == "scale"
            ):
                total += sample.value
    return total


def polls(op: Operator) -> float:
    """Polls the operator has made (its poll-duration histogram's count)."""
    for family in text_string_to_metric_families(op.metrics()):
        if family.name == "autoscale_poll_duration_seconds":
            return sum(s.value for s in family.samples if s.name.endswith("_count"))
    return 0.0


def scale_writes(kube: KubeAPIServer, namespace: str, name: str) -> int:
    """Successful writes to the target's /scale, from the API server's audit log."""
    count = 0
    for line in kube.audit_log.read_text().splitlines():
        entry = json.loads(line)
        ref = entry.get("objectRef", {})
        if (
            ref.get("namespace") == namespace
            and ref.get("name") == name
            and ref.get("subresource") == "scale"
            and entry.get("verb") in ("patch", "update")
            and entry.get("stage") == "ResponseComplete"
            and entry.get("responseStatus", {}).get("code") == 200
        ):
            count += 1
    return count


@pytest.mark.parametrize(
    ("kind", "resource", "manifest"),
    [("Deployment", "deployments", deployment), ("StatefulSet", "statefulsets", statefulset)],
)
def test_polls_read_replicas_from_the_watch(
    crds: KubeAPIServer,
    namespace: str,
    redis_server: Redis,
    stream: tuple[redis.Redis, str],
    operator: Callable[..., Operator],
    kind: str,
    resource: str,
    manifest: Callable[..., dict[str, object]],
) -> None:
    client, name = stream
    address = f"127.0.0.1:{redis_server.port}"
    apply(crds, namespace, manifest("worker", replicas=0))
    apply(
        crds,
        namespace,
        scaled_object(
            "worker",
            "worker",
            [redis_trigger(address, name, pending=2)],
            kind=kind,
            maxReplicaCount=3,
            cooldownPeriod=300,
        ),
    )
    op = operator()
    wait_for(
        lambda: condition(get(crds, namespace, "so", "worker"), "Ready").get("status") == "True",
        timeout=30,
        what="Ready=True",
    )
    wait_for(lambda: polls(op) >= 3, timeout=30, what="three polls")

    # Nothing changes: twenty polls (pollingInterval 1 s) read no /scale at all.
    reads, polled = scale_reads(crds, resource), polls(op)
    wait_for(lambda: polls(op) >= polled + 20, timeout=60, what="twenty more polls")
    assert scale_reads(crds, resource) == reads

    # A backlog scales 0 -> 2 with one patch; the polls after it see the new count at once
    # (from the patch, before the watch tells it), so they neither patch again nor read /scale.
    make_pending(client, name, 4)
    wait_for(
        lambda: replicas(crds, namespace, resource, "worker") == 2,
        timeout=30,
        what=f"the {kind} to scale 0 -> 2",
    )
    polled = polls(op)
    wait_for(lambda: polls(op) >= polled + 10, timeout=60, what="ten more polls")
    assert scale_writes(crds, namespace, "worker") == 1
    assert scale_reads(crds, resource) == reads

    # A count changed by someone else (kubectl scale) is seen through the watch: the operator
    # puts it back to what the backlog asks for.
    crds.kubectl("scale", resource, "worker", "-n", namespace, "--replicas=1")
    wait_for(
        lambda: (
            scale_writes(crds, namespace, "worker") == 3  # ours, kubectl's, ours again
            and replicas(crds, namespace, resource, "worker") == 2
        ),
        timeout=30,
        what=f"the {kind} back at 2 after kubectl scaled it to 1",
    )
    assert scale_reads(crds, resource) == reads
