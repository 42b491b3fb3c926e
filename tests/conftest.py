"""Session fixtures for the bench's real services, and per-test isolation by unique names.

Each service starts once per test session, on first use, through the same code as
`python -m tests.testbed up`. Tests isolate themselves with `unique_name` (topics, queues,
streams) and `namespace` (a fresh Kubernetes namespace).

If the bench is not installed, a test that needs it is skipped loudly on a developer's machine
and FAILS under CI (`CI=true`): CI must never pass by skipping the real components.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.testbed import NotInstalledError, start_service
from tests.testbed.kube import KubeAPIServer
from tests.testbed.services import SQS, Kafka, Prometheus, RabbitMQ, Redis

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def testbed_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("testbed")


def _service(name: str, workdir: Path) -> Iterator[Any]:
    try:
        service = start_service(name, workdir)
    except NotInstalledError as exc:
        if IN_CI:
            pytest.fail(f"CI=true and the test bench is not installed: {exc}")
        pytest.skip(f"TEST BENCH NOT INSTALLED ({exc}); run `make test` or install it")
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def kube(testbed_workdir: Path) -> Iterator[KubeAPIServer]:
    yield from _service("kube", testbed_workdir)


@pytest.fixture(scope="session")
def kafka(testbed_workdir: Path) -> Iterator[Kafka]:
    yield from _service("kafka", testbed_workdir)


@pytest.fixture(scope="session")
def rabbitmq(testbed_workdir: Path) -> Iterator[RabbitMQ]:
    yield from _service("rabbitmq", testbed_workdir)


@pytest.fixture(scope="session")
def redis_server(testbed_workdir: Path) -> Iterator[Redis]:
    yield from _service("redis", testbed_workdir)


@pytest.fixture(scope="session")
def sqs(testbed_workdir: Path) -> Iterator[SQS]:
    yield from _service("sqs", testbed_workdir)


@pytest.fixture(scope="session")
def prometheus(testbed_workdir: Path) -> Iterator[Prometheus]:
    yield from _service("prometheus", testbed_workdir)


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A DNS-1123 label unique to this test: `t-<test name>-<random>`, at most 63 chars."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    return f"t-{stem}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def namespace(kube: KubeAPIServer, unique_name: str) -> Iterator[str]:
    """A fresh namespace, deleted after the test (no namespace controller runs, so it stays
    Terminating in etcd; that is harmless, its name is never reused)."""
    kube.kubectl("create", "namespace", unique_name)
    yield unique_name
    kube.kubectl("delete", "namespace", unique_name, "--wait=false", check=False)


@pytest.fixture
async def kube_api(kube: KubeAPIServer) -> AsyncIterator[Any]:
    """A kubernetes_asyncio ApiClient authenticated as the bench's admin."""
    from kubernetes_asyncio import config

    client = await config.new_client_from_config(config_file=str(kube.kubeconfig))
    async with client as api:
        yield api


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Work units for pytest-xdist, which `make test` runs with two workers and
    `--dist loadgroup`: every test outside tests/unit keeps its file's tests on one worker (one
    set of module fixtures, and a file's tests in order), and all of tests/e2e shares one
    worker, so that test_zz_secret_scan, last in it, sees every e2e operator's output. Each
    worker starts its own bench services on first use. Without xdist the mark does nothing."""
    for item in items:
        parts = Path(str(item.path)).relative_to(Path(__file__).parent).parts
        if parts[0] == "unit":
            continue
        group = "e2e" if parts[0] == "e2e" else "/".join(parts)
        item.add_marker(pytest.mark.xdist_group(group))
