"""Fault-test fixtures: private services a test may stop, kill, freeze or restart (a Redis, a
Kafka, a RabbitMQ, a moto server, a Prometheus, a kube-apiserver with its etcd), the TCP
sockets a process holds (from /proc, to count connections on both ends), a TCP server that
never answers, the fault-injecting API proxy, and the e2e fixtures (`crds`, `operator`,
`stream`) reused as they are."""

from __future__ import annotations

import base64
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
from tests.testbed.procs import (
    LOOPBACK,
    ManagedProcess,
    free_port,
    http_ok,
    port_open,
    wait_until,
)
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


# --- any source server that can go away and come back --------------------------------------------


def _group_pids(pgid: int) -> list[int]:
    """Live processes of process group `pgid` (a service's whole tree: the RabbitMQ start script
    and its Erlang VM, a JVM...)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


_TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
}


def tcp_sockets(pids: list[int]) -> list[tuple[int, int, str]]:
    """(local port, remote port, state) of every TCP socket the processes `pids` hold open,
    read from /proc: what the kernel says, whatever the client library believes."""
    inodes = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[9] in inodes:
                    local = int(fields[1].rsplit(":", 1)[1], 16)
                    remote = int(fields[2].rsplit(":", 1)[1], 16)
                    found.append((local, remote, _TCP_STATES.get(fields[3], fields[3])))
    return found


def operator_sockets(pid: int, port: int) -> dict[str, int]:
    """The operator process's TCP sockets to server port `port`, counted by state."""
    counts: dict[str, int] = {}
    for _, remote, state in tcp_sockets([pid]):
        if remote == port:
            counts[state] = counts.get(state, 0) + 1
    return counts


def server_sees(server_pgid: int, port: int, client_pid: int) -> int:
    """How many connections on `port` the server (its whole process group) holds open from the
    client process `client_pid` (matched by the client's local port), in any state."""
    client_ports = {local for local, remote, _ in tcp_sockets([client_pid]) if remote == port}
    return sum(
        1
        for local, remote, state in tcp_sockets(_group_pids(server_pgid))
        if local == port and remote in client_ports and state != "LISTEN"
    )


class RestartableService:
    """One bench service whose main process a test may stop and start again: the same command
    line, environment and working directory, so the same ports and the same data directory
    (a Kafka log dir, RabbitMQ's mnesia, Prometheus' TSDB; moto and Redis keep nothing).
    `freeze()`/`thaw()` SIGSTOP/SIGCONT it: connections are accepted, nobody answers."""

    def __init__(
        self,
        service: Any,
        *,
        port: int,
        ready: Callable[[], bool],
        ready_timeout: float = 90,
    ) -> None:
        self.service = service
        self.port = port
        self._ready = ready
        self._ready_timeout = ready_timeout
        process: ManagedProcess = service.process
        self._name = process.name
        self._args = list(process.args)
        self._log = process.log_path
        # What the bench started it with (the RabbitMQ script is the group leader and keeps the
        # environment it was given).
        raw = Path(f"/proc/{process.pid}/environ").read_bytes()
        self._env = dict(
            item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item
        )
        self._cwd = Path(os.readlink(f"/proc/{process.pid}/cwd"))
        self.restarts = 0

    @property
    def process(self) -> ManagedProcess:
        process: ManagedProcess = self.service.process
        return process

    def stop(self) -> None:
        self.process.stop(timeout=30)

    def start(self) -> None:
        """Run the same command again and wait until the service answers a real request."""
        deadline = time.monotonic() + self._ready_timeout
        old = self.process
        while True:  # the port can linger a moment after the old process died
            process = ManagedProcess(
                self._name, self._args, log_path=self._log, env=self._env, cwd=self._cwd
            )
            try:
                wait_until(
                    process,
                    self._ready,
                    timeout=max(1.0, deadline - time.monotonic()),
                    what="ready again after a restart",
                    interval=0.3,
                )
                break
            except Exception:
                process.stop()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self.service.process = process
        self.service.processes = [process if p is old else p for p in self.service.processes]
        self.restarts += 1

    def freeze(self) -> None:
        os.killpg(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGCONT)

    def server_sees(self, client_pid: int) -> int:
        return server_sees(self.process.pid, self.port, client_pid)

    def close(self) -> None:
        self.thaw()
        self.service.stop()


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[RestartableService]:
    """A private single-node Kafka; restarts keep its port, cluster id and log dir (topics,
    messages and committed offsets survive)."""
    from tests.testbed.services import Kafka, _run_coroutine

    kafka = start_service("kafka", tmp_path)
    assert isinstance(kafka, Kafka)
    restartable = RestartableService(
        kafka,
        port=kafka.port,
        ready=lambda: port_open(kafka.port) and bool(_run_coroutine(kafka._probe())),
    )
    yield restartable
    restartable.close()


@pytest.fixture
def own_rabbitmq(tmp_path: Path) -> Iterator[RestartableService]:
    """A private RabbitMQ; a restart stops and starts the node (its epmd stays), same ports and
    mnesia: durable queues and persistent messages survive."""
    from tests.testbed.services import RabbitMQ

    rabbit = start_service("rabbitmq", tmp_path)
    assert isinstance(rabbit, RabbitMQ)
    auth = base64.b64encode(f"{rabbit.USER}:{rabbit.PASSWORD}".encode()).decode()
    restartable = RestartableService(
        rabbit,
        port=rabbit.amqp_port,
        ready=lambda: (
            port_open(rabbit.amqp_port)
            and http_ok(
                rabbit.management_url("/api/overview"), headers={"Authorization": f"Basic {auth}"}
            )
        ),
        ready_timeout=120,
    )
    yield restartable
    restartable.close()


@pytest.fixture
def own_sqs(tmp_path: Path) -> Iterator[RestartableService]:
    """A private moto server; a restart keeps the port and forgets every queue."""
    from tests.testbed.services import SQS

    sqs = start_service("sqs", tmp_path)
    assert isinstance(sqs, SQS)
    restartable = RestartableService(
        sqs, port=sqs.port, ready=lambda: http_ok(f"{sqs.url}/moto-api/")
    )
    yield restartable
    restartable.close()


@pytest.fixture
def own_prometheus(tmp_path: Path) -> Iterator[RestartableService]:
    """A private Prometheus; a restart keeps its port, targets and TSDB."""
    from tests.testbed.services import Prometheus

    prometheus = start_service("prometheus", tmp_path)
    assert isinstance(prometheus, Prometheus)
    restartable = RestartableService(
        prometheus, port=prometheus.port, ready=lambda: http_ok(f"{prometheus.url}/-/ready")
    )
    yield restartable
    restartable.close()
