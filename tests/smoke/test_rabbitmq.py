"""The bench's RabbitMQ is real: queue depth over AMQP (ready only) and over the management API
(ready and unacknowledged), as the rabbitmq scaler reads them."""

from __future__ import annotations

import asyncio
import base64
from typing import Any
from urllib.parse import quote

import aio_pika
import aiohttp
import pytest

from tests.testbed.services import RabbitMQ

pytestmark = pytest.mark.testbed


async def queue_stats(rabbitmq: RabbitMQ, queue: str) -> dict[str, Any]:
    credentials = base64.b64encode(f"{RabbitMQ.USER}:{RabbitMQ.PASSWORD}".encode()).decode()
    headers = {"Authorization": f"Basic {credentials}"}
    url = rabbitmq.management_url(f"/api/queues/{quote('/', safe='')}/{quote(queue, safe='')}")
    async with aiohttp.ClientSession(headers=headers) as session, session.get(url) as response:
        response.raise_for_status()
        stats: dict[str, Any] = await response.json()
        return stats


async def test_queue_depth_over_amqp_and_management_api(
    rabbitmq: RabbitMQ, unique_name: str
) -> None:
    connection = await aio_pika.connect_robust(rabbitmq.amqp)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(unique_name, durable=False, auto_delete=False)
        for i in range(10):
            await channel.default_exchange.publish(
                aio_pika.Message(body=f"job {i}".encode()), routing_key=unique_name
            )
        # Take 4 without acknowledging them: they become unacknowledged, not ready.
        consumer_channel = await connection.channel()
        await consumer_channel.set_qos(prefetch_count=4)
        held: list[aio_pika.abc.AbstractIncomingMessage] = []
        consumer_queue = await consumer_channel.get_queue(unique_name)
        for _ in range(4):
            message = await consumer_queue.get(no_ack=False, timeout=5)
            assert message is not None
            held.append(message)

        # A fresh channel: aio-pika's robust channel answers a repeated declare of the same
        # name from its cache, with the counts of the first declaration.
        probe_channel = await connection.channel()
        passive = await probe_channel.declare_queue(unique_name, passive=True)
        assert passive.declaration_result.message_count == 6  # ready only

        stats: dict[str, Any] = {}
        for _ in range(50):  # statistics refresh every second
            stats = await queue_stats(rabbitmq, unique_name)
            if stats.get("messages_unacknowledged") == 4 and stats.get("messages_ready") == 6:
                break
            await asyncio.sleep(0.2)
        assert stats["messages_ready"] == 6
        assert stats["messages_unacknowledged"] == 4
        assert stats["messages"] == 10
        for message in held:
            await message.ack()
        await queue.delete(if_unused=False, if_empty=False)
