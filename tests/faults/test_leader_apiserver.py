"""kube-apiserver restarted under two `autoscale run --leader-elect` processes (a private
apiserver with its own etcd, so other tests are not disturbed).

The outage is longer than the lease: the leader cannot renew, so it must stop scaling, and when
the API is back exactly one of the two leads. What must hold: the Lease has one holder
afterwards (the same or the other process), the watches resume (an object created and one
edited after the restart are applied), scaling goes on, and the audit log shows every `/scale`
write made by the process that held the Lease at that moment: never by both, never by a
standby.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import pytest

from tests.e2e.harness import make_pending, wait_for
from tests.e2e.workloads import apply, deployment, redis_trigger, replicas, scaled_object
from tests.faults.conftest import (
    OperatorFactory,
    api_ready,
    assert_healthy,
    wait_condition,
    wait_replicas,
)
from tests.testbed.kube import KubeAPIServer
from tests.testbed.services import Redis

pytestmark = [pytest.mark.testbed, pytest.mark.e2e]

LEASE_SECONDS = 4
LEASE = (
    "--leader-elect",
    f"--lease-duration={LEASE_SECONDS}",
    "--renew-deadline=3",
    "--retry-period=0.5",
)
LEASE_NAME = "autoscale-operator"
UNLIMITED = {  # no window, no rate limit: the count follows the source at once
    "horizontalPodAutoscalerConfig": {
        "behavior": {
            "scaleDown": {"stabilizationWindowSeconds": 0},
            "scaleUp": {"policies": [{"type": "Pods", "value": 100, "periodSeconds": 1}]},
        }
    }
}


def lease_spec(kube: KubeAPIServer, namespace: str) -> dict[str, Any] | None:
    done = kube.kubectl("get", "lease", LEASE_NAME, "-n", namespace, "-o", "json", check=False)
    if done.returncode != 0:
        return None
    spec: dict[str, Any] = json.loads(done.stdout)["spec"]
    return spec


def audit_writes(kube: KubeAPIServer, namespace: str) -> list[tuple[datetime, str, str]]:
    """(time received, user, what) of every successful write of our Lease ("lease") or of a
    /scale subresource ("scale NAME") in `namespace`, in order."""
    found = []
    for line in kube.audit_log.read_text().splitlines():
        entry: dict[str, Any] = json.loads(line)
        ref = entry.get("objectRef", {})
        if (
            ref.get("namespace") != namespace
            or entry.get("stage") != "ResponseComplete"
            or entry.get("verb") not in ("create", "update", "patch")
            or entry.get("responseStatus", {}).get("code") not in (200, 201)
        ):
            continue
        if ref.get("resource") == "leases" and ref.get("name") == LEASE_NAME:
            what = "lease"
        elif ref.get("subresource") == "scale":
            what = f"scale {ref.get('name')}"
        else:
            continue
        moment = datetime.fromisoformat(entry["requestReceivedTimestamp"])
        found.append((moment, entry["user"]["username"], what))
    return sorted(found)


def test_apiserver_restart_under_leader_election(
    private_kube: KubeAPIServer,
    namespace: str,
    redis_server: Redis,
    stream: tuple[Any, str],
    operator: OperatorFactory,
) -> None:
    kube = private_kube
    client, name = stream
    address = f"127.0.0.1:{redis_server.port}"

    def so(target: str, maximum: int = 10) -> dict[str, Any]:
        return scaled_object(
            target,
            target,
            [redis_trigger(address, name, pending=1)],
            maxReplicaCount=maximum,
            advanced=UNLIMITED,
        )

    for target in ("a", "b"):
        apply(kube, namespace, deployment(target, replicas=0))
    apply(kube, namespace, so("a"))
    # Distinct users, so the audit log tells the two processes apart.
    users = {}
    first = operator(
        *LEASE,
        kubeconfig=kube.kubeconfig_for_user("operator-a", groups=("system:masters",)),
    )
    users[first.process.pid] = "operator-a"
    wait_for(
        lambda: (s := lease_spec(kube, namespace)) and s.get("holderIdentity"),
        timeout=20,
        what="a lease holder",
    )
    before = lease_spec(kube, namespace)
    assert before is not None
    assert str(before["holderIdentity"]).endswith(f"_{first.process.pid}"), before
    second = operator(
        *LEASE,
        kubeconfig=kube.kubeconfig_for_user("operator-b", groups=("system:masters",)),
    )
    users[second.process.pid] = "operator-b"
    make_pending(client, name, 2)
    wait_replicas(kube, namespace, "deployment", "a", 2)

    kube.stop_apiserver()
    stopped = time.monotonic()
    make_pending(client, name, 1)  # work arrives while the API is away: nothing can scale
    # Down for this long plus the apiserver's start (several seconds more): longer than the
    # lease, so the leader must stop leading and a standby could take over.
    time.sleep(LEASE_SECONDS)
    kube.start_apiserver()
    assert api_ready(kube)
    assert time.monotonic() - stopped > LEASE_SECONDS  # the premise: an outage beyond the lease
    wait_replicas(kube, namespace, "deployment", "a", 3, timeout=40)

    after = wait_for(
        lambda: (s := lease_spec(kube, namespace)) and s.get("holderIdentity") and s,
        timeout=20,
        what="a lease holder after the restart",
    )
    holder_pid = int(str(after["holderIdentity"]).rsplit("_", 1)[1])
    # The outage outlived the lease: the first leader had to stop leading while it could not
    # renew, whoever leads now.
    stood_down = [e for e in first.logs() if "lost leadership" in str(e.get("msg"))]
    assert stood_down, "the leader kept leading through an outage longer than its lease"
    assert holder_pid in users, after
    transitions = int(after.get("leaseTransitions") or 0) - int(before.get("leaseTransitions") or 0)
    # The lease stayed with the leader, or moved once; never bounced back and forth.
    assert transitions in (0, 1), (before, after)

    # Watches resumed (in whichever process leads now): an object created after the restart
    # scales, and an edit of an existing one is applied; then more work is followed.
    apply(kube, namespace, so("b"))
    wait_replicas(kube, namespace, "deployment", "b", 3, timeout=40)
    make_pending(client, name, 2)
    wait_replicas(kube, namespace, "deployment", "a", 5, timeout=20)
    wait_replicas(kube, namespace, "deployment", "b", 5, timeout=20)
    apply(kube, namespace, so("a", maximum=4))
    wait_replicas(kube, namespace, "deployment", "a", 4, timeout=20)
    wait_condition(kube, namespace, "b", "Ready", "True", reason="ScaledObjectReady")
    final = lease_spec(kube, namespace)
    assert final is not None
    assert final["holderIdentity"] == after["holderIdentity"], final

    # The audit log: every /scale write was made by the process holding the Lease (the one
    # whose write of the Lease came last before it).
    writes = audit_writes(kube, namespace)
    holder: str | None = None
    scale_users = []
    for moment, user, what in writes:
        if what == "lease":
            holder = user
            continue
        scale_users.append(user)
        assert user == holder, f"{what} at {moment} by {user} while {holder} held the Lease"
    assert len(scale_users) >= 4, writes  # 0->2->3 for a, 0->3 for b, then 5, 5, 4
    assert users[holder_pid] in scale_users, writes
    print("\nscale writes by:", scale_users, f"\nlease transitions: {transitions}")
    # Nobody patched twice for one change of count: one write per change.
    for target, changes in (("a", 4), ("b", 2)):
        count = sum(1 for _, _, what in writes if what == f"scale {target}")
        assert count == changes, (target, writes)
    assert replicas(kube, namespace, "deployment", "a") == 4
    for op in (first, second):
        assert_healthy(op)
