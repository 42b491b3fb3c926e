"""End-to-end fixtures: our CRDs on the bench's kube-apiserver, and the operator as a process.

`operator` starts `python -m autoscale run` as a separate process (as a user would run it),
watching only the test's namespace, and stops it after the test; its log is attached to a
failing test's report. It runs with the credentials of the ServiceAccount that deploy/base
creates, bound by deploy/base's own RBAC (applied once per session), not as admin: a test that
needs a permission the manifests lack fails here first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from autoscale import crd_manifests
from tests.e2e.harness import REPO, SECRETS, Operator
from tests.testbed.kube import KubeAPIServer
from tests.testbed.services import Redis


@pytest.fixture(scope="session")
def crds(kube: KubeAPIServer) -> KubeAPIServer:
    """The CRDs applied (server-side) and Established; discovery serves them."""
    kube.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=autoscale-tests",
        "-f",
        "-",
        input=crd_manifests.render_crds(),
    )
    for crd in crd_manifests.load_crds():
        name = crd["metadata"]["name"]
        kube.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    deadline = time.monotonic() + 30
    while kube.kubectl("get", "scaledobjects.autoscale.dev", "-A", check=False).returncode:
        assert time.monotonic() < deadline, "autoscale.dev resources never appeared in discovery"
        time.sleep(0.5)
    return kube


OPERATOR_NAMESPACE = "autoscale-system"
OPERATOR_SERVICE_ACCOUNT = "autoscale-operator"
LEADER_ELECTION = "autoscale-operator-leader-election"
RBAC_KINDS = {
    "Namespace",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
}


@pytest.fixture(scope="session")
def operator_rbac(crds: KubeAPIServer) -> list[dict[str, Any]]:
    """deploy/base's Namespace, ServiceAccount, (Cluster)Roles and bindings, really applied."""
    rendered = crds.kubectl("kustomize", str(REPO / "deploy" / "base")).stdout
    objects = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] in RBAC_KINDS]
    crds.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=autoscale-tests",
        "-f",
        "-",
        input=yaml.safe_dump_all(objects),
    )
    return objects


@pytest.fixture(scope="session")
def operator_kubeconfig(crds: KubeAPIServer, operator_rbac: list[dict[str, Any]]) -> Path:
    """A token kubeconfig of deploy/base's ServiceAccount, once its RBAC is in force."""
    path = crds.kubeconfig_for_service_account(
        OPERATOR_NAMESPACE,
        OPERATOR_SERVICE_ACCOUNT,
        path=crds.workdir / "operator-serviceaccount.kubeconfig",
    )
    deadline = time.monotonic() + 30
    while crds.kubectl(
        "auth", "can-i", "list", "scaledobjects.autoscale.dev", "-A", kubeconfig=path, check=False
    ).returncode:
        assert time.monotonic() < deadline, "the operator's RBAC never took effect"
        time.sleep(0.2)
    return path


def bind_leader_election(
    kube: KubeAPIServer, operator_rbac: list[dict[str, Any]], namespace: str
) -> None:
    """deploy/base's leader-election Role and RoleBinding, copied into `namespace`: there the
    test's operator runs (POD_NAMESPACE), so there it keeps its Lease."""
    copies = []
    for obj in operator_rbac:
        if obj["kind"] in {"Role", "RoleBinding"} and obj["metadata"]["name"] == LEADER_ELECTION:
            copy = yaml.safe_load(yaml.safe_dump(obj))
            copy["metadata"]["namespace"] = namespace
            copies.append(copy)
    assert len(copies) == 2, "deploy/base has no leader-election Role and RoleBinding"
    kube.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(copies))


@pytest.fixture
def operator(
    crds: KubeAPIServer,
    namespace: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    operator_rbac: list[dict[str, Any]],
    operator_kubeconfig: Path,
) -> Iterator[Callable[..., Operator]]:
    """A factory: `operator()` starts one operator process for the test's namespace, with the
    ServiceAccount credentials of deploy/base unless `kubeconfig=` names others."""
    started: list[Operator] = []
    bind_leader_election(crds, operator_rbac, namespace)

    def start(
        *extra_args: str,
        kubeconfig: Path | None = None,
        ready: bool = True,
        env: dict[str, str] | None = None,
    ) -> Operator:
        op = Operator(
            kubeconfig=kubeconfig or operator_kubeconfig,
            namespace=namespace,
            log_path=tmp_path / f"operator-{len(started)}.log",
            extra_args=extra_args,
            env=env,
        )
        started.append(op)
        if ready:
            op.wait_ready()
        return op

    yield start
    for op in started:
        op.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for op in started:
            print(f"--- {op.log_path} ---\n{op.log_path.read_text(errors='replace')[-20000:]}")
    # Each operator's own output, whichever worker ran it (test_zz_secret_scan adds the
    # session's Events and statuses): no secret handed to any operator so far is in it.
    outputs = [op.log_path for op in started] + [
        op.log_path.with_suffix(".metrics") for op in started
    ]
    leaks = sorted(
        (path.name, value[:4] + "...")
        for path in outputs
        if path.exists()
        for value in SECRETS
        if value in path.read_text(errors="replace")
    )
    assert not leaks, f"secret values in the operator's log or metrics: {leaks}"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def stream(redis_server: Redis, unique_name: str) -> Iterator[tuple[redis.Redis, str]]:
    """A fresh Redis stream with an empty consumer group `workers`."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.xgroup_create(unique_name, "workers", id="$", mkstream=True)
    yield client, unique_name
    client.delete(unique_name)
    client.close()
