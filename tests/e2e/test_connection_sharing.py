"""200 ScaledObjects, each with a Kafka, a RabbitMQ and a Redis trigger, on one operator: every
server sees a small, constant number of connections, not one per ScaledObject (KEDA opens one
per trigger per object)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import aio_pika
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.e2e.harness import Operator, wait_for
from tests.testbed import start_service
from tests.testbed.kube import KubeAPIServer
from tests.testbed.services import Kafka, RabbitMQ, Redis

pytestmark = [pytest.mark.testbed, pytest.mark.e2e]

OBJECTS = 200
SOURCES = 10  # topics and queues, shared by the objects in turn
MAX_CONNECTIONS_PER_SERVER = 4


def established(pid: int, port: int) -> int:
    """TCP connections from process `pid` (and its threads) to local port `port`."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if fields[3] == "01" and remote_port == port and fields[9] in inodes:
                count += 1
    return count


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[Kafka, RabbitMQ, Redis]]:
    """Private servers: nothing else connects to them during the test."""
    started = [start_service(name, tmp_path) for name in ("kafka", "rabbitmq", "redis")]
    try:
        kafka, rabbitmq, redis_server = started
        assert isinstance(kafka, Kafka)
        assert isinstance(rabbitmq, RabbitMQ)
        assert isinstance(redis_server, Redis)
        asyncio.run(_create_sources(kafka, rabbitmq))
        yield kafka, rabbitmq, redis_server
    finally:
        for service in reversed(started):
            service.stop()


async def _create_sources(kafka: Kafka, rabbitmq: RabbitMQ) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(f"t{i}", num_partitions=1, replication_factor=1) for i in range(SOURCES)]
        )
    finally:
        await admin.close()
    connection = await aio_pika.connect(rabbitmq.amqp)
    async with connection:
        channel = await connection.channel()
        for i in range(SOURCES):
            await channel.declare_queue(f"q{i}")


def test_two_hundred_scaled_objects_share_a_few_connections(
    crds: KubeAPIServer,
    namespace: str,
    servers: tuple[Kafka, RabbitMQ, Redis],
    operator: Callable[..., Operator],
) -> None:
    kafka, rabbitmq, redis_server = servers
    documents = []
    for i in range(OBJECTS):
        name = f"w{i:03d}"
        documents.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": "w", "image": "w:1"}]},
                    },
                },
            }
        )
        documents.append(
            {
                "apiVersion": "autoscale.dev/v1alpha1",
                "kind": "ScaledObject",
                "metadata": {"name": name},
                "spec": {
                    "scaleTargetRef": {"name": name},
                    "pollingInterval": 2,
                    "triggers": [
                        {
                            "type": "kafka",
                            "metadata": {
                                "bootstrapServers": kafka.bootstrap,
                                "consumerGroup": f"g{i}",
                                "topic": f"t{i % SOURCES}",
                                "lagThreshold": "10",
                            },
                        },
                        {
                            "type": "rabbitmq",
                            "metadata": {
                                "host": rabbitmq.amqp,
                                "protocol": "amqp",
                                "queueName": f"q{i % SOURCES}",
                                "mode": "QueueLength",
                                "value": "10",
                            },
                        },
                        {
                            "type": "redis-streams",
                            "metadata": {
                                "address": f"127.0.0.1:{redis_server.port}",
                                "stream": f"s{i}",
                            },
                        },
                    ],
                },
            }
        )
    crds.kubectl(
        "apply",
        "--server-side",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": documents}),
    )
    op = operator()

    def all_polled() -> bool:
        listing = json.loads(crds.kubectl("get", "so", "-n", namespace, "-o", "json").stdout)
        polled = [so for so in listing["items"] if len(so.get("status", {}).get("health", {})) == 3]
        return len(polled) == OBJECTS

    wait_for(all_polled, timeout=180, interval=2, what=f"all {OBJECTS} objects to be polled")
    counts = {
        "kafka": established(op.process.pid, kafka.port),
        "rabbitmq": established(op.process.pid, rabbitmq.amqp_port),
        "redis": established(op.process.pid, redis_server.port),
    }
    assert all(0 < n <= MAX_CONNECTIONS_PER_SERVER for n in counts.values()), counts
