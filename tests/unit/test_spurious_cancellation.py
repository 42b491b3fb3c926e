"""A CancelledError that a client library raises into a poll (aiormq does, for the futures of
a connection it loses) is a failed poll, not the end of the object's loop; a cancellation the
task was asked for still stops it."""

from __future__ import annotations

import asyncio

import pytest

from autoscale.errors import ScalerUnavailableError
from autoscale.loop import _sample_or_fail
from autoscale.scalers.base import MetricSample


class _Scaler:
    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour

    async def sample(self) -> MetricSample:
        if self.behaviour == "library-cancels":
            future: asyncio.Future[MetricSample] = asyncio.get_running_loop().create_future()
            future.cancel()  # what aiormq does to a request when its connection drops
            return await future
        await asyncio.sleep(3600)
        raise AssertionError("not reached")

    async def aclose(self) -> None:
        pass


async def test_a_cancellation_nobody_asked_for_is_a_failed_poll() -> None:
    with pytest.raises(ScalerUnavailableError, match="connection lost"):
        await _sample_or_fail(_Scaler("library-cancels"))  # type: ignore[arg-type]


async def test_the_poll_timeout_is_still_a_timeout() -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await _sample_or_fail(_Scaler("hangs"))  # type: ignore[arg-type]


async def test_stopping_the_loop_still_cancels_it() -> None:
    task = asyncio.create_task(_sample_or_fail(_Scaler("hangs")))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
