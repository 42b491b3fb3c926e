"""Every event source going down under a running operator, as tests/faults/test_sources.py does
for Redis: Kafka (the broker restarted on the same port and log dir), RabbitMQ (the node
restarted; the AMQP and the management-HTTP modes side by side), SQS (moto's server restarted,
empty) and Prometheus (restarted on the same TSDB).

For each source one test, with a private server it stops and starts again:

- without `fallback` the count holds through the outage, well past `cooldownPeriod`;
- with `fallback` the fallback count applies after `failureThreshold` failed polls;
- when the source is back both follow it again, `Fallback=False`, health `Happy`;
- across a stop/start and a freeze/thaw (SIGSTOP: the server keeps its sockets), the
  connections the operator holds to the server stay bounded, all `ESTABLISHED`, and the server
  holds exactly as many from the operator (counted from /proc on both sides; RabbitMQ's own
  `/api/connections` too, for AMQP).
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import aio_pika
import boto3
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

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
from tests.faults.conftest import (
    OperatorFactory,
    RestartableService,
    SilentServer,
    assert_healthy,
    operator_sockets,
    server_sees,
    tcp_sockets,
    wait_condition,
    wait_replicas,
)
from tests.testbed.kube import KubeAPIServer
from tests.testbed.procs import LOOPBACK, free_port
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
FAILURE_THRESHOLD = 2
FALLBACK = 6
COOLDOWN = 2
HOLD = 4.0  # seconds the count must hold without fallback: twice cooldownPeriod


# --- one driver per source: how to make a backlog, and the triggers that read it ---------------


class Source:
    """A private server of one kind and what the test needs from it. `modes` are the ways the
    trigger can read it, each with the server port it connects to."""

    kind: ClassVar[str]

    def __init__(self, server: RestartableService, name: str) -> None:
        self.server = server
        self.name = name
        self.backlog = 0
        self.env: dict[str, str] = {}

    def modes(self) -> dict[str, int]:
        return {self.kind: self.server.port}

    def prepare(self) -> None:
        """Create the topic, queue or series, empty."""

    def set_backlog(self, count: int) -> None:
        """Make the source report `count` (never less than before)."""
        raise NotImplementedError

    def trigger(self, mode: str) -> dict[str, Any]:
        raise NotImplementedError

    def after_restart(self) -> None:
        """Put back what a restart lost (moto keeps nothing)."""

    def server_view(self, mode: str, operator_pid: int) -> int | None:
        """The server's own count of the operator's connections, where it has one."""
        return None

    def close(self) -> None:
        """Stop what the driver started besides the server."""


class KafkaSource(Source):
    kind = "kafka"
    PARTITIONS = 10  # the scaler caps replicas at the partition count

    @property
    def bootstrap(self) -> str:
        return str(self.server.service.bootstrap)

    def prepare(self) -> None:
        async def create() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                await admin.create_topics(
                    [NewTopic(self.name, num_partitions=self.PARTITIONS, replication_factor=1)]
                )
            finally:
                await admin.close()

        asyncio.run(create())

    def set_backlog(self, count: int) -> None:
        async def produce() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, request_timeout_ms=10000)
            await producer.start()
            try:
                for i in range(self.backlog, count):
                    await producer.send_and_wait(self.name, b"job", partition=i % self.PARTITIONS)
            finally:
                await producer.stop()

        asyncio.run(produce())  # nobody consumes: the group's lag is every message
        self.backlog = count

    def trigger(self, mode: str) -> dict[str, Any]:
        return {
            "type": "kafka",
            "metadata": {
                "bootstrapServers": self.bootstrap,
                "consumerGroup": self.name,
                "topic": self.name,
                "lagThreshold": "1",
                "offsetResetPolicy": "earliest",
            },
        }


class RabbitMQSource(Source):
    kind = "rabbitmq"

    @property
    def rabbit(self) -> Any:
        return self.server.service

    def modes(self) -> dict[str, int]:
        return {"amqp": self.rabbit.amqp_port, "http": self.rabbit.management_port}

    def _auth(self) -> dict[str, str]:
        token = base64.b64encode(f"{self.rabbit.USER}:{self.rabbit.PASSWORD}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def prepare(self) -> None:
        self.set_backlog(0)

    def set_backlog(self, count: int) -> None:
        async def publish() -> None:
            connection = await aio_pika.connect(self.rabbit.amqp)
            async with connection:
                channel = await connection.channel()
                await channel.declare_queue(self.name, durable=True)
                for _ in range(self.backlog, count):
                    await channel.default_exchange.publish(
                        aio_pika.Message(b"job", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                        routing_key=self.name,
                    )

        asyncio.run(publish())  # durable queue, persistent messages: they survive a restart
        self.backlog = count
        # The management API has no message count for a new queue until its next statistics
        # round (every 5 s): an HTTP-mode poll before that is a failed poll (the count is
        # unknown, not zero), which with `fallback` would activate it before any outage.
        wait_for(self._counted, timeout=30, what=f"RabbitMQ's statistics to count {count}")

    def _counted(self) -> bool:
        request = urllib.request.Request(
            self.rabbit.management_url(f"/api/queues/%2F/{self.name}"), headers=self._auth()
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return bool(json.load(response).get("messages") == self.backlog)

    def trigger(self, mode: str) -> dict[str, Any]:
        if mode == "amqp":
            host = self.rabbit.amqp
        else:
            host = (
                f"http://{self.rabbit.USER}:{self.rabbit.PASSWORD}@{LOOPBACK}:"
                f"{self.rabbit.management_port}/"
            )
        return {
            "type": "rabbitmq",
            "metadata": {
                "protocol": mode,
                "host": host,
                "queueName": self.name,
                "mode": "QueueLength",
                "value": "1",
            },
        }

    def server_view(self, mode: str, operator_pid: int) -> int | None:
        """AMQP connections RabbitMQ lists (its management API) from the operator's ports."""
        if mode != "amqp":
            return None
        ports = {
            local
            for local, remote, _ in tcp_sockets([operator_pid])
            if remote == self.rabbit.amqp_port
        }
        request = urllib.request.Request(
            self.rabbit.management_url("/api/connections"), headers=self._auth()
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            listed = json.load(response)
        return sum(1 for c in listed if c.get("peer_port") in ports)


class SQSSource(Source):
    kind = "sqs"
    REGION = "eu-west-1"

    def __init__(self, server: RestartableService, name: str) -> None:
        super().__init__(server, name)
        # The operator's own identity (no keys in the trigger): moto takes any.
        self.env = {"AWS_ACCESS_KEY_ID": "AKIDFAULTS", "AWS_SECRET_ACCESS_KEY": "not-a-secret"}
        self.url = ""

    def _client(self) -> Any:
        return boto3.client(
            "sqs",
            endpoint_url=self.server.service.url,
            region_name=self.REGION,
            aws_access_key_id="AKIDFAULTS",
            aws_secret_access_key="not-a-secret",
        )

    def prepare(self) -> None:
        self.url = self._client().create_queue(QueueName=self.name)["QueueUrl"]

    def set_backlog(self, count: int) -> None:
        client = self._client()
        for i in range(self.backlog, count):
            client.send_message(QueueUrl=self.url, MessageBody=f"job {i}")
        self.backlog = count

    def after_restart(self) -> None:
        """moto kept nothing: the same queue (same URL) with the same messages."""
        assert self._client().create_queue(QueueName=self.name)["QueueUrl"] == self.url
        count, self.backlog = self.backlog, 0
        self.set_backlog(count)

    def trigger(self, mode: str) -> dict[str, Any]:
        return {
            "type": "aws-sqs-queue",
            "metadata": {
                "queueURL": self.url,
                "queueLength": "1",
                "awsRegion": self.REGION,
                "awsEndpoint": self.server.service.url,
                "identityOwner": "operator",
            },
        }


class _Gauge(BaseHTTPRequestHandler):
    value: ClassVar[list[int]]

    def do_GET(self) -> None:
        body = f"# TYPE jobs_pending gauge\njobs_pending {self.value[0]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class PrometheusSource(Source):
    kind = "prometheus"

    def prepare(self) -> None:
        value = [0]
        handler = type("Gauge", (_Gauge,), {"value": value})
        self._value = value
        self._exporter = ThreadingHTTPServer((LOOPBACK, free_port()), handler)
        threading.Thread(target=self._exporter.serve_forever, daemon=True).start()
        self.server.service.add_target(self.name, f"{LOOPBACK}:{self._exporter.server_port}")
        wait_for(self._scraped, timeout=30, what="Prometheus scraping the test's exporter")

    def _query(self) -> str:
        return f'jobs_pending{{job="{self.name}"}}'

    def _scraped(self) -> bool:
        found = self.server.service.query(self._query())
        return bool(found) and int(float(found[0]["value"][1])) == self._value[0]

    def set_backlog(self, count: int) -> None:
        self._value[0] = count
        self.backlog = count
        wait_for(self._scraped, timeout=30, what=f"Prometheus to see jobs_pending {count}")

    def trigger(self, mode: str) -> dict[str, Any]:
        return {
            "type": "prometheus",
            "metadata": {
                "serverAddress": self.server.service.url,
                "query": self._query(),
                "threshold": "1",
                # An empty answer right after a restart (before the first scrape) is an error,
                # not zero: the safe choice for a count that must not drop.
                "ignoreNullValues": "false",
            },
        }

    def close(self) -> None:
        if hasattr(self, "_exporter"):
            self._exporter.shutdown()
            self._exporter.server_close()


SOURCES: dict[str, Callable[[RestartableService, str], Source]] = {
    "kafka": KafkaSource,
    "rabbitmq": RabbitMQSource,
    "sqs": SQSSource,
    "prometheus": PrometheusSource,
}


def _hold(
    kube: KubeAPIServer, namespace: str, names: list[str], count: int, seconds: float
) -> None:
    """Every Deployment in `names` stays at `count` for `seconds` (checked every 0.3 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name in names:
            now = replicas(kube, namespace, "deployment", name)
            assert now == count, f"{name} moved to {now} while it had to hold {count}"
        time.sleep(0.3)


# --- the test -----------------------------------------------------------------------------------


def _counts(source: Source, op: Operator) -> dict[str, tuple[dict[str, int], int, int | None]]:
    """Per mode: the operator's sockets to the server by state, how many of them the server
    holds, and the server's own listing where it has one."""
    time.sleep(1.5)  # a poll or two of every object
    found = {}
    for mode, port in source.modes().items():

        def read(port: int = port) -> tuple[dict[str, int], int]:
            return (
                operator_sockets(op.process.pid, port),
                server_sees(source.server.process.pid, port, op.process.pid),
            )

        # A poll in flight is seen a moment on one side only (not yet accepted, or closed by the
        # server and not yet by the client): read again until both sides agree, for a while. A
        # leaked connection stays on both sides, or half-closed on the operator's, and fails
        # the checks below.
        deadline = time.monotonic() + 10
        sockets, held = read()
        while time.monotonic() < deadline and (
            set(sockets) - {"ESTABLISHED"} or sockets.get("ESTABLISHED", 0) != held
        ):
            time.sleep(0.3)
            sockets, held = read()
        listed = source.server_view(mode, op.process.pid)
        # A server's own listing (RabbitMQ's statistics) trails the sockets by a second or more.
        deadline = time.monotonic() + 15
        while listed is not None and listed != held and time.monotonic() < deadline:
            time.sleep(0.5)
            listed = source.server_view(mode, op.process.pid)
        found[mode] = (sockets, held, listed)
    return found


@pytest.mark.parametrize("kind", list(SOURCES))
def test_source_outage_holds_falls_back_recovers_and_leaks_nothing(
    kind: str,
    request: pytest.FixtureRequest,
    crds: KubeAPIServer,
    namespace: str,
    unique_name: str,
    operator: OperatorFactory,
) -> None:
    server: RestartableService = request.getfixturevalue(f"own_{kind}")
    source = SOURCES[kind](server, unique_name)
    request.addfinalizer(source.close)
    source.prepare()
    source.set_backlog(3)
    modes = list(source.modes())
    for mode in modes:
        for role, extra in (
            ("hold", {}),
            ("fb", {"fallback": {"failureThreshold": FAILURE_THRESHOLD, "replicas": FALLBACK}}),
        ):
            name = f"{role}-{mode}"
            apply(crds, namespace, deployment(name, replicas=0))
            apply(
                crds,
                namespace,
                scaled_object(
                    name,
                    name,
                    [source.trigger(mode)],
                    maxReplicaCount=10,
                    cooldownPeriod=COOLDOWN,
                    advanced=UNLIMITED,
                    **extra,
                ),
            )
    op = operator("--poll-timeout=3", env=source.env)
    names = [f"{role}-{mode}" for mode in modes for role in ("hold", "fb")]
    for name in names:
        wait_replicas(crds, namespace, "deployment", name, 3, timeout=60)
    counts = [("baseline", _counts(source, op))]

    # --- outage 1: stopped. Fallback after failureThreshold; without it the count holds.
    server.stop()
    for mode in modes:
        wait_replicas(crds, namespace, "deployment", f"fb-{mode}", FALLBACK, timeout=30)
        so = wait_condition(crds, namespace, f"fb-{mode}", "Fallback", "True")
        (health,) = so["status"]["health"].values()
        assert health["status"] == "Failing", so["status"]
        assert health["numberOfFailures"] > FAILURE_THRESHOLD, so["status"]
    _hold(crds, namespace, [f"hold-{mode}" for mode in modes], 3, seconds=HOLD)
    for mode in modes:
        holder = get(crds, namespace, "so", f"hold-{mode}")
        ready = condition(holder, "Ready")
        assert ready["reason"] == "TriggerError", holder["status"]
        # The condition says why, as the streak's ScalerFailed event does ("<metric>: <why>").
        failed = [
            e["message"]
            for e in events(crds, namespace, f"hold-{mode}")
            if e["reason"] == "ScalerFailed"
        ]
        assert any(message in ready["message"] for message in failed), (failed, ready)

    server.start()
    source.after_restart()
    source.set_backlog(4)
    for name in names:
        wait_replicas(crds, namespace, "deployment", name, 4, timeout=60)
    for mode in modes:
        so = wait_condition(crds, namespace, f"fb-{mode}", "Fallback", "False")
        (health,) = so["status"]["health"].values()
        assert health["status"] == "Happy", so["status"]
        wait_condition(crds, namespace, f"hold-{mode}", "Ready", "True", reason="ScaledObjectReady")
        reasons = [e["reason"] for e in events(crds, namespace, f"fb-{mode}")]
        assert reasons.count("FallbackActivated") == 1, reasons
        assert reasons.count("FallbackDeactivated") == 1, reasons
    counts.append(("restart 1", _counts(source, op)))

    # --- outage 2: frozen (SIGSTOP). The server keeps its sockets, so a connection the operator
    # gave up on without closing would still be counted on both sides afterwards.
    server.freeze()
    for mode in modes:
        wait_condition(
            crds, namespace, f"hold-{mode}", "Ready", "False", reason="TriggerError", timeout=30
        )
    time.sleep(2)  # a few more polls time out against the frozen server
    server.thaw()
    source.set_backlog(6)
    for name in names:
        wait_replicas(crds, namespace, "deployment", name, 6, timeout=60)
    counts.append(("freeze", _counts(source, op)))

    print(f"\n{kind}: operator connections (operator side, server side, server's list):")
    for label, found in counts:
        print(f"  {label}: {found}")
    print(f"  every TCP socket of the operator, at the end: {tcp_sockets([op.process.pid])}")
    for mode in modes:
        objects = 2  # hold and fallback share one client per endpoint
        for label, found in counts:
            sockets, held_by_server, listed = found[mode]
            assert set(sockets) <= {"ESTABLISHED"}, (mode, label, counts)  # none half-closed
            established = sockets.get("ESTABLISHED", 0)
            assert established == held_by_server, (mode, label, counts)
            assert established <= objects, (mode, label, counts)
            if listed is not None:
                assert listed == established, (mode, label, counts)
    # A parameter warning is logged when a loop starts, not at each rebuild of a failing
    # trigger's scaler (every poll of an outage): RabbitMQ's host URLs carry a password.
    if kind == "rabbitmq":
        warned = op.log_path.read_text().count("carries a password")
        assert warned == len(names), f"{warned} password warnings for {len(names)} objects"
    assert_healthy(op)


# --- a source that accepts connections and never answers, for every trigger type ----------------

# Each trigger type pointed at its own silent server, and how long its scaler waits for one
# connection's answer before it lets go: kafka.REQUEST_TIMEOUT, rabbitmq.CONNECT_TIMEOUT (AMQP)
# and DEFAULT_HTTP_TIMEOUT (management API), aws_sqs_queue.READ_TIMEOUT, prometheus
# DEFAULT_TIMEOUT, all 3 s; each below the scaler's whole-poll limit and the operator's default
# --poll-timeout (10 s), which this test leaves alone: the scaler's own limit must end the wait.
HUNG: dict[str, float] = {
    "kafka": 3.0,
    "rabbitmq-amqp": 3.0,
    "rabbitmq-http": 3.0,
    "aws-sqs-queue": 3.0,
    "prometheus": 3.0,
}


def _hung_trigger(kind: str, address: str, name: str) -> dict[str, Any]:
    if kind == "kafka":
        metadata = {"bootstrapServers": address, "consumerGroup": name, "topic": name}
        metadata["lagThreshold"] = "1"
        return {"type": "kafka", "metadata": metadata}
    if kind.startswith("rabbitmq-"):
        protocol = kind.split("-", 1)[1]
        scheme = "amqp" if protocol == "amqp" else "http"
        return {
            "type": "rabbitmq",
            "metadata": {
                "protocol": protocol,
                "host": f"{scheme}://guest:guest@{address}/",
                "queueName": name,
                "mode": "QueueLength",
                "value": "1",
            },
        }
    if kind == "aws-sqs-queue":
        return {
            "type": "aws-sqs-queue",
            "metadata": {
                "queueURL": f"http://{address}/123456789012/{name}",
                "queueLength": "1",
                "awsRegion": "eu-west-1",
                "awsEndpoint": f"http://{address}",
                "identityOwner": "operator",
            },
        }
    assert kind == "prometheus"
    return {
        "type": "prometheus",
        "metadata": {"serverAddress": f"http://{address}", "query": "up", "threshold": "1"},
    }


def test_every_hung_source_is_bounded_by_its_timeout_and_others_keep_their_schedule(
    crds: KubeAPIServer,
    namespace: str,
    redis_server: Redis,
    stream: tuple[Any, str],
    request: pytest.FixtureRequest,
    operator: OperatorFactory,
) -> None:
    client, name = stream
    silent: dict[str, SilentServer] = {}
    for kind in HUNG:
        silent[kind] = SilentServer()
        request.addfinalizer(silent[kind].stop)
        apply(crds, namespace, deployment(kind, replicas=1))
        apply(
            crds,
            namespace,
            scaled_object(
                kind, kind, [_hung_trigger(kind, silent[kind].address, name)], minReplicaCount=1
            ),
        )
    apply(crds, namespace, deployment("healthy", replicas=0))
    apply(
        crds,
        namespace,
        scaled_object(
            "healthy",
            "healthy",
            [redis_trigger(f"{LOOPBACK}:{redis_server.port}", name, pending=1)],
            maxReplicaCount=20,
            advanced=UNLIMITED,
        ),
    )
    op = operator(env={"AWS_ACCESS_KEY_ID": "AKIDFAULTS", "AWS_SECRET_ACCESS_KEY": "not-a-secret"})
    for kind in HUNG:
        wait_condition(crds, namespace, kind, "Ready", "False", reason="TriggerError", timeout=30)
    # While every hung object waits out its timeout poll after poll, the healthy one follows
    # its source within a few polling intervals (1 s) every time.
    for total in (2, 5, 9):
        started = time.monotonic()
        make_pending(client, name, total - replicas(crds, namespace, "deployment", "healthy"))
        wait_replicas(crds, namespace, "deployment", "healthy", total, timeout=10)
        took = time.monotonic() - started
        assert took < 3.0, f"the healthy object took {took:.1f}s to follow its source"
        time.sleep(1.5)
    now = time.monotonic()
    report: dict[str, dict[str, Any]] = {}
    for kind in HUNG:
        connections = silent[kind].snapshot()
        closed = [
            float(c["closed"] or 0) - float(c["accepted"] or 0) for c in connections if c["closed"]
        ]
        still_open = [now - float(c["accepted"] or 0) for c in connections if not c["closed"]]
        report[kind] = {
            "connections": len(connections),
            "held": [round(h, 2) for h in closed],
            "open for": [round(h, 2) for h in still_open],
        }
    print("\nhung sources:", json.dumps(report, indent=1))
    for kind, bound in HUNG.items():
        seen = report[kind]
        # It really connected, again on later polls, and let go of each connection in time.
        assert seen["connections"] >= 2, (kind, seen)
        assert seen["held"], (kind, seen)
        assert max(seen["held"]) <= bound + 1.0, (kind, seen)
        assert all(age <= bound + 1.0 for age in seen["open for"]), (kind, seen)
        assert replicas(crds, namespace, "deployment", kind) == 1
        failed = [e for e in events(crds, namespace, kind) if e["reason"] == "ScalerFailed"]
        assert len(failed) == 1, failed  # once for the streak, not once per poll
        assert failed[0]["type"] == "Warning", failed
    assert_healthy(op)
