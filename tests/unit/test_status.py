"""Status building: condition transitions keep their time, order is KEDA's, health is KEDA's."""

from __future__ import annotations

import pytest

from autoscale import status


def test_rfc3339_is_whole_seconds_utc() -> None:
    assert status.rfc3339(0) == "1970-01-01T00:00:00Z"
    assert status.rfc3339(1_700_000_000.9) == "2023-11-14T22:13:20Z"


def test_unchanged_status_keeps_its_transition_time() -> None:
    first = status.merge_conditions(None, [status.active(True)], now=100)
    again = status.merge_conditions(first, [status.active(True)], now=200)
    assert again[0]["lastTransitionTime"] == status.rfc3339(100)


def test_changed_status_takes_the_new_time_and_reason() -> None:
    first = status.merge_conditions(None, [status.active(True)], now=100)
    changed = status.merge_conditions(first, [status.active(False, cooldown=True)], now=200)
    assert changed[0] == {
        "type": "Active",
        "status": "False",
        "reason": "ScalerCooldown",
        "message": "Triggers are not active; waiting out the cooldown period",
        "lastTransitionTime": status.rfc3339(200),
    }


def test_conditions_come_in_kedas_order_and_others_are_kept() -> None:
    existing = [{"type": "Custom", "status": "True", "reason": "X", "message": "m"}]
    merged = status.merge_conditions(
        existing,
        [status.paused(False), status.fallback(False), status.active(False), status.ready()],
        now=1,
    )
    assert [c["type"] for c in merged] == ["Ready", "Active", "Fallback", "Paused", "Custom"]


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        pytest.param(status.ready(), ("Ready", "True", "ScaledObjectReady"), id="ready"),
        pytest.param(
            status.not_ready("ScaleTargetNotFound", "gone"),
            ("Ready", "False", "ScaleTargetNotFound"),
            id="not-ready",
        ),
        pytest.param(status.active(True), ("Active", "True", "ScalerActive"), id="active"),
        pytest.param(status.active(False), ("Active", "False", "ScalerNotActive"), id="inactive"),
        pytest.param(
            status.fallback(True, ["s0-x"]), ("Fallback", "True", "FallbackExists"), id="fallback"
        ),
        pytest.param(
            status.fallback(False), ("Fallback", "False", "NoFallbackFound"), id="no-fallback"
        ),
        pytest.param(status.paused(True, 3), ("Paused", "True", "ScaledObjectPaused"), id="paused"),
        pytest.param(
            status.paused(False), ("Paused", "False", "ScaledObjectUnpaused"), id="unpaused"
        ),
    ],
)
def test_condition_reasons_are_kedas(
    condition: status.Condition, expected: tuple[str, str, str]
) -> None:
    assert (condition.type, condition.status, condition.reason) == expected


def test_paused_message_names_the_count_and_forced_activity_says_so() -> None:
    assert status.paused(True, 3).message == "ScaledObject is paused at 3 replicas"
    assert "force-activation" in status.active(True, forced=True).message


def test_health_is_happy_or_failing_per_metric() -> None:
    assert status.health({"s1-b": 2}, ["s0-a", "s1-b"]) == {
        "s0-a": {"numberOfFailures": 0, "status": "Happy"},
        "s1-b": {"numberOfFailures": 2, "status": "Failing"},
    }


def _body(counts: dict[str, int], **extra: object) -> dict[str, object]:
    """A status body whose only moving parts are the failure counts (and `extra`)."""
    failing = {name: n for name, n in counts.items() if n}
    engine: dict[str, object] = {"history": {"up": [], "down": []}}
    if failing:
        engine["failures"] = failing
    return {
        "conditions": [{"type": "Ready", "status": "False", "reason": "TriggerError"}],
        "health": status.health(counts, sorted(counts)),
        "engine": engine,
        **extra,
    }


@pytest.mark.parametrize(
    ("before", "after", "settled", "deferrable"),
    [
        pytest.param({"s0": 4}, {"s0": 5}, 4, True, id="past-the-threshold"),
        pytest.param({"s0": 40}, {"s0": 41}, 1, True, id="no-fallback-any-failure-is-settled"),
        pytest.param({"s0": 3}, {"s0": 4}, 4, False, id="reaching-the-threshold"),
        pytest.param({"s0": 0}, {"s0": 1}, 1, False, id="first-failure"),
        pytest.param({"s0": 9}, {"s0": 0}, 4, False, id="recovered"),
        pytest.param({"s0": 5, "s1": 0}, {"s0": 6, "s1": 1}, 4, False, id="another-starts"),
        pytest.param({"s0": 5, "s1": 7}, {"s0": 6, "s1": 8}, 4, True, id="both-settled"),
        pytest.param({"s0": 5}, {"s0": 5}, 4, False, id="nothing-changed"),
    ],
)
def test_which_failure_count_changes_can_wait(
    before: dict[str, int], after: dict[str, int], settled: int, deferrable: bool
) -> None:
    """Only counts past the one that decides fallback may be written later; every change of
    failing or not, and reaching the threshold, is written at once."""
    assert status.only_refreshes_changed(_body(before), _body(after), settled) is deferrable


def test_a_failure_count_never_hides_another_change() -> None:
    """Anything besides the counts (here the replica count at start) must be written."""
    before = _body({"s0": 9}, originalReplicaCount=2)
    after = _body({"s0": 10}, originalReplicaCount=3)
    assert not status.only_refreshes_changed(before, after, 1)
    assert not status.only_refreshes_changed(None, after, 1)


def test_last_active_time_of_an_object_that_stays_active_can_wait() -> None:
    """lastActiveTime moving on while active is deferrable; appearing (first activity) is not,
    and neither is anything that comes with becoming inactive (the Active condition)."""
    before = _body({"s0": 0}, lastActiveTime="2026-12-07T09:00:00Z")
    before["engine"] = {"history": {}, "lastActiveTime": 1_800_000_000.0}
    after = _body({"s0": 0}, lastActiveTime="2026-12-07T09:00:30Z")
    after["engine"] = {"history": {}, "lastActiveTime": 1_800_000_030.0}
    assert status.only_refreshes_changed(before, after, 1)
    first = _body({"s0": 0})
    first["engine"] = {"history": {}}
    assert not status.only_refreshes_changed(first, after, 1)
    inactive = {**after, "conditions": [{"type": "Active", "status": "False"}]}
    assert not status.only_refreshes_changed(before, inactive, 1)
