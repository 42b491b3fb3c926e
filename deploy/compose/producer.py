"""The docker compose sample's producer: bursts of orders on a Kafka topic, then quiet.

Each burst makes a backlog for consumer group `workers`: the operator scales the worker
Deployment up on its lag, the workers drain it, and after the cooldown the operator scales
them back to zero, until the next burst. It runs in the operator's image (which has aiokafka):

    python producer.py [--bootstrap kafka:19092] [--topic orders] [--burst 600]
                       [--interval 120] [--once]

Every option also reads an environment variable (PRODUCER_BOOTSTRAP, PRODUCER_TOPIC, ...).
The topic is created with --partitions partitions when it does not exist (the most workers
that can share a topic's lag is its partition count).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError


def _env(name: str, default: str) -> str:
    return os.environ.get(f"PRODUCER_{name}", default)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default=_env("BOOTSTRAP", "kafka:19092"))
    parser.add_argument("--topic", default=_env("TOPIC", "orders"))
    parser.add_argument("--partitions", type=int, default=int(_env("PARTITIONS", "6")))
    parser.add_argument("--burst", type=int, default=int(_env("BURST", "600")))
    parser.add_argument("--interval", type=float, default=float(_env("INTERVAL", "120")))
    parser.add_argument("--size", type=int, default=int(_env("SIZE", "1024")), help="bytes")
    parser.add_argument("--once", action="store_true", help="one burst, then exit")
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] producer: {message}", flush=True)


async def ensure_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name=topic, num_partitions=partitions, replication_factor=1)]
        )
        log(f"created topic {topic} with {partitions} partitions")
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()


async def burst(producer: AIOKafkaProducer, topic: str, count: int, size: int) -> None:
    """`count` orders, padded to about `size` bytes each, spread over the partitions."""
    padding = "x" * max(0, size - 64)
    sends = []
    for number in range(count):
        order = {"order": number, "at": time.time(), "padding": padding}
        sends.append(
            await producer.send(topic, json.dumps(order).encode(), key=str(number).encode())
        )
    await asyncio.gather(*sends)


async def connect(bootstrap: str) -> AIOKafkaProducer:
    """A started producer; waits for the broker (it may still be starting)."""
    while True:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
        try:
            await producer.start()
            return producer
        except KafkaConnectionError:
            await producer.stop()
            log(f"waiting for Kafka at {bootstrap}")
            await asyncio.sleep(2)


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    producer = await connect(args.bootstrap)
    try:
        await ensure_topic(args.bootstrap, args.topic, args.partitions)
        while True:
            await burst(producer, args.topic, args.burst, args.size)
            log(f"produced {args.burst} orders to {args.topic}")
            if args.once:
                return 0
            log(f"next burst in {args.interval:.0f}s")
            await asyncio.sleep(args.interval)
    finally:
        await producer.stop()


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(0)
