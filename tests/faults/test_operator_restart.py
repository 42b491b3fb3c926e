"""The operator restarted (SIGTERM, and SIGKILL) in the middle of a scale-down stabilization
window: the new process honours the window the old one started, from status.engine."""

from __future__ import annotations

import time

import pytest

from tests.e2e.harness import make_pending
from tests.e2e.workloads import apply, deployment, redis_trigger, replicas, scaled_object
from tests.faults.conftest import OperatorFactory, assert_healthy, wait_replicas
from tests.testbed.kube import KubeAPIServer
from tests.testbed.services import Redis

pytestmark = [pytest.mark.testbed, pytest.mark.e2e]

WINDOW = 8  # seconds of scale-down stabilization


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_restart_in_the_middle_of_a_stabilization_window(
    how: str,
    crds: KubeAPIServer,
    namespace: str,
    redis_server: Redis,
    stream: tuple[object, str],
    operator: OperatorFactory,
) -> None:
    client, name = stream
    apply(crds, namespace, deployment("worker", replicas=0))
    apply(
        crds,
        namespace,
        scaled_object(
            "worker",
            "worker",
            [redis_trigger(f"127.0.0.1:{redis_server.port}", name, pending=1)],
            maxReplicaCount=10,
            cooldownPeriod=1,
            advanced={
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleDown": {"stabilizationWindowSeconds": WINDOW},
                        "scaleUp": {
                            "policies": [{"type": "Pods", "value": 100, "periodSeconds": 1}]
                        },
                    }
                }
            },
        ),
    )
    first = operator()
    ids = make_pending(client, name, 6)
    wait_replicas(crds, namespace, "deployment", "worker", 6)
    time.sleep(2)  # a few polls recommending 6
    client.xack(name, "workers", *ids[:4])  # from now on the recommendation is 2
    lowered = time.monotonic()
    time.sleep(3)
    if how == "sigkill":
        first.kill()  # no chance to write anything on the way out
    else:
        first.stop()
    second = operator()
    # 6 was recommended until `lowered` (give or take a poll): the window keeps it until about
    # lowered + 8 s. The new process must hold it from its start (lowered + 3 s) to then.
    while time.monotonic() - lowered < WINDOW - 1.5:
        count = replicas(crds, namespace, "deployment", "worker")
        assert count == 6, f"scaled to {count} {time.monotonic() - lowered:.1f}s into the window"
        time.sleep(0.3)
    wait_replicas(crds, namespace, "deployment", "worker", 2, timeout=10)
    assert time.monotonic() - lowered >= WINDOW - 1.5
    assert_healthy(second)
