"""The Kubernetes API failing under a running operator: the apiserver restarted (a private
one, with its own etcd, so other tests are not disturbed), a watch ended with 410 Gone after
events were missed, and 409 / 429 / 5xx answers and a request that hangs, injected by the
fault proxy (tests/faults/apiproxy.py) in front of the real apiserver."""

from __future__ import annotations

import itertools
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
    replicas,
    scaled_object,
)
from tests.faults.apiproxy import ApiProxy
from tests.faults.conftest import (
    OperatorFactory,
    RestartableRedis,
    api_ready,
    assert_healthy,
    hold_replicas,
    make_group,
    scale_writes,
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


def _reasons(kube: KubeAPIServer, namespace: str, name: str) -> list[str]:
    return [e["reason"] for e in events(kube, namespace, name)]


def _redis_worker(
    kube: KubeAPIServer,
    namespace: str,
    redis: Redis | RestartableRedis,
    stream: str,
    name: str,
    **spec: Any,
) -> None:
    """A Deployment `name` at 0 and a ScaledObject `name` on it: one pending entry of `stream`
    per replica, at most 10."""
    apply(kube, namespace, deployment(name, replicas=0))
    trigger = redis_trigger(f"127.0.0.1:{redis.port}", stream, pending=1)
    apply(kube, namespace, scaled_object(name, name, [trigger], maxReplicaCount=10, **spec))


def test_apiserver_restart_resumes_watches_without_missing_or_repeating(
    private_kube: KubeAPIServer,
    namespace: str,
    redis_server: Redis,
    stream: tuple[object, str],
    operator: OperatorFactory,
) -> None:
    kube = private_kube
    client, name = stream
    address = f"127.0.0.1:{redis_server.port}"
    for target in ("a", "b"):
        apply(kube, namespace, deployment(target, replicas=0))
    apply(
        kube,
        namespace,
        scaled_object(
            "a",
            "a",
            [redis_trigger(address, name, pending=1)],
            maxReplicaCount=10,
            advanced=UNLIMITED,
        ),
    )
    op = operator(kubeconfig=kube.kubeconfig)
    make_pending(client, name, 2)
    wait_replicas(kube, namespace, "deployment", "a", 2)

    kube.stop_apiserver()
    make_pending(client, name, 1)  # work arrives while the API is away: nothing can scale
    time.sleep(6)  # several polls and watch retries fail
    kube.start_apiserver()
    assert api_ready(kube)
    wait_replicas(kube, namespace, "deployment", "a", 3, timeout=40)

    # Created after the apiserver came back: the operator's watch (resumed, or listed again
    # after 410 Gone) delivers it.
    apply(
        kube,
        namespace,
        scaled_object(
            "b",
            "b",
            [redis_trigger(address, name, pending=1)],
            maxReplicaCount=10,
            advanced=UNLIMITED,
        ),
    )
    wait_replicas(kube, namespace, "deployment", "b", 3, timeout=40)
    wait_condition(kube, namespace, "a", "Ready", "True", reason="ScaledObjectReady")
    # Nothing was applied twice: one loop per object (one ScalersStarted), one activation, and
    # one /scale write per change of the count (0 -> 2 -> 3 for a, 0 -> 3 for b).
    assert _reasons(kube, namespace, "a").count("ScalersStarted") == 1
    assert _reasons(kube, namespace, "a").count("ScaleTargetActivated") == 1
    assert _reasons(kube, namespace, "b").count("ScalersStarted") == 1
    assert len(scale_writes(kube, namespace, "a")) == 2, scale_writes(kube, namespace, "a")
    assert len(scale_writes(kube, namespace, "b")) == 1, scale_writes(kube, namespace, "b")
    # A change of spec after the restart reaches the running operator too.
    kube.kubectl(
        "patch",
        "so",
        "a",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"maxReplicaCount": 1}}),
    )
    wait_replicas(kube, namespace, "deployment", "a", 1, timeout=20)
    # The restarted apiserver's watch cache starts after the operator's resourceVersion: its
    # watch really got 410 Gone and listed again.
    assert any("410 Gone" in str(e.get("msg")) for e in op.logs())
    assert_healthy(op)


def _so_watch(namespace: str) -> str:
    return rf"^/apis/autoscale\.dev/v1alpha1/namespaces/{namespace}/scaledobjects$"


def _scale(namespace: str, name: str) -> str:
    return rf"^/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale$"


def test_watch_410_after_missed_events_lists_again_and_applies_them(
    crds: KubeAPIServer,
    namespace: str,
    redis_server: Redis,
    stream: tuple[object, str],
    api_proxy: ApiProxy,
    operator: OperatorFactory,
) -> None:
    client, name = stream
    address = f"127.0.0.1:{redis_server.port}"
    for target in ("a", "b", "c"):
        apply(crds, namespace, deployment(target, replicas=0))
    for so in ("a", "c"):
        apply(
            crds,
            namespace,
            scaled_object(
                so,
                so,
                [redis_trigger(address, name, pending=1)],
                maxReplicaCount=10,
                advanced=UNLIMITED,
            ),
        )
    op = operator(kubeconfig=api_proxy.kubeconfig)
    make_pending(client, name, 3)
    wait_replicas(crds, namespace, "deployment", "a", 3)
    wait_replicas(crds, namespace, "deployment", "c", 3)
    watch = _so_watch(namespace)
    wait_for(lambda: api_proxy.open_watches(watch) == 1, timeout=10, what="the operator's watch")

    # The operator misses every event from now on: a change, a creation and a deletion.
    api_proxy.hold_watch_events(watch)
    crds.kubectl(
        "patch",
        "so",
        "a",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"maxReplicaCount": 2}}),
    )
    apply(
        crds,
        namespace,
        scaled_object(
            "b",
            "b",
            [redis_trigger(address, name, pending=1)],
            maxReplicaCount=10,
            advanced=UNLIMITED,
        ),
    )
    crds.kubectl("delete", "so", "c", "-n", namespace, "--wait=false")
    hold_replicas(crds, namespace, "deployment", "a", 3, seconds=3)  # unseen: still max 10
    assert "status" not in get(crds, namespace, "so", "b")
    assert get(crds, namespace, "so", "c")["metadata"].get("deletionTimestamp")

    # The watch ends with 410 Gone, as when its resourceVersion was compacted away.
    assert api_proxy.expire_watches(watch) == 1
    wait_replicas(crds, namespace, "deployment", "a", 2)
    wait_replicas(crds, namespace, "deployment", "b", 3)
    wait_for(
        lambda: crds.kubectl("get", "so", "c", "-n", namespace, check=False).returncode != 0,
        timeout=20,
        what="ScaledObject c finalized and gone",
    )
    assert any("410 Gone" in str(e.get("msg")) for e in op.logs())
    # c's loop stopped with it: more work moves b, not c.
    make_pending(client, name, 2)
    wait_replicas(crds, namespace, "deployment", "b", 5)
    hold_replicas(crds, namespace, "deployment", "c", 3, seconds=2)
    assert _reasons(crds, namespace, "a").count("ScalersStarted") == 2  # old spec, new spec
    assert_healthy(op)


def _gaps(times: list[float]) -> list[float]:
    return [round(b - a, 2) for a, b in itertools.pairwise(times)]


def test_throttled_scale_is_retried_no_sooner_than_retry_after(
    crds: KubeAPIServer,
    namespace: str,
    redis_server: Redis,
    stream: tuple[object, str],
    api_proxy: ApiProxy,
    operator: OperatorFactory,
) -> None:
    client, name = stream
    _redis_worker(crds, namespace, redis_server, name, "w")
    scale = _scale(namespace, "w")
    rule = api_proxy.fail("PATCH", scale, 429, times=3, retry_after=3)
    op = operator(kubeconfig=api_proxy.kubeconfig)
    make_pending(client, name, 2)
    wait_replicas(crds, namespace, "deployment", "w", 2, timeout=40)
    patches = api_proxy.requests("PATCH", scale)
    assert api_proxy.hits(rule) == 3
    assert [p.status for p in patches] == [429, 429, 429, 200], patches
    gaps = _gaps([p.at for p in patches])
    assert min(gaps) >= 2.9, f"retried before Retry-After (3 s): gaps {gaps}"
    warnings = [e for e in events(crds, namespace, "w") if e["reason"] == "ScaleFailed"]
    assert len(warnings) == 1, "one ScaleFailed event per streak, not one per attempt"
    assert_healthy(op)


def test_server_errors_back_off_exponentially_and_the_scale_succeeds(
    crds: KubeAPIServer,
    namespace: str,
    redis_server: Redis,
    stream: tuple[object, str],
    api_proxy: ApiProxy,
    operator: OperatorFactory,
) -> None:
    client, name = stream
    _redis_worker(crds, namespace, redis_server, name, "w")
    scale = _scale(namespace, "w")
    rule = api_proxy.fail("PATCH", scale, 500, times=4)  # no Retry-After
    op = operator(kubeconfig=api_proxy.kubeconfig)
    make_pending(client, name, 2)
    wait_replicas(crds, namespace, "deployment", "w", 2, timeout=60)
    patches = api_proxy.requests("PATCH", scale)
    assert api_proxy.hits(rule) == 4
    assert [p.status for p in patches] == [500] * 4 + [200], patches
    gaps = _gaps([p.at for p in patches])
    # pollingInterval is 1 s: without backoff every gap would be ~1 s. With it: 1, 2, 4, 8 s
    # (+-10 % jitter).
    assert all(later >= earlier * 1.5 for earlier, later in itertools.pairwise(gaps)), gaps
    assert gaps[-1] >= 6, gaps
    assert_healthy(op)


def test_persistent_status_errors_are_not_a_hot_loop(
    crds: KubeAPIServer,
    namespace: str,
    redis_server: Redis,
    stream: tuple[object, str],
    api_proxy: ApiProxy,
    operator: OperatorFactory,
) -> None:
    """Every write of status answers 503 for 12 s, and the controller's list of ScaledObjects
    answers 500 four times: requests are spaced out, the object still scales."""
    client, name = stream
    _redis_worker(crds, namespace, redis_server, name, "w")
    status = rf"^/apis/autoscale\.dev/v1alpha1/namespaces/{namespace}/scaledobjects/w/status$"
    collection = _so_watch(namespace)
    status_rule = api_proxy.fail("PATCH", status, 503, times=None)
    list_rule = api_proxy.fail("GET", collection, 500, times=4)
    op = operator(kubeconfig=api_proxy.kubeconfig)
    make_pending(client, name, 2)
    wait_replicas(crds, namespace, "deployment", "w", 2, timeout=60)
    time.sleep(12)
    api_proxy.clear()
    status_patches = api_proxy.requests("PATCH", status)
    assert api_proxy.hits(status_rule) == len(status_patches)
    span = status_patches[-1].at - status_patches[0].at
    gaps = _gaps([p.at for p in status_patches])
    assert len(status_patches) <= 2 + span / 2, f"{len(status_patches)} in {span:.0f}s: {gaps}"
    lists = api_proxy.requests("GET", collection)
    assert api_proxy.hits(list_rule) == 4
    list_gaps = _gaps([r.at for r in lists[:5]])
    assert sum(list_gaps) >= 0.8 * (1 + 2 + 4 + 8), list_gaps  # 1, 2, 4, 8 s, +-20 % jitter
    wait_condition(crds, namespace, "w", "Ready", "True", timeout=40)
    assert_healthy(op)


def test_conflicts_are_retried(
    crds: KubeAPIServer,
    namespace: str,
    redis_server: Redis,
    stream: tuple[object, str],
    api_proxy: ApiProxy,
    operator: OperatorFactory,
) -> None:
    """409 on the /scale patch and on the finalizer update: both are tried again and happen."""
    client, name = stream
    _redis_worker(crds, namespace, redis_server, name, "w")
    scale = _scale(namespace, "w")
    so_path = rf"^/apis/autoscale\.dev/v1alpha1/namespaces/{namespace}/scaledobjects/w$"
    scale_rule = api_proxy.fail("PATCH", scale, 409, times=2)
    finalizer_rule = api_proxy.fail("PATCH", so_path, 409, times=1)
    op = operator(kubeconfig=api_proxy.kubeconfig)
    make_pending(client, name, 2)
    wait_replicas(crds, namespace, "deployment", "w", 2, timeout=30)
    assert api_proxy.hits(scale_rule) == 2
    assert api_proxy.hits(finalizer_rule) == 1
    wait_for(
        lambda: (
            "autoscale.dev/finalizer"
            in get(crds, namespace, "so", "w")["metadata"].get("finalizers", [])
        ),
        timeout=20,
        what="the finalizer, after a conflict",
    )
    attempts = api_proxy.requests("PATCH", scale)
    assert [a.status for a in attempts] == [409, 409, 200], attempts
    assert replicas(crds, namespace, "deployment", "w") == 2
    assert_healthy(op)


def test_trigger_authentication_unreadable_for_a_moment_or_created_late(
    crds: KubeAPIServer,
    namespace: str,
    redis_server: Redis,
    stream: tuple[object, str],
    api_proxy: ApiProxy,
    operator: OperatorFactory,
) -> None:
    """The Redis address comes from a Secret through a TriggerAuthentication. Reading the
    TriggerAuthentications fails (500) three times; another ScaledObject names one that is
    created only later. Neither failure is a verdict on the spec: both objects scale."""
    client, name = stream
    crds.kubectl(
        "create",
        "secret",
        "generic",
        "redis-address",
        f"--from-literal=address=127.0.0.1:{redis_server.port}",
        "-n",
        namespace,
    )

    def authentication(auth: str) -> dict[str, Any]:
        return {
            "apiVersion": "autoscale.dev/v1alpha1",
            "kind": "TriggerAuthentication",
            "metadata": {"name": auth},
            "spec": {
                "secretTargetRef": [
                    {"parameter": "address", "name": "redis-address", "key": "address"}
                ]
            },
        }

    def trigger(auth: str) -> dict[str, Any]:
        return {
            "type": "redis-streams",
            "authenticationRef": {"name": auth},
            "metadata": {"stream": name, "consumerGroup": "workers", "pendingEntriesCount": "1"},
        }

    apply(crds, namespace, authentication("redis-auth"))
    for so, auth in (("flaky", "redis-auth"), ("late", "late-auth")):
        apply(crds, namespace, deployment(so, replicas=0))
        apply(crds, namespace, scaled_object(so, so, [trigger(auth)], maxReplicaCount=10))
    collection = rf"^/apis/autoscale\.dev/v1alpha1/namespaces/{namespace}/triggerauthentications$"
    rule = api_proxy.fail("GET", collection, 500, times=3)
    op = operator(kubeconfig=api_proxy.kubeconfig)
    make_pending(client, name, 2)
    wait_replicas(crds, namespace, "deployment", "flaky", 2, timeout=40)
    assert api_proxy.hits(rule) == 3
    so = wait_condition(crds, namespace, "late", "Ready", "False", reason="ScaledObjectCheckFailed")
    message = condition(so, "Ready")["message"]
    assert "late-auth" in message, message
    apply(crds, namespace, authentication("late-auth"))
    wait_replicas(crds, namespace, "deployment", "late", 2, timeout=90)
    wait_condition(crds, namespace, "late", "Ready", "True", reason="ScaledObjectReady")
    assert_healthy(op)


def test_a_hung_api_request_holds_only_its_own_object(
    crds: KubeAPIServer,
    namespace: str,
    redis_server: Redis,
    stream: tuple[object, str],
    api_proxy: ApiProxy,
    operator: OperatorFactory,
) -> None:
    """The proxy holds one object's patch of /scale for 6 s without a byte of answer (less than
    the client's request timeout; replica counts are read from a watch, so the patch is the
    request each poll may make): that object waits, the other scales on its schedule; then the
    answer comes and it has scaled."""
    client, name = stream
    for so in ("stuck", "free"):
        _redis_worker(crds, namespace, redis_server, name, so, advanced=UNLIMITED)
    op = operator(kubeconfig=api_proxy.kubeconfig)
    for so in ("stuck", "free"):
        wait_condition(crds, namespace, so, "Ready", "True")
    rule = api_proxy.hang("PATCH", _scale(namespace, "stuck"), seconds=6)
    make_pending(client, name, 2)
    wait_for(lambda: api_proxy.hits(rule) == 1, timeout=10, what="the stuck object's patch held")
    held = time.monotonic()
    wait_replicas(crds, namespace, "deployment", "free", 2, timeout=3)
    assert replicas(crds, namespace, "deployment", "stuck") == 0
    assert time.monotonic() - held < 5, "the held request was let go too early for this check"
    wait_replicas(crds, namespace, "deployment", "stuck", 2, timeout=15)
    assert time.monotonic() - held >= 5
    assert_healthy(op)


def test_activity_and_outages_cost_a_few_status_writes_not_one_per_poll(
    crds: KubeAPIServer,
    namespace: str,
    own_redis: RestartableRedis,
    unique_name: str,
    api_proxy: ApiProxy,
    operator: OperatorFactory,
) -> None:
    """pollingInterval 1 s, fallback after 2 failures. While the object is steadily active its
    status is not rewritten (lastActiveTime moves on at each poll; KEDA writes it each poll).
    Through a 15 s Redis outage the status is written as the trigger starts failing, as its
    count reaches the threshold and as fallback applies, then not again for a minute: a
    failure count past the one that decides anything is not worth an API write per poll (KEDA
    writes status.health on every poll). When Redis returns, the recovery is written at once."""
    client = own_redis.client()
    make_group(client, unique_name)
    fallback = {"failureThreshold": 2, "replicas": 4}
    _redis_worker(
        crds, namespace, own_redis, unique_name, "w", fallback=fallback, advanced=UNLIMITED
    )
    status = rf"^/apis/autoscale\.dev/v1alpha1/namespaces/{namespace}/scaledobjects/w/status$"
    op = operator(kubeconfig=api_proxy.kubeconfig)
    make_pending(client, unique_name, 2)
    wait_replicas(crds, namespace, "deployment", "w", 2)
    wait_condition(crds, namespace, "w", "Ready", "True")
    # Active and steady: lastActiveTime moves on at every poll, and is not written for that.
    steady = time.monotonic()
    time.sleep(8)
    writes = [r for r in api_proxy.requests("PATCH", status) if r.at >= steady]
    assert len(writes) <= 1, f"{len(writes)} status writes in 8 s of steady activity: {writes}"

    own_redis.stop()
    down = time.monotonic()
    wait_replicas(crds, namespace, "deployment", "w", 4, timeout=15)
    time.sleep(max(0.0, down + 15 - time.monotonic()))
    writes = [r for r in api_proxy.requests("PATCH", status) if r.at >= down]
    so = get(crds, namespace, "so", "w")
    (health,) = so["status"]["health"].values()
    assert health["numberOfFailures"] > 2, so["status"]
    # About 15 failed polls: the first failure, the second, fallback (the third); a 4th write
    # may come from a poll that straddled the stop.
    assert len(writes) <= 4, f"{len(writes)} status writes in 15 s of outage: {writes}"

    own_redis.start()
    client = own_redis.client()
    make_group(client, unique_name)
    make_pending(client, unique_name, 1)
    wait_replicas(crds, namespace, "deployment", "w", 1, timeout=30)
    so = wait_condition(crds, namespace, "w", "Fallback", "False")
    (health,) = so["status"]["health"].values()
    assert health == {"numberOfFailures": 0, "status": "Happy"}, so["status"]
    assert_healthy(op)
