"""Two `autoscale run --leader-elect` processes: only the leader scales; killing it with SIGKILL
hands over within the lease duration; the apiserver's audit log shows the target was never
patched by both."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from tests.e2e.harness import Operator, make_pending, wait_for
from tests.e2e.workloads import apply, deployment, redis_trigger, replicas, scaled_object
from tests.testbed.kube import KubeAPIServer
from tests.testbed.services import Redis

pytestmark = [pytest.mark.testbed, pytest.mark.e2e]

LEASE = ("--leader-elect", "--lease-duration=4", "--renew-deadline=3", "--retry-period=0.5")


def lease_holder(kube: KubeAPIServer, namespace: str) -> str | None:
    done = kube.kubectl(
        "get", "lease", "autoscale-operator", "-n", namespace, "-o", "json", check=False
    )
    if done.returncode != 0:
        return None
    holder: str | None = json.loads(done.stdout)["spec"].get("holderIdentity")
    return holder


def scale_patches(kube: KubeAPIServer, namespace: str) -> list[tuple[datetime, str]]:
    """(time, user) of every write to a /scale subresource in `namespace`, from the audit log."""
    patches = []
    for line in kube.audit_log.read_text().splitlines():
        entry: dict[str, Any] = json.loads(line)
        ref = entry.get("objectRef", {})
        if (
            ref.get("namespace") == namespace
            and ref.get("subresource") == "scale"
            and entry.get("verb") in ("patch", "update")
            and entry.get("stage") == "ResponseComplete"
            and entry.get("responseStatus", {}).get("code") == 200
        ):
            moment = datetime.fromisoformat(entry["requestReceivedTimestamp"])
            patches.append((moment, entry["user"]["username"]))
    return sorted(patches)


def test_sigkill_of_the_leader_hands_over_without_double_patching(
    crds: KubeAPIServer,
    namespace: str,
    redis_server: Redis,
    stream: tuple[Any, str],
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
            [redis_trigger(f"127.0.0.1:{redis_server.port}", name, pending=1)],
            maxReplicaCount=20,
        ),
    )
    # Distinct users, so the audit log can tell the two processes apart.
    first_config = crds.kubeconfig_for_user("operator-a", groups=("system:masters",))
    second_config = crds.kubeconfig_for_user("operator-b", groups=("system:masters",))
    first = operator(*LEASE, kubeconfig=first_config)
    holder = wait_for(lambda: lease_holder(crds, namespace), timeout=20, what="a lease holder")
    assert holder.endswith(f"_{first.process.pid}")
    second = operator(*LEASE, kubeconfig=second_config)

    make_pending(client, name, 3)
    wait_for(
        lambda: replicas(crds, namespace, "deployment", "worker") == 3,
        timeout=15,
        what="the leader to scale to 3",
    )
    time.sleep(1)
    assert lease_holder(crds, namespace) == holder  # the standby did not take over

    first.kill()  # SIGKILL: no chance to release the lease
    killed_at = time.monotonic()
    new_holder = wait_for(
        lambda: (h := lease_holder(crds, namespace)) and h != holder and h,
        timeout=15,
        what="the standby to take the lease",
    )
    handover = time.monotonic() - killed_at
    assert new_holder.endswith(f"_{second.process.pid}")
    assert handover <= 4 + 2, f"hand-over took {handover:.1f}s with a 4 s lease"

    make_pending(client, name, 2)  # 5 pending now
    wait_for(
        lambda: replicas(crds, namespace, "deployment", "worker") == 5,
        timeout=15,
        what="the new leader to scale to 5",
    )

    patches = scale_patches(crds, namespace)
    by_a = [moment for moment, user in patches if user == "operator-a"]
    by_b = [moment for moment, user in patches if user == "operator-b"]
    assert by_a, patches
    assert by_b, patches
    assert max(by_a) < min(by_b), f"both processes patched /scale: {patches}"
