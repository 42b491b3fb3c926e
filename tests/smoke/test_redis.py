"""The bench's Redis is real: streams, consumer groups, XPENDING and XINFO GROUPS (with the
Redis 7 `lag` field), through redis.asyncio as the redis-streams scaler reads them."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from tests.testbed.services import Redis

pytestmark = pytest.mark.testbed


async def test_stream_pending_entries_and_group_lag(redis_server: Redis, unique_name: str) -> None:
    client = aioredis.from_url(redis_server.url, decode_responses=True)
    async with client:
        stream, group = unique_name, "workers"
        for i in range(10):
            await client.xadd(stream, {"job": str(i)})
        await client.xgroup_create(stream, group, id="0")
        delivered = await client.xreadgroup(group, "consumer-1", {stream: ">"}, count=4)
        assert len(delivered[0][1]) == 4

        pending = await client.xpending(stream, group)
        assert pending["pending"] == 4
        assert pending["consumers"] == [{"name": "consumer-1", "pending": 4}]

        [info] = await client.xinfo_groups(stream)
        assert info["name"] == group
        assert info["pending"] == 4
        assert info["lag"] == 6  # entries not yet delivered to the group
        assert await client.xlen(stream) == 10
        await client.delete(stream)
