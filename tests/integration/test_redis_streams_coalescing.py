"""redis-streams auto-pipelining against the bench's real Redis: many scalers on one shared
client, polled concurrently, each get their own exact value (or their own error) while the
client sends fewer round trips than there are polls, on one connection.

Round trips are counted on the client side (every command or pipeline redis-py sends is one
`send_packed_command` call on a connection): the server's `INFO commandstats` counts commands,
not round trips.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection

from autoscale.errors import ScalerQueryError
from autoscale.scalers.base import MetricSample
from autoscale.scalers.connections import SharedClients, coalescing_counters
from autoscale.scalers.redis_streams import RedisStreamsScaler
from tests.testbed.procs import LOOPBACK
from tests.testbed.services import Redis

pytestmark = pytest.mark.testbed


@pytest.fixture
async def connections() -> AsyncIterator[SharedClients]:
    pool = SharedClients()
    yield pool
    await pool.aclose()


@pytest.fixture
async def admin(redis_server: Redis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(host=LOOPBACK, port=redis_server.port)
    yield client
    await client.aclose()


class RoundTrips:
    """Every packed send of every redis-py asyncio connection, and which connection sent it."""

    def __init__(self) -> None:
        self.count = 0
        self.connections: set[int] = set()


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> RoundTrips:
    seen = RoundTrips()
    original = AbstractConnection.send_packed_command

    async def counted(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        seen.count += 1
        seen.connections.add(id(self))
        await original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
    return seen


def make(port: int, connections: SharedClients, metadata: dict[str, str]) -> RedisStreamsScaler:
    return RedisStreamsScaler.from_trigger(
        trigger_index=0,
        trigger_name=None,
        metadata={"address": f"{LOOPBACK}:{port}", **metadata},
        auth_params={},
        resolved_env={},
        connections=connections,
    )


async def poll_all(scalers: list[RedisStreamsScaler]) -> list[MetricSample | BaseException]:
    return await asyncio.gather(*(s.sample() for s in scalers), return_exceptions=True)


async def test_concurrent_polls_share_pipelined_round_trips(
    redis_server: Redis,
    connections: SharedClients,
    admin: aioredis.Redis,
    unique_name: str,
    round_trips: RoundTrips,
) -> None:
    """30 scalers over 3 streams in all three modes, one of them on a missing group: every
    value exact, the missing group an error of its own poll only, and the whole round in
    fewer round trips than polls, on one connection."""
    streams = [f"{unique_name}-{i}" for i in range(3)]
    try:
        for i, stream in enumerate(streams):
            for n in range(5 + i):
                await admin.xadd(stream, {"n": str(n)})
            await admin.xgroup_create(stream, "workers", id="0")
            await admin.xreadgroup("workers", "w1", {stream: ">"}, count=2 + i)
        expected: list[float | type[Exception]] = []
        scalers = []
        for _ in range(3):
            for i, stream in enumerate(streams):
                scalers.append(make(redis_server.port, connections, {"stream": stream}))
                expected.append(5 + i)  # XLEN
                scalers.append(
                    make(
                        redis_server.port,
                        connections,
                        {"stream": stream, "consumerGroup": "workers"},
                    )
                )
                expected.append(2 + i)  # XPENDING: read, not acknowledged
                scalers.append(
                    make(
                        redis_server.port,
                        connections,
                        {"stream": stream, "consumerGroup": "workers", "lagCount": "1"},
                    )
                )
                expected.append(3)  # XINFO GROUPS lag: 5 + i entries, 2 + i delivered
        scalers.append(
            make(redis_server.port, connections, {"stream": streams[0], "consumerGroup": "nope"})
        )
        expected.append(ScalerQueryError)
        assert len(scalers) == 28

        await poll_all(scalers)  # connects, leases the shared client
        round_trips.count = 0
        round_trips.connections.clear()
        counters = coalescing_counters("redis")
        reads, sent = counters.reads, counters.round_trips

        results = await poll_all(scalers)

        for result, want in zip(results, expected, strict=True):
            if isinstance(want, type):
                assert isinstance(result, want), result
                assert "NOGROUP" in str(result)
                assert '"nope"' in str(result)
            else:
                assert isinstance(result, MetricSample), result
                assert result.value == want
        assert round_trips.count < len(scalers)
        assert len(round_trips.connections) == 1
        assert counters.reads - reads == len(scalers)
        assert counters.round_trips - sent == round_trips.count
    finally:
        await asyncio.gather(*(s.aclose() for s in scalers))
        await admin.delete(*streams)


async def test_a_lone_poll_is_one_round_trip(
    redis_server: Redis,
    connections: SharedClients,
    admin: aioredis.Redis,
    unique_name: str,
    round_trips: RoundTrips,
) -> None:
    """With nothing else queued, a poll is sent at once: one round trip, lag mode's two
    commands in it, and the next poll reads the stream again (nothing is cached)."""
    await admin.xadd(unique_name, {"n": "0"})
    await admin.xgroup_create(unique_name, "workers", id="0")
    scaler = make(
        redis_server.port,
        connections,
        {"stream": unique_name, "consumerGroup": "workers", "lagCount": "5"},
    )
    try:
        assert (await scaler.sample()).value == 1
        round_trips.count = 0
        await admin.xadd(unique_name, {"n": "1"})
        assert (await scaler.sample()).value == 2
        assert round_trips.count == 2  # the admin's XADD and the poll's pipeline
    finally:
        await scaler.aclose()
        await admin.delete(unique_name)
