"""CPU per poll of the kafka, redis-streams and prometheus scalers, many on one shared client.

    .venv/bin/python -m benchmarks.coalescing                         # 1,000 scalers per source
    .venv/bin/python -m benchmarks.coalescing --scalers 1000 --rate 333 --rounds 3
    PYTHONPATH=/path/to/other/checkout:. .venv/bin/python -m benchmarks.coalescing  # compare

Starts its own Redis, Kafka and Prometheus from the bench (tests/testbed) in a temporary
directory and stops them at the end. Per source, `--scalers` scalers share one operator's
SharedClients: scaler i reads entity i % --entities (a stream with a consumer group, a topic
with 3 partitions and consumer group i % --groups, the query `vector(i % --entities)`). After
a warm-up round (connections, metadata), `--rounds` rounds are measured in two shapes:

- spread: the polls of a round start evenly over N / --rate seconds (the operator spreads its
  objects' ticks over the polling interval: 10,000 objects every 30 s is 333 polls/s);
- burst: every poll of a round starts at once (the worst case, and the best for coalescing).

Reported per source and shape: process CPU seconds (all threads) per 1,000 polls, and round
trips sent per poll, counted on the client side (Kafka: requests through the shared
AIOKafkaClient's `send`; Redis: packed sends of any redis-py connection; Prometheus: its own
`prometheus_http_requests_total` for /api/v1/query). The autoscale package used is whichever
`import autoscale` finds (printed), so the same script measures two checkouts side by side.
A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import autoscale
from autoscale.scalers.connections import SharedClients
from autoscale.scalers.kafka import KafkaScaler
from autoscale.scalers.prometheus import PrometheusScaler
from autoscale.scalers.redis_streams import RedisStreamsScaler
from tests.testbed import start_service
from tests.testbed.procs import LOOPBACK

Scaler = KafkaScaler | RedisStreamsScaler | PrometheusScaler


async def run_round(scalers: list[Any], rate: float | None) -> tuple[float, float, int]:
    """Poll every scaler once (spread at `rate` polls/s, or all at once): CPU s, wall s, errors."""
    cpu, wall = time.process_time(), time.monotonic()
    tasks = []
    for i, scaler in enumerate(scalers):
        if rate is not None:
            delay = wall + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(scaler.sample()))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = sum(isinstance(r, BaseException) for r in results)
    if errors:
        first = next(r for r in results if isinstance(r, BaseException))
        print(f"    {errors} errors, e.g. {type(first).__name__}: {first}", file=sys.stderr)
    return time.process_time() - cpu, time.monotonic() - wall, errors


async def measure(
    name: str,
    scalers: list[Any],
    round_trips: Callable[[], float],
    args: argparse.Namespace,
    install_counter: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    await run_round(scalers, None)  # warm-up: leases, connections, metadata
    if install_counter is not None:
        await install_counter()
    figures: dict[str, Any] = {}
    for shape, rate in (("spread", args.rate), ("burst", None)):
        cpu = wall = 0.0
        errors = 0
        sent = round_trips()
        for _ in range(args.rounds):
            c, w, e = await run_round(scalers, rate)
            cpu, wall, errors = cpu + c, wall + w, errors + e
        polls = len(scalers) * args.rounds
        figures[shape] = {
            "cpu_s_per_1000_polls": round(cpu / polls * 1000, 3),
            "round_trips_per_poll": round((round_trips() - sent) / polls, 3),
            "wall_s": round(wall, 2),
            "errors": errors,
        }
        print(f"  {name:10} {shape:6} {figures[shape]}", flush=True)
    await asyncio.gather(*(s.aclose() for s in scalers))
    return figures


async def bench_redis(port: int, args: argparse.Namespace) -> dict[str, Any]:
    import redis.asyncio as aioredis
    from redis.asyncio.connection import AbstractConnection

    admin = aioredis.Redis(host=LOOPBACK, port=port)
    for e in range(args.entities):
        stream = f"bench-{e}"
        for n in range(10):
            await admin.xadd(stream, {"n": str(n)})
        await admin.xgroup_create(stream, "workers", id="0")
        await admin.xreadgroup("workers", "w", {stream: ">"}, count=4)
    await admin.aclose()
    connections = SharedClients()
    modes = ({}, {"consumerGroup": "workers"}, {"consumerGroup": "workers", "lagCount": "5"})
    scalers = [
        RedisStreamsScaler.from_trigger(
            trigger_index=0,
            trigger_name=None,
            metadata={
                "address": f"{LOOPBACK}:{port}",
                "stream": f"bench-{i % args.entities}",
                **modes[i % 3],
            },
            auth_params={},
            resolved_env={},
            connections=connections,
        )
        for i in range(args.scalers)
    ]
    sends = [0]
    original = AbstractConnection.send_packed_command

    async def counted(self: Any, command: Any, check_health: bool = True) -> None:
        sends[0] += 1
        await original(self, command, check_health)

    AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
    try:
        return await measure("redis", scalers, lambda: sends[0], args)
    finally:
        AbstractConnection.send_packed_command = original  # type: ignore[method-assign]
        await connections.aclose()


async def bench_kafka(bootstrap: str, args: argparse.Namespace) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import GroupCoordinatorNotAvailableError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    while True:  # a fresh broker has no group coordinator until its offsets topic exists
        try:
            await admin.find_coordinator("bench-probe")
            break
        except GroupCoordinatorNotAvailableError:
            await asyncio.sleep(0.2)
    topics = [f"bench-{e}" for e in range(args.entities)]
    await admin.create_topics([NewTopic(t, 3, 1) for t in topics])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    for t in topics:
        for p in range(3):
            for _ in range(5):
                await producer.send(t, b"x", partition=p)
    await producer.stop()

    async def commit(g: int) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=f"bench-g{g}", enable_auto_commit=False
        )
        await consumer.start()
        try:
            mine = [TopicPartition(t, p) for i, t in enumerate(topics) for p in range(3)]
            mine = [tp for tp in mine if int(tp.topic.split("-")[1]) % args.groups == g]
            consumer.assign(mine)
            await consumer.commit(dict.fromkeys(mine, 2))
        finally:
            await consumer.stop()

    for start in range(0, args.groups, 20):
        await asyncio.gather(*(commit(g) for g in range(start, min(args.groups, start + 20))))
    connections = SharedClients()
    scalers = [
        KafkaScaler.from_trigger(
            trigger_index=0,
            trigger_name=None,
            metadata={
                "bootstrapServers": bootstrap,
                "topic": topics[i % args.entities],
                "consumerGroup": f"bench-g{(i % args.entities) % args.groups}",
            },
            auth_params={},
            resolved_env={},
            connections=connections,
        )
        for i in range(args.scalers)
    ]
    sends = [0]

    async def install() -> None:
        lease = scalers[0]._lease
        assert lease is not None
        client = lease.client.client
        original = client.send

        async def counted(node_id: int, request: Any, **kwargs: Any) -> Any:
            sends[0] += 1
            return await original(node_id, request, **kwargs)

        client.send = counted

    try:
        return await measure("kafka", scalers, lambda: sends[0], args, install)
    finally:
        await connections.aclose()


async def bench_prometheus(url: str, args: argparse.Namespace) -> dict[str, Any]:
    def answered() -> float:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
            text = response.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("prometheus_http_requests_total{")
            and 'handler="/api/v1/query"' in line
        )

    connections = SharedClients()
    scalers = [
        PrometheusScaler.from_trigger(
            trigger_index=0,
            trigger_name=None,
            metadata={
                "serverAddress": url,
                "threshold": "10",
                "query": f"vector({i % args.entities})",
            },
            auth_params={},
            resolved_env={},
            connections=connections,
        )
        for i in range(args.scalers)
    ]
    try:
        return await measure("prometheus", scalers, answered, args)
    finally:
        await connections.aclose()


async def main_async(args: argparse.Namespace, services: dict[str, Any]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if "redis" in services:
        results["redis"] = await bench_redis(services["redis"].port, args)
    if "kafka" in services:
        results["kafka"] = await bench_kafka(services["kafka"].bootstrap, args)
    if "prometheus" in services:
        results["prometheus"] = await bench_prometheus(services["prometheus"].url, args)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scalers", type=int, default=1000, help="scalers per source")
    parser.add_argument("--entities", type=int, default=100, help="streams/topics/queries")
    parser.add_argument("--groups", type=int, default=100, help="Kafka consumer groups")
    parser.add_argument("--rate", type=float, default=333.0, help="polls/s in spread rounds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sources", default="redis,kafka,prometheus")
    parser.add_argument("--output", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"autoscale from {Path(autoscale.__file__).parent}", flush=True)
    with tempfile.TemporaryDirectory(prefix="coalescing-bench-") as workdir:
        services: dict[str, Any] = {}
        try:
            for name in args.sources.split(","):
                services[name] = start_service(name, Path(workdir))
            results = asyncio.run(main_async(args, services))
        finally:
            for service in services.values():
                service.stop()
    results["autoscale"] = str(Path(autoscale.__file__).parent)
    results["args"] = vars(args) | {"output": str(args.output)}
    if args.output is not None:
        args.output.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
