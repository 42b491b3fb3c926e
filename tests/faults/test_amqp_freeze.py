"""Many AMQP objects through a RabbitMQ freeze longer than the heartbeat timeout.

Found by the one-hour soak (RELIABILITY.md): when aiormq notices the frozen broker it fails
the futures of every request on that connection with CancelledError. Before the fix, that
CancelledError went through the poll as if the loop had been stopped, and 59 of 100 AMQP
objects never polled again, silently. Each object here must poll again after the thaw, which
it shows by scaling up when its queue gets a backlog.
"""

from __future__ import annotations

import asyncio
import time

import aio_pika
import pytest

from tests.e2e.workloads import apply, deployment, get, scaled_object
from tests.faults.conftest import (
    OperatorFactory,
    RestartableService,
    assert_healthy,
    wait_replicas,
)
from tests.testbed.kube import KubeAPIServer

pytestmark = [pytest.mark.testbed, pytest.mark.e2e]

OBJECTS = 20
FREEZE_SECONDS = 40  # beyond aiormq's heartbeat timeout (HEARTBEAT 10 s, ~3 missed beats)


def _publish(amqp: str, counts: dict[str, int]) -> None:
    async def publish() -> None:
        connection = await aio_pika.connect(amqp)
        async with connection:
            channel = await connection.channel()
            for queue, count in counts.items():
                await channel.declare_queue(queue, durable=True)
                for _ in range(count):
                    await channel.default_exchange.publish(
                        aio_pika.Message(b"job"), routing_key=queue
                    )

    asyncio.run(publish())


def test_every_amqp_object_polls_again_after_a_freeze_past_the_heartbeat(
    own_rabbitmq: RestartableService,
    crds: KubeAPIServer,
    namespace: str,
    unique_name: str,
    operator: OperatorFactory,
) -> None:
    rabbit = own_rabbitmq.service
    names = [f"{unique_name[:40]}-{i}" for i in range(OBJECTS)]
    _publish(rabbit.amqp, dict.fromkeys(names, 0))
    for name in names:
        apply(crds, namespace, deployment(name, replicas=0))
        trigger = {
            "type": "rabbitmq",
            "metadata": {
                "protocol": "amqp",
                "host": rabbit.amqp,
                "queueName": name,
                "mode": "QueueLength",
                "value": "1",
            },
        }
        apply(
            crds,
            namespace,
            scaled_object(name, name, [trigger], pollingInterval=2, cooldownPeriod=2),
        )
    op = operator("--poll-timeout=3")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        statuses = [get(crds, namespace, "so", name).get("status") or {} for name in names]
        if all(s.get("conditions") for s in statuses):
            break
        time.sleep(1)

    own_rabbitmq.freeze()
    time.sleep(FREEZE_SECONDS)
    own_rabbitmq.thaw()

    _publish(rabbit.amqp, dict.fromkeys(names, 2))
    for name in names:
        wait_replicas(crds, namespace, "deployment", name, 2, timeout=60)
    assert_healthy(op)
