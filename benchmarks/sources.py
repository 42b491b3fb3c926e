"""The scenario's event sources and objects: who reads what, and how a backlog is made to appear.

Object i (Deployment and ScaledObject `w{i:05d}`) has one trigger, by i % 3:

- 0, `redis-streams`: its own consumer group on one of a few shared streams (`s{e}`), scaled on
  the group's pending entries (pendingEntriesCount 5);
- 1, `kafka`: its own consumer group, committed at the start of one of a few shared topics
  (`t{e}`, 4 partitions), scaled on the group's lag (lagThreshold 5);
- 2, `prometheus`: a PromQL query on one of a few shared series (`bench_backlog{series="e"}`,
  served by a small exporter in the harness that Prometheus scrapes every second), threshold 5.

Within a source, object j goes to entity j % E, E = max(rounds, ceil(count / share)): a few
streams / topics / series each shared by about `share` objects, as in a real estate where many
consumers read one topic. A backlog is made on one entity of each source at a time; every object
on it reacts, and each is timed from the moment the backlog is visible in the source:

- activation (0 -> 1): backlog 3 (below the target 5: one replica);
- scale-out (1 -> 4): backlog 20 (4 x the target; Kafka topics have 4 partitions so the lag
  does not cap the replica count below 4).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.testbed.procs import LOOPBACK, free_port
from tests.testbed.services import Kafka, Prometheus, Redis

SOURCES = ("redis", "kafka", "prometheus")
TARGET = 5
ACTIVATION_BACKLOG = 3
SCALE_OUT_BACKLOG = 20
SCALE_OUT_REPLICAS = 4
PARTITIONS = 4
MAX_REPLICAS = 10


def name_of(i: int) -> str:
    return f"w{i:05d}"


@dataclass(frozen=True)
class Layout:
    """Which source and entity each of `objects` reads; pure arithmetic, O(1) per object."""

    objects: int
    share: int
    rounds: int

    def source(self, i: int) -> str:
        return SOURCES[i % 3]

    def index(self, i: int) -> int:
        """The object's position among the objects of its source (its group number)."""
        return i // 3

    def count(self, source: str) -> int:
        position = SOURCES.index(source)
        return max(0, (self.objects - position + 2) // 3)

    def entities(self, source: str) -> int:
        count = self.count(source)
        return max(1, min(count, max(self.rounds, math.ceil(count / self.share))))

    def entity(self, i: int) -> int:
        return self.index(i) % self.entities(self.source(i))

    def members(self, source: str, entity: int) -> list[int]:
        """Object numbers on one entity of a source (O(objects on it))."""
        position = SOURCES.index(source)
        step = self.entities(source)
        return [3 * j + position for j in range(entity, self.count(source), step)]


class Exporter:
    """`bench_backlog{series="e"} value` over HTTP, for Prometheus to scrape."""

    def __init__(self, series: int) -> None:
        self.values = dict.fromkeys(range(series), 0.0)
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = "".join(
                    f'bench_backlog{{series="{e}"}} {v}\n' for e, v in exporter.values.items()
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer((LOOPBACK, self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Sources:
    """The three sources of one run, set up for a layout."""

    layout: Layout
    redis: Redis
    kafka: Kafka
    prometheus: Prometheus
    exporter: Exporter | None = None
    timings: dict[str, float] = field(default_factory=dict)
    _kafka_sent: dict[int, int] = field(default_factory=dict)

    def ports(self) -> dict[str, int]:
        return {
            "redis": self.redis.port,
            "kafka": self.kafka.port,
            "prometheus": self.prometheus.port,
        }

    # --- set up ---------------------------------------------------------------------------

    def prepare(self) -> None:
        started = time.monotonic()
        self._prepare_redis()
        self.timings["redis_s"] = round(time.monotonic() - started, 2)
        started = time.monotonic()
        _run(self._prepare_kafka())
        self.timings["kafka_s"] = round(time.monotonic() - started, 2)
        started = time.monotonic()
        self._prepare_prometheus()
        self.timings["prometheus_s"] = round(time.monotonic() - started, 2)

    def _prepare_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis.url)
        pipe = client.pipeline(transaction=False)
        for j in range(self.layout.count("redis")):
            e = j % self.layout.entities("redis")
            pipe.xgroup_create(f"s{e}", f"g{j}", id="$", mkstream=True)
            if len(pipe) >= 1000:
                pipe.execute()
        pipe.execute()
        client.close()

    async def _prepare_kafka(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        from aiokafka.errors import KafkaError
        from aiokafka.protocol.commit import OffsetCommitRequest

        admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka.bootstrap)
        await admin.start()
        try:
            topics = self.layout.entities("kafka")
            await admin.create_topics(
                [
                    NewTopic(f"t{e}", num_partitions=PARTITIONS, replication_factor=1)
                    for e in range(topics)
                ]
            )
            node = None
            for attempt in range(60):  # the first lookup creates __consumer_offsets
                try:
                    node = await admin.find_coordinator("g0")
                    break
                except KafkaError:
                    await asyncio.sleep(0.5 + attempt * 0.1)
            if node is None:
                raise RuntimeError("Kafka never named a group coordinator")
            # Commit offset 0 (the start of an empty topic: lag 0) for every group, through
            # the group coordinator, many requests in flight on one connection.
            semaphore = asyncio.Semaphore(64)

            async def commit(j: int) -> None:
                topic = f"t{j % topics}"
                request = OffsetCommitRequest(
                    f"g{j}", -1, "", -1, [(topic, [(p, 0, "") for p in range(PARTITIONS)])]
                )
                async with semaphore:
                    for attempt in range(20):
                        response = await admin._send_request_to_node(node, request)
                        codes = {p[1] for t in response.topics for p in t[1]}
                        if codes == {0}:
                            return
                        await asyncio.sleep(0.25 * (attempt + 1))  # the topic is still coming up
                    raise RuntimeError(f"committing offsets of group g{j}: error codes {codes}")

            await asyncio.gather(*(commit(j) for j in range(self.layout.count("kafka"))))
        finally:
            await admin.close()

    def _prepare_prometheus(self) -> None:
        series = self.layout.entities("prometheus")
        self.exporter = Exporter(series)
        self.prometheus.add_target("bench", f"{LOOPBACK}:{self.exporter.port}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            result = self.prometheus.query("count(bench_backlog)")
            if result and int(float(result[0]["value"][1])) == series:
                return
            time.sleep(0.5)
        raise RuntimeError("Prometheus never scraped the bench exporter")

    def stop(self) -> None:
        if self.exporter is not None:
            self.exporter.stop()

    # --- triggers -------------------------------------------------------------------------

    def trigger(self, i: int) -> dict[str, Any]:
        """The object's trigger, in KEDA's metadata (both operators read the same)."""
        source, j, e = self.layout.source(i), self.layout.index(i), self.layout.entity(i)
        if source == "redis":
            return {
                "type": "redis-streams",
                "metadata": {
                    "address": f"{LOOPBACK}:{self.redis.port}",
                    "stream": f"s{e}",
                    "consumerGroup": f"g{j}",
                    "pendingEntriesCount": str(TARGET),
                },
            }
        if source == "kafka":
            return {
                "type": "kafka",
                "metadata": {
                    "bootstrapServers": self.kafka.bootstrap,
                    "consumerGroup": f"g{j}",
                    "topic": f"t{e}",
                    "lagThreshold": str(TARGET),
                },
            }
        return {
            "type": "prometheus",
            "metadata": {
                "serverAddress": self.prometheus.url,
                "query": f'sum(bench_backlog{{series="{e}"}})',
                "threshold": str(TARGET),
            },
        }

    # --- backlog --------------------------------------------------------------------------

    def make_backlog(self, source: str, entity: int, total: int) -> dict[int, float]:
        """Raise the backlog of every object on `entity` to `total`; object -> wall time seen.

        The time is when the source shows the backlog (Redis: the group's entries delivered;
        Kafka: the records acknowledged; Prometheus: the query returns it after a scrape).
        """
        members = self.layout.members(source, entity)
        if source == "redis":
            return self._redis_backlog(entity, members, total)
        if source == "kafka":
            seen = _run(self._kafka_backlog(entity, total))
            return dict.fromkeys(members, seen)
        assert self.exporter is not None
        self.exporter.values[entity] = float(total)
        query = f'sum(bench_backlog{{series="{entity}"}})'
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            result = self.prometheus.query(query)
            if result and float(result[0]["value"][1]) == total:
                break
            time.sleep(0.05)
        return dict.fromkeys(members, time.time())

    def _redis_backlog(self, entity: int, members: list[int], total: int) -> dict[int, float]:
        import redis

        client = redis.Redis.from_url(self.redis.url)
        stream = f"s{entity}"
        have = client.xlen(stream)
        for n in range(max(0, total - have)):
            client.xadd(stream, {"n": n})
        seen: dict[int, float] = {}
        for i in members:
            group = f"g{self.layout.index(i)}"
            client.xreadgroup(group, "bench", {stream: ">"})
            seen[i] = time.time()
        client.close()
        return seen

    async def _kafka_backlog(self, entity: int, total: int) -> float:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=self.kafka.bootstrap)
        await producer.start()
        try:
            topic = f"t{entity}"
            have = self._kafka_sent.get(entity, 0)
            futures = [
                await producer.send(topic, b"job", partition=n % PARTITIONS)
                for n in range(have, total)
            ]
            for future in futures:
                await future
            self._kafka_sent[entity] = max(have, total)
            return time.time()
        finally:
            await producer.stop()


def _run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)
