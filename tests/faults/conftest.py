"""Fault-test fixtures: private services a test may stop, kill, freeze or restart (a Redis, a
kube-apiserver with its etcd), a TCP server that never answers, the fault-injecting API proxy,
and the e2e fixtures (`crds`, `operator`, `stream`) reused as they are."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from autoscale import crd_manifests

# The e2e fixtures (`crds`, `operator`, `stream`, the operator's RBAC...) and report hook, as
# they are, whatever tests/e2e/conftest.py grows.
from tests.e2e.conftest import *  # noqa: F403
from tests.e2e.harness import Operator, wait_for
from tests.e2e.workloads import condition, get, replicas
from tests.faults.apiproxy import ApiProxy
from tests.testbed import start_service
from tests.testbed.kube import KubeAPIServer
from tests.testbed.procs import LOOPBACK, ManagedProcess, free_port, wait_until
from tests.testbed.services import Redis

# --- waits -------------------------------------------------------------------------------------


def wait_replicas(
    kube: KubeAPIServer, namespace: str, resource: str, name: str, count: int, timeout: float = 20
) -> None:
    wait_for(
        lambda: replicas(kube, namespace, resource, name) == count,
        timeout=timeout,
        what=f"{resource}/{name} at {count} replicas",
    )


def wait_condition(
    kube: KubeAPIServer,
    namespace: str,
    name: str,
    kind: str,
    status: str,
    timeout: float = 20,
    reason: str | None = None,
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        so = get(kube, namespace, "so", name)
        found = condition(so, kind)
        if found.get("status") != status:
            return None
        if reason is not None and found.get("reason") != reason:
            return None
        return so

    result: dict[str, Any] = wait_for(
        check, timeout=timeout, what=f"{kind}={status} ({reason or 'any reason'}) on SO {name}"
    )
    return result


def hold_replicas(
    kube: KubeAPIServer, namespace: str, resource: str, name: str, count: int, seconds: float
) -> None:
    """Assert the count stays `count` for `seconds` (checked every 0.3 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        now = replicas(kube, namespace, resource, name)
        assert now == count, f"{resource}/{name} moved to {now} while it had to hold {count}"
        time.sleep(0.3)


def crash_lines(op: Operator) -> list[str]:
    """Log lines that say a loop or the operator died."""
    return [
        str(entry.get("msg"))
        for entry in op.logs()
        if re.search(r"crashed|the operator stopped|Traceback", json.dumps(entry))
    ]


def assert_healthy(op: Operator) -> None:
    assert op.process.running(), f"the operator exited:\n{op.process.log_tail(60)}"
    assert not crash_lines(op), crash_lines(op)


def metric_samples(text: str, name: str, **labels: str) -> list[float]:
    """Values of `name` series whose labels include `labels`, from Prometheus text."""
    values = []
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            values.append(float(line.rsplit(" ", 1)[1]))
    return values


# --- a Redis that can go away and come back on the same port -----------------------------------


class RestartableRedis:
    """A private Redis: `stop()`, `start()` again on the same port (empty: no persistence),
    `freeze()`/`thaw()` with SIGSTOP/SIGCONT."""

    def __init__(self, server: Redis) -> None:
        self.server = server
        self.port = server.port
        self.url = server.url
        self.address = f"{LOOPBACK}:{server.port}"
        self._args = list(server.process.args)
        self._log = server.process.log_path

    @property
    def process(self) -> ManagedProcess:
        return self.server.process

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=5)

    def stop(self) -> None:
        self.server.process.stop()

    def start(self) -> None:
        """Re-run the same command line (same port); wait until it answers PING."""
        deadline = time.monotonic() + 30
        while True:  # the port can linger a moment after the old process died
            process = ManagedProcess("redis-server", self._args, log_path=self._log)
            try:
                wait_until(process, self._pong, timeout=10, what="answering PING")
                break
            except Exception:
                process.stop()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self.server.process = process
        self.server.processes = [process]

    def freeze(self) -> None:
        """SIGSTOP: the kernel still accepts connections, nobody answers them."""
        os.killpg(self.server.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.killpg(self.server.process.pid, signal.SIGCONT)

    def _pong(self) -> bool:
        with socket.create_connection((LOOPBACK, self.port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    def operator_clients(self) -> list[dict[str, Any]]:
        """CLIENT LIST entries of the operator's connections (client name `autoscale`)."""
        with self.client() as client:
            return [c for c in client.client_list() if c.get("name") == "autoscale"]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RestartableRedis]:
    """A Redis of this test's own, so it can be stopped without disturbing other tests."""
    server = start_service("redis", tmp_path)
    assert isinstance(server, Redis)
    restartable = RestartableRedis(server)
    yield restartable
    with contextlib.suppress(ProcessLookupError):
        restartable.thaw()
    restartable.server.stop()


def make_group(client: redis.Redis, stream: str, group: str = "workers") -> None:
    client.xgroup_create(stream, group, id="$", mkstream=True)


# --- a source that accepts connections and never answers ---------------------------------------


class SilentServer:
    """Accepts TCP connections, reads what comes, never writes a byte. Records when each
    connection was accepted and when the client closed it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.address = f"{LOOPBACK}:{self.port}"
        self.connections: list[dict[str, float | None]] = []
        self._lock = threading.Lock()
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((LOOPBACK, self.port))
        self._socket.listen(128)
        self._stopped = threading.Event()
        self._peers: list[socket.socket] = []
        threading.Thread(target=self._accept, name="silent-server", daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                peer, _ = self._socket.accept()
            except OSError:
                return
            record: dict[str, float | None] = {"accepted": time.monotonic(), "closed": None}
            with self._lock:
                self.connections.append(record)
                self._peers.append(peer)
            threading.Thread(target=self._drain, args=(peer, record), daemon=True).start()

    def _drain(self, peer: socket.socket, record: dict[str, float | None]) -> None:
        try:
            while peer.recv(4096):
                pass
        except OSError:
            pass
        with self._lock:
            record["closed"] = time.monotonic()

    def snapshot(self) -> list[dict[str, float | None]]:
        with self._lock:
            return [dict(c) for c in self.connections]

    def stop(self) -> None:
        self._stopped.set()
        self._socket.close()
        with self._lock:
            peers = list(self._peers)
        for peer in peers:
            with contextlib.suppress(OSError):
                peer.shutdown(socket.SHUT_RDWR)
            peer.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.stop()


# --- the API proxy, and a private apiserver --------------------------------------------------


@pytest.fixture
def api_proxy(crds: KubeAPIServer, tmp_path: Path) -> Iterator[ApiProxy]:
    """The fault-injecting proxy in front of the bench's apiserver; `api_proxy.kubeconfig` is
    what the operator should use."""
    proxy = ApiProxy.start(crds, tmp_path / "apiproxy")
    yield proxy
    proxy.stop()


def install_crds(kube: KubeAPIServer) -> None:
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
    wait_for(
        lambda: (
            kube.kubectl("get", "scaledobjects.autoscale.dev", "-A", check=False).returncode == 0
        ),
        timeout=30,
        what="autoscale.dev resources in discovery",
    )


@pytest.fixture
def private_kube(tmp_path: Path, namespace: str) -> Iterator[KubeAPIServer]:
    """An etcd and kube-apiserver of this test's own (it may restart them), with our CRDs and
    the test's namespace."""
    kube = start_service("kube", tmp_path / "private")
    assert isinstance(kube, KubeAPIServer)
    try:
        install_crds(kube)
        kube.kubectl("create", "namespace", namespace)
        yield kube
    finally:
        kube.stop()


def api_ready(kube: KubeAPIServer) -> bool:
    return kube.kubectl("get", "--raw=/readyz", check=False).returncode == 0


def scale_writes(kube: KubeAPIServer, namespace: str, name: str | None = None) -> list[str]:
    """Successful writes to /scale subresources in `namespace`, from the audit log."""
    found = []
    for line in kube.audit_log.read_text().splitlines():
        entry: dict[str, Any] = json.loads(line)
        ref = entry.get("objectRef", {})
        if (
            ref.get("namespace") == namespace
            and ref.get("subresource") == "scale"
            and (name is None or ref.get("name") == name)
            and entry.get("verb") in ("patch", "update")
            and entry.get("stage") == "ResponseComplete"
            and entry.get("responseStatus", {}).get("code") == 200
        ):
            found.append(f"{ref.get('name')}@{entry['requestReceivedTimestamp']}")
    return found


OperatorFactory = Callable[..., Operator]
