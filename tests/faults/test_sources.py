"""Event sources that fail under a running operator: a Redis that goes away and comes back on
the same port (no scale-down without fallback, fallback after failureThreshold, recovery, no
leaked connections), and a source that accepts connections but never answers (each poll bounded
by --poll-timeout, other ScaledObjects on schedule)."""

from __future__ import annotations

import time

import pytest

from tests.e2e.harness import make_pending
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
from tests.faults.conftest import (
    OperatorFactory,
    RestartableRedis,
    SilentServer,
    assert_healthy,
    hold_replicas,
    make_group,
    metric_samples,
    operator_sockets,
    wait_condition,
    wait_replicas,
)
from tests.testbed.kube import KubeAPIServer
from tests.testbed.services import Redis

pytestmark = [pytest.mark.testbed, pytest.mark.e2e]

UNLIMITED = {  # no window, no rate limit: the count follows the source at once
    "horizontalPodAutoscalerConfig": {
        "behavior": {
            "scaleDown": {"stabilizationWindowSeconds": 0},
            "scaleUp": {"policies": [{"type": "Pods", "value": 100, "periodSeconds": 1}]},
        }
    }
}


def test_redis_outage_holds_the_count_falls_back_and_recovers(
    crds: KubeAPIServer,
    namespace: str,
    own_redis: RestartableRedis,
    unique_name: str,
    operator: OperatorFactory,
) -> None:
    client = own_redis.client()
    make_group(client, unique_name)
    trigger = redis_trigger(own_redis.address, unique_name, pending=1)
    metric = f"s0-redis-streams-{unique_name}"
    for name, extra in (
        ("holder", {}),
        ("fallback", {"fallback": {"failureThreshold": 3, "replicas": 6}}),
    ):
        apply(crds, namespace, deployment(name, replicas=0))
        apply(
            crds,
            namespace,
            scaled_object(
                name,
                name,
                [trigger],
                maxReplicaCount=10,
                cooldownPeriod=2,
                advanced=UNLIMITED,  # the default policy would slow 3 -> 6 within 15 s
                **extra,
            ),
        )
    op = operator()
    make_pending(client, unique_name, 3)
    wait_replicas(crds, namespace, "deployment", "holder", 3)
    wait_replicas(crds, namespace, "deployment", "fallback", 3)

    own_redis.stop()
    down = time.monotonic()
    # Fallback only after more than failureThreshold (3) failed polls, 1 s apart.
    wait_replicas(crds, namespace, "deployment", "fallback", 6, timeout=15)
    assert time.monotonic() - down >= 2.5, "fallback applied before failureThreshold was passed"
    so = wait_condition(crds, namespace, "fallback", "Fallback", "True")
    assert so["status"]["health"][metric]["status"] == "Failing"
    assert so["status"]["health"][metric]["numberOfFailures"] > 3
    # Without fallback the count holds, well past cooldownPeriod (2 s): an unreadable source is
    # not zero load.
    hold_replicas(crds, namespace, "deployment", "holder", 3, seconds=8)
    holder = get(crds, namespace, "so", "holder")
    assert condition(holder, "Ready")["reason"] == "TriggerError", holder["status"]

    own_redis.start()  # same port, empty: the workers' group comes back with 2 pending
    client = own_redis.client()
    make_group(client, unique_name)
    make_pending(client, unique_name, 2)
    wait_replicas(crds, namespace, "deployment", "fallback", 2)
    wait_replicas(crds, namespace, "deployment", "holder", 2)
    so = wait_condition(crds, namespace, "fallback", "Fallback", "False")
    assert so["status"]["health"][metric]["status"] == "Happy"
    wait_condition(crds, namespace, "holder", "Ready", "True", reason="ScaledObjectReady")
    reasons = [e["reason"] for e in events(crds, namespace, "fallback")]
    assert reasons.count("FallbackActivated") == 1, reasons
    assert reasons.count("FallbackDeactivated") == 1, reasons
    assert reasons.count("ScalerFailed") == 1, reasons  # once per streak, not per poll
    assert_healthy(op)


def test_no_connection_leak_across_repeated_redis_outages(
    crds: KubeAPIServer,
    namespace: str,
    own_redis: RestartableRedis,
    unique_name: str,
    operator: OperatorFactory,
) -> None:
    """Three stop/start cycles of the same Redis (same port), then two freeze/thaw cycles
    (SIGSTOP: the server keeps its sockets, so a connection the operator forgot would still be
    listed afterwards). After each, the server lists no more of the operator's connections than
    there are ScaledObjects sharing the client, and the operator holds no half-closed socket."""
    objects = 4
    client = own_redis.client()
    make_group(client, unique_name)
    for i in range(objects):
        apply(crds, namespace, deployment(f"w{i}", replicas=0))
        apply(
            crds,
            namespace,
            scaled_object(
                f"w{i}",
                f"w{i}",
                [redis_trigger(own_redis.address, unique_name, pending=1)],
                maxReplicaCount=20,
                advanced=UNLIMITED,
            ),
        )
    op = operator("--poll-timeout=1")
    pending = 2
    make_pending(client, unique_name, pending)
    for i in range(objects):
        wait_replicas(crds, namespace, "deployment", f"w{i}", pending)

    def connections() -> tuple[int, dict[str, int]]:
        time.sleep(2)  # a couple of polls of every object
        server_side = max(len(own_redis.operator_clients()) for _ in range(3))
        return server_side, operator_sockets(op.process.pid, own_redis.port)

    def outage_seen() -> None:
        for i in range(objects):
            wait_condition(crds, namespace, f"w{i}", "Ready", "False", reason="TriggerError")
        time.sleep(2)  # a few more failed polls during the outage

    counts = [("baseline", *connections())]
    for cycle in range(3):
        own_redis.stop()
        outage_seen()
        own_redis.start()
        client = own_redis.client()
        make_group(client, unique_name)
        pending = 3 + cycle
        make_pending(client, unique_name, pending)
        for i in range(objects):
            wait_replicas(crds, namespace, "deployment", f"w{i}", pending)
        counts.append((f"restart {cycle + 1}", *connections()))
    for cycle in range(2):
        own_redis.freeze()
        outage_seen()
        own_redis.thaw()
        pending += 1
        make_pending(client, unique_name, 1)
        for i in range(objects):
            wait_replicas(crds, namespace, "deployment", f"w{i}", pending)
        counts.append((f"freeze {cycle + 1}", *connections()))
    print("\noperator connections (server side, operator side):", counts)
    # One shared client (a pool) serves the four objects: what the server lists is bounded by
    # how many polls overlapped, never by how many outages there were.
    for _, server_side, sockets in counts:
        assert 1 <= server_side <= objects, counts
        assert set(sockets) == {"ESTABLISHED"}, counts  # nothing left half-closed
        assert sockets["ESTABLISHED"] == server_side, counts
    assert_healthy(op)


def test_hung_source_is_bounded_by_poll_timeout_and_others_keep_their_schedule(
    crds: KubeAPIServer,
    namespace: str,
    redis_server: Redis,
    stream: tuple[object, str],
    silent_server: SilentServer,
    operator: OperatorFactory,
) -> None:
    client, name = stream
    hung = 3
    for i in range(hung):
        apply(crds, namespace, deployment(f"hung{i}", replicas=1))
        apply(
            crds,
            namespace,
            scaled_object(
                f"hung{i}",
                f"hung{i}",
                [redis_trigger(silent_server.address, f"s{i}", pending=1)],
                minReplicaCount=1,
            ),
        )
    apply(crds, namespace, deployment("healthy", replicas=0))
    apply(
        crds,
        namespace,
        scaled_object(
            "healthy",
            "healthy",
            [redis_trigger(f"127.0.0.1:{redis_server.port}", name, pending=1)],
            maxReplicaCount=20,
            advanced=UNLIMITED,
        ),
    )
    op = operator("--poll-timeout=1")
    for i in range(hung):
        wait_condition(crds, namespace, f"hung{i}", "Ready", "False", reason="TriggerError")
    # While the hung objects time out poll after poll, the healthy one reacts within its
    # polling interval (1 s) every time.
    for total in (2, 5, 9):
        started = time.monotonic()
        make_pending(client, name, total - replicas(crds, namespace, "deployment", "healthy"))
        wait_replicas(crds, namespace, "deployment", "healthy", total, timeout=10)
        took = time.monotonic() - started
        assert took < 3.0, f"the healthy object took {took:.1f}s to follow its source"
        time.sleep(1)
    connections = silent_server.snapshot()
    closed = [c for c in connections if c["closed"] is not None]
    assert len(closed) >= 2 * hung, connections
    held = [float(c["closed"] or 0) - float(c["accepted"] or 0) for c in closed]
    assert max(held) < 2.0, f"a poll held the hung source {max(held):.1f}s (timeout 1 s)"
    text = op.metrics()
    errors = metric_samples(text, "autoscale_scaler_errors_total", scaledObject="hung0")
    assert errors, text
    assert errors[0] >= 3, errors
    for i in range(hung):
        assert replicas(crds, namespace, "deployment", f"hung{i}") == 1
        message = [e["message"] for e in events(crds, namespace, f"hung{i}")]
        assert any("timed out" in m for m in message), message
    assert_healthy(op)
