"""The operator's main job, end to end: a Deployment at 0 scales out when Redis stream entries
become pending, to ceil(pending / pendingEntriesCount) capped at maxReplicaCount, and returns to
0 after cooldownPeriod once they are acknowledged; status and events tell the story."""

from __future__ import annotations

import time
from collections.abc import Callable

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
)
from tests.testbed.kube import KubeAPIServer
from tests.testbed.services import Redis

pytestmark = [pytest.mark.testbed, pytest.mark.e2e]


def test_zero_to_n_and_back_to_zero(
    crds: KubeAPIServer,
    namespace: str,
    redis_server: Redis,
    stream: tuple[redis.Redis, str],
    operator: Callable[..., Operator],
) -> None:
    client, name = stream
    address = f"127.0.0.1:{redis_server.port}"
    apply(crds, namespace, deployment("worker", replicas=0))
    apply(
        crds,
        namespace,
        scaled_object(
            "worker",
            "worker",
            [redis_trigger(address, name, pending=2)],
            maxReplicaCount=3,
            cooldownPeriod=4,
        ),
    )
    operator()

    so = wait_for(
        lambda: (
            (o := get(crds, namespace, "so", "worker"))
            and condition(o, "Ready").get("status") == "True"
            and o
        ),
        timeout=30,
        what="Ready=True",
    )
    assert condition(so, "Active")["status"] == "False"
    assert so["status"]["externalMetricNames"] == [f"s0-redis-streams-{name}"]
    assert replicas(crds, namespace, "deployment", "worker") == 0
    assert "autoscale.dev/finalizer" in so["metadata"]["finalizers"]

    ids = make_pending(client, name, 9)  # ceil(9 / 2) = 5, capped at maxReplicaCount 3
    pending_at = time.monotonic()
    wait_for(
        lambda: replicas(crds, namespace, "deployment", "worker") == 3,
        timeout=15,
        what="the Deployment to scale 0 -> 3",
    )
    reaction = time.monotonic() - pending_at
    # pollingInterval is 1 s; allow the machine's noise but not a second interval's worth of it.
    assert reaction < 1 + 4, f"scaled out {reaction:.1f}s after entries became pending"
    so = wait_for(
        lambda: (
            (o := get(crds, namespace, "so", "worker"))
            and condition(o, "Active").get("status") == "True"
            and o
        ),
        timeout=10,
        what="Active=True",
    )
    assert so["status"]["lastActiveTime"]

    client.xack(name, "workers", *ids)
    acked_at = time.monotonic()
    time.sleep(2)  # well inside the 4 s cooldown: nothing may change yet
    assert replicas(crds, namespace, "deployment", "worker") == 3
    wait_for(
        lambda: replicas(crds, namespace, "deployment", "worker") == 0,
        timeout=20,
        what="the Deployment to return to 0 after cooldown",
    )
    # The cooldown runs from the last poll that saw activity, which may precede the
    # acknowledgement by up to one pollingInterval (1 s).
    assert time.monotonic() - acked_at >= 4 - 1

    so = get(crds, namespace, "so", "worker")
    assert condition(so, "Active")["status"] == "False"
    assert condition(so, "Ready")["status"] == "True"
    assert condition(so, "Fallback")["status"] == "False"
    reasons = [event["reason"] for event in events(crds, namespace, "worker")]
    assert "ScaleTargetActivated" in reasons
    assert "ScaleTargetDeactivated" in reasons
