"""The batching logic under kafka's coalesced reads (`kafka._Batch`), with a fetch function of
the test's own: which reads share a fetch, who gets which value, and whose poll an error fails.
(That the requests reach a real broker as one per group and per leader is proven in
tests/integration/test_kafka.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from autoscale.errors import ScalerQueryError, ScalerUnavailableError
from autoscale.scalers import kafka


class Source:
    """A fetch that records the keys of every call and answers `values` (an exception for a
    key fails that key; `fail` fails the whole call); `gate`, when set, holds the answer."""

    def __init__(self, values: Mapping[str, Any], fail: BaseException | None = None) -> None:
        self.values = dict(values)
        self.fail = fail
        self.calls: list[dict[str, Any]] = []
        self.gate: asyncio.Event | None = None
        self.called = asyncio.Event()

    async def fetch(self, keys: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(dict(keys))
        self.called.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return {key: self.values[key] for key in keys if key in self.values}


def batch(source: Source) -> tuple[kafka._Batch[str, Any], set[asyncio.Task[None]]]:
    tasks: set[asyncio.Task[None]] = set()
    return kafka._Batch(source.fetch, window=0.0, tasks=tasks), tasks


async def test_reads_in_one_window_share_one_fetch_and_get_their_own_keys() -> None:
    source = Source({"a": 1, "b": 2, "c": 3})
    reads, _ = batch(source)
    results = await asyncio.gather(
        reads.read({"a": "leader-1"}), reads.read({"b": "leader-2", "c": "leader-1"})
    )
    assert results == [{"a": 1}, {"b": 2, "c": 3}]
    assert source.calls == [{"a": "leader-1", "b": "leader-2", "c": "leader-1"}]


async def test_a_key_the_source_leaves_out_is_left_out() -> None:
    source = Source({"a": 1})
    reads, _ = batch(source)
    assert await reads.read({"a": None, "gone": None}) == {"a": 1}


async def test_a_failed_key_fails_only_the_reads_of_that_key() -> None:
    missing = ScalerQueryError('topic "t" does not exist')
    source = Source({"a": 1, "t": missing})
    reads, _ = batch(source)
    results = await asyncio.gather(
        reads.read({"a": None}), reads.read({"a": None, "t": None}), return_exceptions=True
    )
    assert results == [{"a": 1}, missing]
    assert len(source.calls) == 1


async def test_a_failed_fetch_fails_every_read_of_its_batch() -> None:
    down = ScalerUnavailableError("broker down")
    source = Source({}, fail=down)
    reads, _ = batch(source)
    results = await asyncio.gather(
        reads.read({"a": None}), reads.read({"b": None}), return_exceptions=True
    )
    assert results == [down, down]


async def test_a_read_after_the_batch_was_sent_starts_the_next_one() -> None:
    source = Source({"a": 1})
    source.gate = asyncio.Event()
    reads, _ = batch(source)
    first = asyncio.ensure_future(reads.read({"a": None}))
    await source.called.wait()  # the first batch is being fetched
    second = asyncio.ensure_future(reads.read({"a": None}))
    source.gate.set()
    assert await asyncio.gather(first, second) == [{"a": 1}, {"a": 1}]
    assert len(source.calls) == 2


async def test_a_reader_that_gives_up_leaves_the_fetch_to_the_others() -> None:
    source = Source({"a": 1})
    source.gate = asyncio.Event()
    reads, _ = batch(source)
    impatient = asyncio.ensure_future(reads.read({"a": None}))
    patient = asyncio.ensure_future(reads.read({"a": None}))
    await source.called.wait()
    impatient.cancel()
    source.gate.set()
    assert await patient == {"a": 1}
    with pytest.raises(asyncio.CancelledError):
        await impatient


async def test_closing_fails_the_reads_waiting() -> None:
    source = Source({"a": 1})
    source.gate = asyncio.Event()
    reads, tasks = batch(source)
    waiting = asyncio.ensure_future(reads.read({"a": None}))
    await source.called.wait()
    for task in list(tasks):
        task.cancel()
    with pytest.raises(ScalerUnavailableError, match="closed"):
        await waiting


async def test_closing_during_the_window_fails_the_reads_collected() -> None:
    source = Source({"a": 1})
    tasks: set[asyncio.Task[None]] = set()
    reads = kafka._Batch(source.fetch, window=3600.0, tasks=tasks)
    waiting = asyncio.ensure_future(reads.read({"a": None}))
    while not tasks:  # noqa: ASYNC110  (the read has opened its batch)
        await asyncio.sleep(0)
    for task in list(tasks):
        task.cancel()
    with pytest.raises(ScalerUnavailableError, match="closed"):
        await waiting
    assert source.calls == []
