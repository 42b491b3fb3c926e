"""The scaling rules end to end, each against the real kube-apiserver and real Redis with the
operator as a separate process: other workload kinds, pause annotations, fallback, behavior
policies, deletion, conflicts, invalid specs and a restart in the middle of a cooldown."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.e2e.harness import Operator, make_pending, wait_for
from tests.e2e.workloads import (
    apply,
    condition,
    deployment,
    events,
    get,
    redis_trigger,
    replicas,
    scaled_object,
    statefulset,
)
from tests.testbed import start_service
from tests.testbed.kube import KubeAPIServer
from tests.testbed.services import Redis

pytestmark = [pytest.mark.testbed, pytest.mark.e2e]

Stream = tuple[redis.Redis, str]
NO_WINDOW = {
    "horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}
}


def address(server: Redis) -> str:
    return f"127.0.0.1:{server.port}"


def wait_replicas(
    kube: KubeAPIServer, namespace: str, resource: str, name: str, count: int, timeout: float = 20
) -> None:
    wait_for(
        lambda: replicas(kube, namespace, resource, name) == count,
        timeout=timeout,
        what=f"{resource}/{name} at {count} replicas",
    )


def wait_condition(
    kube: KubeAPIServer, namespace: str, name: str, kind: str, status: str, timeout: float = 20
) -> dict[str, Any]:
    so: dict[str, Any] = wait_for(
        lambda: (
            (o := get(kube, namespace, "so", name))
            and condition(o, kind).get("status") == status
            and o
        ),
        timeout=timeout,
        what=f"{kind}={status} on ScaledObject {name}",
    )
    return so


def test_statefulset_and_custom_resource_with_scale_subresource(
    crds: KubeAPIServer,
    namespace: str,
    redis_server: Redis,
    stream: Stream,
    operator: Callable[..., Operator],
) -> None:
    client, name = stream
    widget_crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.e2e.autoscale.dev"},
        "spec": {
            "group": "e2e.autoscale.dev",
            "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"replicas": {"type": "integer"}},
                                },
                                "status": {
                                    "type": "object",
                                    "properties": {"replicas": {"type": "integer"}},
                                },
                            },
                        }
                    },
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                        },
                    },
                }
            ],
        },
    }
    crds.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(widget_crd))
    crds.kubectl("wait", "--for=condition=Established", "crd/gadgets.e2e.autoscale.dev")
    apply(crds, namespace, statefulset("db", replicas=0))
    wait_for(
        lambda: crds.kubectl("get", "gadgets", "-n", namespace, check=False).returncode == 0,
        timeout=30,
        what="discovery of gadgets",
    )
    apply(
        crds,
        namespace,
        {
            "apiVersion": "e2e.autoscale.dev/v1",
            "kind": "Gadget",
            "metadata": {"name": "g1"},
            "spec": {"replicas": 0},
        },
    )
    apply(
        crds,
        namespace,
        scaled_object(
            "db",
            "db",
            [redis_trigger(address(redis_server), name, pending=1)],
            kind="StatefulSet",
            maxReplicaCount=5,
        ),
    )
    apply(
        crds,
        namespace,
        scaled_object(
            "gadget",
            "g1",
            [redis_trigger(address(redis_server), name, pending=2)],
            kind="Gadget",
            api_version="e2e.autoscale.dev/v1",
            maxReplicaCount=5,
        ),
    )
    operator()
    make_pending(client, name, 4)
    wait_replicas(crds, namespace, "statefulset", "db", 4)
    wait_replicas(crds, namespace, "gadgets", "g1", 2)
    so = get(crds, namespace, "so", "gadget")
    assert so["status"]["scaleTargetGVKR"] == {
        "group": "e2e.autoscale.dev",
        "version": "v1",
        "kind": "Gadget",
        "resource": "gadgets",
    }
    assert so["status"]["scaleTargetKind"] == "e2e.autoscale.dev/v1.Gadget"


def test_pause_and_paused_replicas(
    crds: KubeAPIServer,
    namespace: str,
    redis_server: Redis,
    stream: Stream,
    operator: Callable[..., Operator],
) -> None:
    client, name = stream
    apply(crds, namespace, deployment("worker", replicas=0))
    apply(
        crds,
        namespace,
        scaled_object(
            "worker",
            "worker",
            [redis_trigger(address(redis_server), name, pending=1)],
            annotations={"autoscaling.keda.sh/paused": "true"},
            advanced=NO_WINDOW,
            maxReplicaCount=10,
        ),
    )
    operator()
    wait_condition(crds, namespace, "worker", "Paused", "True")
    make_pending(client, name, 3)
    time.sleep(3)  # three polling intervals: a paused object must not move
    assert replicas(crds, namespace, "deployment", "worker") == 0

    crds.kubectl(
        "annotate",
        "so",
        "worker",
        "-n",
        namespace,
        "--overwrite",
        "autoscaling.keda.sh/paused-replicas=7",
    )
    wait_replicas(crds, namespace, "deployment", "worker", 7)
    so = wait_condition(crds, namespace, "worker", "Paused", "True")
    assert so["status"].get("pausedReplicaCount") == 7

    crds.kubectl(
        "annotate",
        "so",
        "worker",
        "-n",
        namespace,
        "autoscaling.keda.sh/paused-",
        "autoscaling.keda.sh/paused-replicas-",
    )
    wait_replicas(crds, namespace, "deployment", "worker", 3)
    wait_condition(crds, namespace, "worker", "Paused", "False")


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Redis]:
    """A Redis of this test's own, so it can be stopped without disturbing other tests."""
    server = start_service("redis", tmp_path)
    assert isinstance(server, Redis)
    yield server
    server.stop()


def _own_stream(server: Redis, name: str) -> redis.Redis:
    client = redis.Redis.from_url(server.url, decode_responses=True)
    client.xgroup_create(name, "workers", id="$", mkstream=True)
    return client


def test_fallback_when_the_source_goes_down(
    crds: KubeAPIServer,
    namespace: str,
    own_redis: Redis,
    unique_name: str,
    operator: Callable[..., Operator],
) -> None:
    client = _own_stream(own_redis, unique_name)
    apply(crds, namespace, deployment("with-fallback", replicas=0))
    apply(crds, namespace, deployment("without-fallback", replicas=0))
    trigger = redis_trigger(address(own_redis), unique_name, pending=1)
    apply(
        crds,
        namespace,
        scaled_object(
            "with-fallback",
            "with-fallback",
            [trigger],
            maxReplicaCount=10,
            fallback={"failureThreshold": 2, "replicas": 6},
            advanced=NO_WINDOW,
        ),
    )
    apply(
        crds,
        namespace,
        scaled_object(
            "without-fallback",
            "without-fallback",
            [trigger],
            maxReplicaCount=10,
            advanced=NO_WINDOW,
        ),
    )
    operator()
    make_pending(client, unique_name, 3)
    wait_replicas(crds, namespace, "deployment", "with-fallback", 3)
    wait_replicas(crds, namespace, "deployment", "without-fallback", 3)

    own_redis.stop()  # the source goes away mid-run
    wait_replicas(crds, namespace, "deployment", "with-fallback", 6)
    so = wait_condition(crds, namespace, "with-fallback", "Fallback", "True")
    assert so["status"]["health"][f"s0-redis-streams-{unique_name}"]["status"] == "Failing"
    deadline = time.monotonic() + 6  # well past cooldownPeriod (3 s): never scaled down
    while time.monotonic() < deadline:
        assert replicas(crds, namespace, "deployment", "without-fallback") == 3
        time.sleep(0.5)
    reasons = {event["reason"] for event in events(crds, namespace, "with-fallback")}
    assert {"ScalerFailed", "FallbackActivated"} <= reasons


def test_behavior_policy_limits_scale_down(
    crds: KubeAPIServer,
    namespace: str,
    redis_server: Redis,
    stream: Stream,
    operator: Callable[..., Operator],
) -> None:
    client, name = stream
    apply(crds, namespace, deployment("worker", replicas=0))
    apply(
        crds,
        namespace,
        scaled_object(
            "worker",
            "worker",
            [redis_trigger(address(redis_server), name, pending=1)],
            maxReplicaCount=20,
            minReplicaCount=1,
            cooldownPeriod=1,
            advanced={
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleDown": {
                            "stabilizationWindowSeconds": 0,
                            "policies": [{"type": "Pods", "value": 2, "periodSeconds": 3}],
                        }
                    }
                }
            },
        ),
    )
    operator()
    ids = make_pending(client, name, 8)
    wait_replicas(crds, namespace, "deployment", "worker", 8)
    # Let the scale-up leave the 3 s policy period: scale-ups within it would widen the limit.
    time.sleep(3.5)
    client.xack(name, "workers", *ids)
    seen = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not seen or seen[-1] != 1):
        count = replicas(crds, namespace, "deployment", "worker")
        if not seen or seen[-1] != count:
            seen.append(count)
        time.sleep(0.2)
    assert seen[-1] == 1, seen
    steps = [a - b for a, b in itertools.pairwise(seen)]
    assert all(0 < step <= 2 for step in steps), f"scale-down steps {seen} exceed 2 pods"


def test_restore_to_original_replica_count_on_delete(
    crds: KubeAPIServer,
    namespace: str,
    redis_server: Redis,
    stream: Stream,
    operator: Callable[..., Operator],
) -> None:
    _, name = stream
    apply(crds, namespace, deployment("worker", replicas=4))
    apply(
        crds,
        namespace,
        scaled_object(
            "worker",
            "worker",
            [redis_trigger(address(redis_server), name, pending=1)],
            advanced={"restoreToOriginalReplicaCount": True, **NO_WINDOW},
            cooldownPeriod=1,
        ),
    )
    operator()
    so = wait_for(
        lambda: (
            (o := get(crds, namespace, "so", "worker"))
            and "originalReplicaCount" in o.get("status", {})
            and o
        ),
        timeout=20,
        what="originalReplicaCount",
    )
    assert so["status"]["originalReplicaCount"] == 4
    wait_replicas(crds, namespace, "deployment", "worker", 0)
    crds.kubectl("delete", "so", "worker", "-n", namespace, "--wait=true", "--timeout=30s")
    wait_replicas(crds, namespace, "deployment", "worker", 4)


def test_conflicting_hpa_and_second_scaled_object(
    crds: KubeAPIServer,
    namespace: str,
    redis_server: Redis,
    stream: Stream,
    operator: Callable[..., Operator],
) -> None:
    client, name = stream
    trigger = redis_trigger(address(redis_server), name, pending=1)
    apply(crds, namespace, deployment("shared", replicas=0))
    apply(crds, namespace, deployment("hpa-owned", replicas=1))
    apply(
        crds,
        namespace,
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "existing"},
            "spec": {
                "scaleTargetRef": {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": "hpa-owned",
                },
                "minReplicas": 1,
                "maxReplicas": 3,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 50},
                        },
                    }
                ],
            },
        },
    )
    apply(crds, namespace, scaled_object("first", "shared", [trigger], maxReplicaCount=5))
    time.sleep(1.1)  # creationTimestamp has one-second resolution: make `first` the older
    apply(crds, namespace, scaled_object("second", "shared", [trigger], maxReplicaCount=9))
    apply(crds, namespace, scaled_object("on-hpa", "hpa-owned", [trigger], maxReplicaCount=9))
    operator()
    so = wait_condition(crds, namespace, "second", "Ready", "False")
    assert "already managed by ScaledObject first" in condition(so, "Ready")["message"]
    so = wait_condition(crds, namespace, "on-hpa", "Ready", "False", timeout=40)
    assert "HorizontalPodAutoscaler existing" in condition(so, "Ready")["message"]
    make_pending(client, name, 9)
    wait_replicas(crds, namespace, "deployment", "shared", 5)  # first's max, not second's 9
    time.sleep(2)
    assert replicas(crds, namespace, "deployment", "shared") == 5
    assert replicas(crds, namespace, "deployment", "hpa-owned") == 1
    assert any(
        e["reason"] == "ScaleTargetConflict" and e["type"] == "Warning"
        for e in events(crds, namespace, "second")
    )


def test_invalid_specs_are_reported_and_others_keep_scaling(
    crds: KubeAPIServer,
    namespace: str,
    redis_server: Redis,
    stream: Stream,
    operator: Callable[..., Operator],
) -> None:
    client, name = stream
    apply(crds, namespace, deployment("good", replicas=0))
    apply(crds, namespace, deployment("bad", replicas=0))
    # The schema cannot know scaler parameters: the operator must refuse this one by name.
    apply(
        crds,
        namespace,
        scaled_object(
            "bad",
            "bad",
            [
                {
                    "type": "redis-streams",
                    "metadata": {
                        "address": address(redis_server),
                        "stream": name,
                        "consumerGroup": "workers",
                        "pendingEntriesCount": "five",
                    },
                }
            ],
        ),
    )
    apply(
        crds,
        namespace,
        scaled_object("unknown", "other", [{"type": "no-such-source", "metadata": {"x": "y"}}]),
    )
    apply(
        crds,
        namespace,
        scaled_object("good", "good", [redis_trigger(address(redis_server), name, pending=1)]),
    )
    # ...and the API server refuses what the schema and CEL rules can say.
    refused = crds.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        check=False,
        input=json.dumps(
            scaled_object(
                "refused", "good", [redis_trigger("x:1", "s")], minReplicaCount=5, maxReplicaCount=2
            )
        ),
    )
    assert refused.returncode != 0
    assert "minReplicaCount" in refused.stderr
    operator()
    so = wait_condition(crds, namespace, "bad", "Ready", "False")
    assert "pendingEntriesCount" in condition(so, "Ready")["message"]
    so = wait_condition(crds, namespace, "unknown", "Ready", "False")
    assert "no-such-source" in condition(so, "Ready")["message"]
    assert any(e["type"] == "Warning" for e in events(crds, namespace, "bad"))
    make_pending(client, name, 2)
    wait_replicas(crds, namespace, "deployment", "good", 2)


def test_restart_in_the_middle_of_a_cooldown(
    crds: KubeAPIServer,
    namespace: str,
    redis_server: Redis,
    stream: Stream,
    operator: Callable[..., Operator],
) -> None:
    client, name = stream
    apply(crds, namespace, deployment("worker", replicas=0))
    apply(
        crds,
        namespace,
        scaled_object(
            "worker",
            "worker",
            [redis_trigger(address(redis_server), name, pending=1)],
            cooldownPeriod=8,
        ),
    )
    first = operator()
    ids = make_pending(client, name, 2)
    wait_replicas(crds, namespace, "deployment", "worker", 2)
    client.xack(name, "workers", *ids)
    idle_since = time.monotonic()
    time.sleep(2)
    first.stop()  # SIGTERM in the middle of the 8 s cooldown
    operator()
    while time.monotonic() - idle_since < 7:  # the new process must honour the old cooldown
        assert replicas(crds, namespace, "deployment", "worker") == 2
        time.sleep(0.3)
    wait_replicas(crds, namespace, "deployment", "worker", 0)
