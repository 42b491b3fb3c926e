"""TLS to every source, end to end: the operator process, with its least-privilege
ServiceAccount, scales Deployments through TLS-only sources, its certificates and credentials
read from Secrets through a TriggerAuthentication, the way a KEDA user writes it.

Each source runs once per module on the bench, TLS only, with a CA of its own:

- Kafka: SASL_SSL with SCRAM-SHA-512, the CA from the Secret;
- RabbitMQ: amqps:// and the management API over https:// (`protocol: http`), both requiring
  a client certificate;
- Redis: TLS only, a client certificate required;
- Prometheus: https only, a client certificate required.

For each, three ScaledObjects read the same backlog: one trusting the right CA (0 -> 3 -> 0,
Ready), one given a CA that did not sign the server's certificate (Ready=False, a ScalerFailed
event naming the verification, no secret in either, and its Deployment's 2 replicas never
touched), and one with that same wrong CA and `unsafeSsl: "true"` (0 -> 3 -> 0, Ready):
`unsafeSsl` is what skips verification.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from tests.conftest import IN_CI
from tests.e2e.harness import Operator, remember_secret, wait_for
from tests.e2e.workloads import apply, condition, deployment, events, get, replicas
from tests.testbed import NotInstalledError, paths
from tests.testbed.bench import check_installed
from tests.testbed.kube import KubeAPIServer
from tests.testbed.pki import ServerTLS, TinyCA
from tests.testbed.procs import LOOPBACK, free_port
from tests.testbed.services import Kafka, Prometheus, RabbitMQ, Redis

pytestmark = [pytest.mark.testbed, pytest.mark.e2e]

BACKLOG = 12  # units of work; every trigger's target is 4 per replica -> 3 replicas
TARGET = "4"
VERIFY_FAILED = re.compile(r"CERTIFICATE_VERIFY_FAILED|certificate verify failed", re.IGNORECASE)


S = TypeVar("S", Kafka, RabbitMQ, Redis, Prometheus)


@contextlib.contextmanager
def tls_service(name: str, workdir: Path, build: Callable[..., S]) -> Iterator[tuple[S, ServerTLS]]:
    """One TLS-only service, built as `build(where, workdir, tls=...)` with a CA of its own;
    skipped (failed under CI) when the bench is not installed."""
    where = paths()
    try:
        check_installed(name, where)
    except NotInstalledError as exc:
        if IN_CI:
            pytest.fail(f"CI=true and the test bench is not installed: {exc}")
        pytest.skip(f"TEST BENCH NOT INSTALLED ({exc}); run `make test` or install it")
    tls = ServerTLS.create(workdir / f"{name}-pki", name)
    service = build(where, workdir / name, tls=tls)
    try:
        yield service, tls
    finally:
        service.stop()


def refused_without_client_certificate(url: str, tls: ServerTLS) -> bool:
    """The server is trusted through the CA, but no client certificate is offered: refused."""
    try:
        with urllib.request.urlopen(
            url, timeout=5, context=ssl.create_default_context(cafile=str(tls.ca_file))
        ):
            return False
    except urllib.error.HTTPError:  # an HTTP answer (e.g. 401) means TLS let us in
        return False
    except OSError:  # the TLS alert, or the reset that follows it under TLS 1.3
        return True


@pytest.fixture(scope="module")
def tls_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tls-sources")


@pytest.fixture(scope="module")
def tls_kafka(tls_workdir: Path) -> Iterator[tuple[Kafka, ServerTLS]]:
    """Kafka with a SASL_SSL listener (SCRAM and PLAIN over TLS, no client certificate)."""
    with tls_service("kafka", tls_workdir, Kafka) as started:
        yield started


@pytest.fixture(scope="module")
def tls_rabbitmq(tls_workdir: Path) -> Iterator[tuple[RabbitMQ, ServerTLS]]:
    """RabbitMQ on AMQPS and HTTPS only, a client certificate required on both."""
    with tls_service("rabbitmq", tls_workdir, RabbitMQ) as (broker, tls):
        assert refused_without_client_certificate(broker.management_url("/api/overview"), tls)
        yield broker, tls


@pytest.fixture(scope="module")
def tls_redis(tls_workdir: Path) -> Iterator[tuple[Redis, ServerTLS]]:
    """Redis on TLS only, a client certificate required."""
    with tls_service("redis", tls_workdir, Redis) as started:
        yield started


@pytest.fixture(scope="module")
def tls_prometheus(tls_workdir: Path) -> Iterator[tuple[Prometheus, ServerTLS]]:
    """Prometheus on HTTPS only, a client certificate required."""
    with tls_service("prometheus", tls_workdir, Prometheus) as (server, tls):
        assert refused_without_client_certificate(f"{server.url}/-/ready", tls)
        yield server, tls


@dataclass
class Source:
    """One TLS source as the test drives it: the trigger, the Secret's values (`ca` among
    them), and how to make and clear a backlog of BACKLOG units."""

    type: str
    metadata: dict[str, str]
    auth: dict[str, str]
    fill: Callable[[], None]
    drain: Callable[[], None]


def client_material(tls: ServerTLS) -> dict[str, str]:
    """The CA and the client certificate, as the Secret holds them; the key is a secret."""
    key = tls.client.key_pem.decode()
    remember_secret(key.splitlines()[1])  # a full line of the key's body, as a log would show
    return {"ca": tls.ca_pem.decode(), "cert": tls.client.cert_pem.decode(), "key": key}


def kafka_source(kafka: Kafka, tls: ServerTLS, name: str) -> Source:
    assert kafka.sasl_ssl_bootstrap is not None
    topic = group = name
    partitions = [TopicPartition(topic, p) for p in range(3)]

    async def fill() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
        await producer.start()
        try:
            for i in range(BACKLOG):
                await producer.send_and_wait(topic, b"order", partition=i % 3)
        finally:
            await producer.stop()

    async def drain() -> None:
        """The group commits the end of every partition, as consumers that finished would."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign(partitions)
            await consumer.commit(await consumer.end_offsets(partitions))
        finally:
            await consumer.stop()

    return Source(
        type="kafka",
        metadata={
            "bootstrapServers": kafka.sasl_ssl_bootstrap,
            "consumerGroup": group,
            "topic": topic,
            "lagThreshold": TARGET,
            "offsetResetPolicy": "earliest",
        },
        auth={
            "sasl": "scram_sha512",
            "username": "alice",
            "password": remember_secret(Kafka.USERS["alice"]),
            "tls": "enable",
            "ca": tls.ca_pem.decode(),
        },
        fill=lambda: asyncio.run(fill()),
        drain=lambda: asyncio.run(drain()),
    )


def rabbitmq_source(rabbitmq: RabbitMQ, tls: ServerTLS, name: str, *, https: bool) -> Source:
    queue = name

    async def publish(count: int) -> None:
        connection = await aio_pika.connect(rabbitmq.amqp, ssl_context=rabbitmq.client_context)
        async with connection:
            channel = await connection.channel()
            declared = await channel.declare_queue(queue, durable=True)
            if count == 0:
                await declared.purge()
            for _ in range(count):
                await channel.default_exchange.publish(aio_pika.Message(b"task"), routing_key=queue)

    asyncio.run(publish(0))
    host = rabbitmq.management if https else rabbitmq.amqp
    return Source(
        type="rabbitmq",
        metadata={
            "protocol": "http" if https else "amqp",
            "queueName": queue,
            "mode": "QueueLength",
            "value": TARGET,
        },
        auth={"host": host, "tls": "enable", **client_material(tls)},
        fill=lambda: asyncio.run(publish(BACKLOG)),
        drain=lambda: asyncio.run(publish(0)),
    )


def redis_source(
    server: Redis, tls: ServerTLS, name: str, request: pytest.FixtureRequest
) -> Source:
    client = redis.Redis(
        host=LOOPBACK,
        port=server.port,
        ssl=True,
        ssl_ca_certs=str(tls.ca_file),
        ssl_certfile=str(tls.client_cert_file),
        ssl_keyfile=str(tls.client_key_file),
        decode_responses=True,
    )
    request.addfinalizer(client.close)
    client.xgroup_create(name, "workers", id="$", mkstream=True)

    def fill() -> None:
        for i in range(BACKLOG):
            client.xadd(name, {"job": str(i)})
        client.xreadgroup("workers", "worker-1", {name: ">"}, count=BACKLOG)

    def drain() -> None:
        pending = client.xpending_range(name, "workers", min="-", max="+", count=BACKLOG)
        client.xack(name, "workers", *[entry["message_id"] for entry in pending])

    return Source(
        type="redis-streams",
        metadata={
            "address": f"{LOOPBACK}:{server.port}",
            "stream": name,
            "consumerGroup": "workers",
            "pendingEntriesCount": TARGET,
            "enableTLS": "true",
        },
        auth=client_material(tls),
        fill=fill,
        drain=drain,
    )


def prometheus_source(
    prometheus: Prometheus, tls: ServerTLS, name: str, request: pytest.FixtureRequest
) -> Source:
    """A gauge in this process, scraped over plain HTTP; the scaler reads it over https."""
    registry = CollectorRegistry()
    backlog = Gauge("tls_backlog", "Jobs waiting", registry=registry)
    port = free_port()
    server, thread = start_http_server(port, addr=LOOPBACK, registry=registry)
    prometheus.add_target(name, f"{LOOPBACK}:{port}")

    def stop() -> None:
        prometheus.remove_target(name)
        server.shutdown()
        thread.join()

    request.addfinalizer(stop)
    selector = f'tls_backlog{{job="{name}"}}'
    wait_for(lambda: prometheus.query(selector), timeout=30, what="the first scrape")
    return Source(
        type="prometheus",
        metadata={
            "serverAddress": prometheus.url,
            "query": selector,
            "threshold": TARGET,
            "authModes": "tls",
        },
        auth=client_material(tls),
        fill=lambda: backlog.set(BACKLOG),
        drain=lambda: backlog.set(0),
    )


@pytest.fixture(params=["kafka", "rabbitmq-amqps", "rabbitmq-https", "redis", "prometheus"])
def source(request: pytest.FixtureRequest, unique_name: str) -> Source:
    """Only the service the case needs is started (once per module)."""
    kind = request.param
    if kind == "kafka":
        kafka, tls = request.getfixturevalue("tls_kafka")
        return kafka_source(kafka, tls, unique_name)
    if kind.startswith("rabbitmq"):
        broker, tls = request.getfixturevalue("tls_rabbitmq")
        return rabbitmq_source(broker, tls, unique_name, https=kind == "rabbitmq-https")
    if kind == "redis":
        server, tls = request.getfixturevalue("tls_redis")
        return redis_source(server, tls, unique_name, request)
    prometheus, tls = request.getfixturevalue("tls_prometheus")
    return prometheus_source(prometheus, tls, unique_name, request)


def secret(name: str, values: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


def trigger_auth(name: str, parameters: list[str]) -> dict[str, Any]:
    """Every parameter from the Secret of the same name, under the same key."""
    return {
        "apiVersion": "autoscale.dev/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": {"name": name},
        "spec": {"secretTargetRef": [{"parameter": p, "name": name, "key": p} for p in parameters]},
    }


def scaled_object(name: str, source: Source, auth: str, **metadata: str) -> dict[str, Any]:
    return {
        "apiVersion": "autoscale.dev/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"name": name},
            "pollingInterval": 1,
            "cooldownPeriod": 2,
            "maxReplicaCount": 10,
            "triggers": [
                {
                    "type": source.type,
                    "metadata": {**source.metadata, **metadata},
                    "authenticationRef": {"name": auth},
                }
            ],
        },
    }


def test_tls_source_scales_and_verifies_the_server(
    crds: KubeAPIServer,
    namespace: str,
    source: Source,
    operator: Callable[..., Operator],
) -> None:
    wrong_ca = TinyCA("not-the-servers-ca").cert_pem.decode()
    for name, values in (
        ("right-ca", source.auth),
        ("wrong-ca", {**source.auth, "ca": wrong_ca}),
    ):
        apply(crds, namespace, secret(name, values))
        apply(crds, namespace, trigger_auth(name, list(values)))
    apply(crds, namespace, deployment("trusted", replicas=0))
    apply(crds, namespace, deployment("untrusted", replicas=2))
    apply(crds, namespace, deployment("unsafe", replicas=0))
    apply(crds, namespace, scaled_object("trusted", source, "right-ca"))
    apply(crds, namespace, scaled_object("untrusted", source, "wrong-ca"))
    apply(crds, namespace, scaled_object("unsafe", source, "wrong-ca", unsafeSsl="true"))

    def scaled(name: str, count: int) -> bool:
        return replicas(crds, namespace, "deployment", name) == count

    def ready(name: str) -> dict[str, Any]:
        return condition(get(crds, namespace, "scaledobject", name), "Ready")

    def wait_scaled(name: str, count: int, what: str) -> None:
        wait_for(lambda: scaled(name, count), timeout=40, what=f"{name}: {what}")

    def wait_ready(name: str, status: str) -> dict[str, Any]:
        # The status is written after the scale: wait for it rather than read it at once.
        found: dict[str, Any] = wait_for(
            lambda: ready(name).get("status") == status and ready(name),
            timeout=30,
            what=f"{name}: Ready={status}",
        )
        return found

    operator()
    source.fill()
    for name in ("trusted", "unsafe"):
        wait_scaled(name, 3, "0 -> 3 on the backlog")
        wait_ready(name, "True")

    refused = wait_ready("untrusted", "False")
    assert refused["reason"] == "TriggerError", refused
    failures = wait_for(
        lambda: [
            e["message"]
            for e in events(crds, namespace, "untrusted")
            if e.get("reason") == "ScalerFailed"
        ],
        timeout=30,
        what="a ScalerFailed event on untrusted",
    )
    assert any(VERIFY_FAILED.search(message) for message in failures), failures
    written = " ".join([*failures, refused["message"]])
    for value in source.auth.values():
        if value not in ("enable", "alice", "scram_sha512"):
            assert value not in written
    assert "PRIVATE KEY" not in written

    source.drain()
    for name in ("trusted", "unsafe"):
        wait_scaled(name, 0, "3 -> 0 once drained")
    assert scaled("untrusted", 2), "a source that cannot be verified must never scale down"
    assert ready("untrusted")["status"] == "False"
