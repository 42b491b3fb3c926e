"""Resuming a loop from the status it wrote: the cooldown never ends early after a restart."""

from __future__ import annotations

from autoscale import loop, replicas

WRITTEN = 1_800_000_000.0  # lastActiveTime in the status
ACTIVE = [{"type": "Active", "status": "True", "reason": "ScalerActive"}]
INACTIVE = [{"type": "Active", "status": "False", "reason": "ScalerCooldown"}]


def _resume(
    conditions: list[dict[str, str]], now: float, last: float | None = WRITTEN
) -> float | None:
    engine = replicas.EngineState(last_active_time=last)
    resumed = loop.resumed_engine(engine, conditions, now=now, polling_interval=30)
    return resumed.last_active_time


def test_active_at_the_last_write_counts_from_the_latest_moment_it_can_have_been_active() -> None:
    """Written at most STATUS_REFRESH before the object's last active poll (one interval more):
    the cooldown counts from there, or from now if that is earlier."""
    latest = WRITTEN + loop.STATUS_REFRESH + 30
    assert _resume(ACTIVE, now=WRITTEN + 5) == WRITTEN + 5
    assert _resume(ACTIVE, now=WRITTEN + 3600) == latest


def test_inactive_at_the_last_write_keeps_the_exact_time() -> None:
    """Becoming inactive is written at once, with the last active poll's time: nothing to add."""
    assert _resume(INACTIVE, now=WRITTEN + 3600) == WRITTEN
    assert _resume([], now=WRITTEN + 3600) == WRITTEN


def test_never_active_stays_never_active() -> None:
    assert _resume(ACTIVE, now=WRITTEN, last=None) is None


def test_a_clock_behind_the_status_never_moves_the_time_back() -> None:
    assert _resume(ACTIVE, now=WRITTEN - 100) == WRITTEN
