"""Scale targets that are missing, deleted and recreated, or of a kind without a `/scale`
subresource (a ConfigMap, a custom resource whose CRD has no scale subresource, a kind nobody
serves): each ScaledObject says so in Ready=False with a message naming its target and one
Warning event, the operator never crashes or restarts a loop, and every one recovers when its
target comes back or becomes scalable."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.e2e.harness import make_pending, wait_for
from tests.e2e.workloads import (
    apply,
    condition,
    deployment,
    events,
    get,
    redis_trigger,
    scaled_object,
)
from tests.faults.conftest import (
    OperatorFactory,
    assert_healthy,
    hold_replicas,
    wait_condition,
    wait_replicas,
)
from tests.testbed.kube import KubeAPIServer
from tests.testbed.services import Redis

pytestmark = [pytest.mark.testbed, pytest.mark.e2e]


def _thing_crd(group: str, *, scale: bool) -> dict[str, Any]:
    subresources: dict[str, Any] = {"status": {}}
    if scale:
        subresources["scale"] = {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
        }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"things.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "things", "singular": "thing", "kind": "Thing"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                    "subresources": subresources,
                }
            ],
        },
    }


def _not_found(kube: KubeAPIServer, namespace: str, so: str, target: str) -> dict[str, Any]:
    found = wait_condition(kube, namespace, so, "Ready", "False", reason="ScaleTargetNotFound")
    message = condition(found, "Ready")["message"]
    assert target in message, f"the condition of {so} does not name {target}: {message}"
    return found


def _warnings(kube: KubeAPIServer, namespace: str, so: str, reason: str) -> int:
    return sum(
        1 for e in events(kube, namespace, so) if e["type"] == "Warning" and e["reason"] == reason
    )


def test_missing_deleted_and_unscalable_targets(
    crds: KubeAPIServer,
    namespace: str,
    redis_server: Redis,
    stream: tuple[object, str],
    unique_name: str,
    operator: OperatorFactory,
) -> None:
    client, name = stream
    trigger = [redis_trigger(f"127.0.0.1:{redis_server.port}", name, pending=1)]
    group = f"{unique_name}.faults.autoscale.dev"
    crd = f"things.{group}"
    crds.kubectl("apply", "-f", "-", input=json.dumps(_thing_crd(group, scale=False)))
    crds.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=30s")
    try:
        apply(crds, namespace, deployment("gone", replicas=0))
        crds.kubectl("create", "configmap", "settings", "-n", namespace)
        specs = {
            "late": scaled_object("late", "late-worker", trigger),  # no such Deployment yet
            "gone": scaled_object("gone", "gone", trigger),
            "configmap": scaled_object(
                "configmap", "settings", trigger, kind="ConfigMap", api_version="v1"
            ),
            "thing": scaled_object(
                "thing", "thing-1", trigger, kind="Thing", api_version=f"{group}/v1"
            ),
            "nokind": scaled_object("nokind", "widget-7", trigger, kind="Widget"),
        }
        for manifest in specs.values():
            apply(crds, namespace, manifest)
        op = operator()
        make_pending(client, name, 2)
        wait_replicas(crds, namespace, "deployment", "gone", 2)

        _not_found(crds, namespace, "late", "late-worker")
        configmap = _not_found(crds, namespace, "configmap", "settings")
        assert "/scale" in condition(configmap, "Ready")["message"]
        wait_for(
            lambda: crds.kubectl("get", "things", "-n", namespace, check=False).returncode == 0,
            timeout=30,
            what="things served",
        )
        apply(
            crds,
            namespace,
            {
                "apiVersion": f"{group}/v1",
                "kind": "Thing",
                "metadata": {"name": "thing-1"},
                "spec": {"replicas": 0},
            },
        )
        thing = _not_found(crds, namespace, "thing", "thing-1")
        assert "/scale" in condition(thing, "Ready")["message"]
        _not_found(crds, namespace, "nokind", "widget-7")

        # The workload deleted under a running loop, then recreated.
        crds.kubectl("delete", "deployment", "gone", "-n", namespace)
        _not_found(crds, namespace, "gone", "gone")
        time.sleep(3)  # several polls against the missing target
        apply(crds, namespace, deployment("gone", replicas=0))
        wait_replicas(crds, namespace, "deployment", "gone", 2)
        wait_condition(crds, namespace, "gone", "Ready", "True", reason="ScaledObjectReady")

        # The missing Deployment appears.
        apply(crds, namespace, deployment("late-worker", replicas=0))
        wait_replicas(crds, namespace, "deployment", "late-worker", 2)
        wait_condition(crds, namespace, "late", "Ready", "True", reason="ScaledObjectReady")

        # The CRD gains a scale subresource: the Thing becomes scalable.
        crds.kubectl("apply", "-f", "-", input=json.dumps(_thing_crd(group, scale=True)))
        wait_for(
            lambda: (
                (get(crds, namespace, "things", "thing-1").get("spec") or {}).get("replicas") == 2
            ),
            timeout=30,
            what="Thing thing-1 scaled to 2",
        )
        wait_condition(crds, namespace, "thing", "Ready", "True", reason="ScaledObjectReady")

        # Still no /scale on a ConfigMap, after many polls: one Warning event, not one per poll.
        hold_replicas(crds, namespace, "deployment", "gone", 2, seconds=1)
        for so in ("late", "configmap", "nokind"):
            assert _warnings(crds, namespace, so, "ScaleTargetNotFound") == 1, so
        assert condition(get(crds, namespace, "so", "configmap"), "Ready")["status"] == "False"
        assert_healthy(op)
        started = [e for e in events(crds, namespace, "gone") if e["reason"] == "ScalersStarted"]
        assert len(started) == 1, "the loop was restarted"
    finally:
        crds.kubectl("delete", "crd", crd, "--wait=false", check=False)
