"""End-to-end fixtures: our CRDs on the bench's kube-apiserver, and the operator as a process.

`operator` starts `python -m autoscale run` as a separate process (as a user would run it),
watching only the test's namespace, and stops it after the test; its log is attached to a
failing test's report.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from autoscale import crd_manifests
from tests.e2e.harness import Operator
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


@pytest.fixture
def operator(
    crds: KubeAPIServer, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Operator]]:
    """A factory: `operator()` starts one operator process for the test's namespace."""
    started: list[Operator] = []

    def start(
        *extra_args: str,
        kubeconfig: Path | None = None,
        ready: bool = True,
        env: dict[str, str] | None = None,
    ) -> Operator:
        op = Operator(
            kubeconfig=kubeconfig or crds.kubeconfig,
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
