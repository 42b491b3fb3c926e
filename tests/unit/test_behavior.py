"""The HPA behavior: parsing with defaults, stabilization, rate policies, event history."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscale.behavior import (
    SCALE_DOWN_DEFAULTS,
    SCALE_UP_DEFAULTS,
    Behavior,
    History,
    HPAScalingPolicy,
    HPAScalingRules,
    PolicyType,
    SelectPolicy,
    limit_rate,
    parse_behavior,
    record_scale,
    stabilize,
)
from autoscale.errors import ConfigError
from autoscale.model import freeze

NOW = 1000.0
PATH = "spec.advanced.horizontalPodAutoscalerConfig.behavior"


def pods(value: int, period: int = 15) -> HPAScalingPolicy:
    return HPAScalingPolicy(type=PolicyType.PODS, value=value, period_seconds=period)


def percent(value: int, period: int = 15) -> HPAScalingPolicy:
    return HPAScalingPolicy(type=PolicyType.PERCENT, value=value, period_seconds=period)


def rules(
    *policies: HPAScalingPolicy, window: int = 0, select: SelectPolicy = SelectPolicy.MAX
) -> HPAScalingRules:
    return HPAScalingRules(
        stabilization_window_seconds=window, select_policy=select, policies=policies
    )


def windows(up: int, down: int) -> Behavior:
    return Behavior(
        scale_up=replace(SCALE_UP_DEFAULTS, stabilization_window_seconds=up),
        scale_down=replace(SCALE_DOWN_DEFAULTS, stabilization_window_seconds=down),
    )


# ---------------------------------------------------------------------------------------------
# parse_behavior
# ---------------------------------------------------------------------------------------------


def test_defaults_are_the_hpas() -> None:
    """Absent behavior: up 0 s window, max(4 pods, 100 %) per 15 s; down 300 s, 100 % per 15 s."""
    assert parse_behavior(None) == Behavior(
        scale_up=rules(pods(4), percent(100)),
        scale_down=rules(percent(100), window=300),
    )
    assert Behavior().scale_up.tolerance == Behavior().scale_down.tolerance == 0.1
    assert (Behavior().longest_window, Behavior().longest_period) == (300, 15)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param({}, Behavior(), id="empty"),
        pytest.param({"scaleUp": None, "scaleDown": None}, Behavior(), id="null-directions"),
        pytest.param(
            {"scaleDown": {"stabilizationWindowSeconds": 60}},
            Behavior(scale_down=rules(percent(100), window=60), idle_window=True),
            id="down-window-only",
        ),
        pytest.param(
            {"scaleDown": {"stabilizationWindowSeconds": 0}},
            Behavior(scale_down=rules(percent(100), window=0), idle_window=True),
            id="down-window-zero-kept",
        ),
        pytest.param(
            {"scaleUp": {"selectPolicy": "Disabled"}},
            Behavior(scale_up=rules(pods(4), percent(100), select=SelectPolicy.DISABLED)),
            id="up-disabled-keeps-default-policies",
        ),
        pytest.param(
            {"scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}},
            Behavior(scale_up=rules(pods(1, 60))),
            id="up-policies-replace-defaults",
        ),
        pytest.param(
            {
                "scaleDown": {
                    "selectPolicy": "Min",
                    "stabilizationWindowSeconds": 600,
                    "policies": [
                        {"type": "Percent", "value": 50, "periodSeconds": 30},
                        {"type": "Pods", "value": 2, "periodSeconds": 1800},
                    ],
                }
            },
            Behavior(
                scale_down=rules(
                    percent(50, 30), pods(2, 1800), window=600, select=SelectPolicy.MIN
                ),
                idle_window=True,
            ),
            id="down-full",
        ),
        pytest.param(
            freeze(
                {"scaleUp": {"policies": [{"type": "Percent", "value": 10, "periodSeconds": 5}]}}
            ),
            Behavior(scale_up=rules(percent(10, 5))),
            id="model-frozen-form",
        ),
    ],
)
def test_parse_behavior(raw: Any, expected: Behavior) -> None:
    """Each absent field takes the HPA's default for its direction; given ones replace it."""
    assert parse_behavior(raw) == expected


@pytest.mark.parametrize(
    ("tolerance", "expected"),
    [
        pytest.param(0, 0.0, id="int-0"),
        pytest.param(0.05, 0.05, id="float"),
        pytest.param("0.05", 0.05, id="decimal-string"),
        pytest.param("50m", 0.05, id="milli"),
        pytest.param("5e-2", 0.05, id="exponent"),
        pytest.param("500u", 0.0005, id="micro"),
        pytest.param("1", 1.0, id="one"),
        pytest.param(".5", 0.5, id="leading-dot"),
    ],
)
def test_parse_tolerance(tolerance: Any, expected: float) -> None:
    """tolerance is a Kubernetes quantity, per direction (KEP-4951)."""
    raw = {"scaleUp": {"tolerance": tolerance}, "scaleDown": {"tolerance": tolerance}}
    parsed = parse_behavior(raw)
    assert parsed.scale_up.tolerance == parsed.scale_down.tolerance == expected
    assert parsed.scale_up.policies == SCALE_UP_DEFAULTS.policies


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param("Max", f"{PATH}: must be an object", id="not-a-map"),
        pytest.param({"scaleup": {}}, f"{PATH}: unknown field 'scaleup'", id="unknown-direction"),
        pytest.param({"scaleUp": []}, f"{PATH}.scaleUp: must be an object", id="rules-not-a-map"),
        pytest.param(
            {"scaleUp": {"window": 1}}, f"{PATH}.scaleUp: unknown field 'window'", id="unknown-rule"
        ),
        pytest.param(
            {"scaleDown": {"stabilizationWindowSeconds": -1}},
            f"{PATH}.scaleDown.stabilizationWindowSeconds: must be between 0 and 3600, got -1",
            id="window-negative",
        ),
        pytest.param(
            {"scaleDown": {"stabilizationWindowSeconds": 3601}},
            f"{PATH}.scaleDown.stabilizationWindowSeconds: must be between 0 and 3600, got 3601",
            id="window-too-long",
        ),
        pytest.param(
            {"scaleDown": {"stabilizationWindowSeconds": "60"}},
            f"{PATH}.scaleDown.stabilizationWindowSeconds: must be an integer, got '60'",
            id="window-string",
        ),
        pytest.param(
            {"scaleDown": {"stabilizationWindowSeconds": True}},
            f"{PATH}.scaleDown.stabilizationWindowSeconds: must be an integer, got True",
            id="window-bool",
        ),
        pytest.param(
            {"scaleDown": {"stabilizationWindowSeconds": 1.5}},
            f"{PATH}.scaleDown.stabilizationWindowSeconds: must be an integer, got 1.5",
            id="window-float",
        ),
        pytest.param(
            {"scaleUp": {"selectPolicy": "max"}},
            f"{PATH}.scaleUp.selectPolicy: must be one of Max, Min, Disabled, got 'max'",
            id="select-lowercase",
        ),
        pytest.param(
            {"scaleUp": {"policies": []}},
            f"{PATH}.scaleUp.policies: must hold at least one policy when set",
            id="policies-empty",
        ),
        pytest.param(
            {"scaleUp": {"policies": "Pods"}},
            f"{PATH}.scaleUp.policies: must be a list of policies",
            id="policies-string",
        ),
        pytest.param(
            {"scaleUp": {"policies": ["Pods"]}},
            f"{PATH}.scaleUp.policies[0]: must be an object",
            id="policy-not-a-map",
        ),
        pytest.param(
            {"scaleUp": {"policies": [{"type": "pods", "value": 1, "periodSeconds": 15}]}},
            f"{PATH}.scaleUp.policies[0].type: must be one of Pods, Percent, got 'pods'",
            id="policy-type",
        ),
        pytest.param(
            {"scaleDown": {"policies": [{"type": "Pods", "value": 0, "periodSeconds": 15}]}},
            f"{PATH}.scaleDown.policies[0].value: must be >= 1, got 0",
            id="policy-value-zero",
        ),
        pytest.param(
            {
                "scaleDown": {
                    "policies": [
                        {"type": "Pods", "value": 1, "periodSeconds": 15},
                        {"type": "Pods", "value": 1, "periodSeconds": 1801},
                    ]
                }
            },
            f"{PATH}.scaleDown.policies[1].periodSeconds: must be between 1 and 1800, got 1801",
            id="policy-period-too-long",
        ),
        pytest.param(
            {"scaleDown": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 0}]}},
            f"{PATH}.scaleDown.policies[0].periodSeconds: must be between 1 and 1800, got 0",
            id="policy-period-zero",
        ),
        pytest.param(
            {"scaleDown": {"policies": [{"type": "Pods", "periodSeconds": 15}]}},
            f"{PATH}.scaleDown.policies[0].value: required",
            id="policy-value-missing",
        ),
        pytest.param(
            {"scaleDown": {"policies": [{"type": "Pods", "value": 1, "period": 15}]}},
            f"{PATH}.scaleDown.policies[0]: unknown field 'period'",
            id="policy-unknown-field",
        ),
        pytest.param(
            {"scaleUp": {"tolerance": "-50m"}},
            f"{PATH}.scaleUp.tolerance: must not be negative, got '-50m'",
            id="tolerance-negative",
        ),
        pytest.param(
            {"scaleUp": {"tolerance": -1}},
            f"{PATH}.scaleUp.tolerance: must not be negative, got -1",
            id="tolerance-negative-int",
        ),
        pytest.param(
            {"scaleUp": {"tolerance": "ten"}},
            f"{PATH}.scaleUp.tolerance: must be a quantity such as 0.05 or 50m, got 'ten'",
            id="tolerance-word",
        ),
        pytest.param(
            {"scaleUp": {"tolerance": "5x"}},
            f"{PATH}.scaleUp.tolerance: must be a quantity such as 0.05 or 50m, got '5x'",
            id="tolerance-bad-suffix",
        ),
        pytest.param(
            {"scaleUp": {"tolerance": True}},
            f"{PATH}.scaleUp.tolerance: must be a quantity such as 0.05 or 50m, got True",
            id="tolerance-bool",
        ),
        pytest.param(
            {"scaleUp": {"tolerance": math.nan}},
            f"{PATH}.scaleUp.tolerance: must be a quantity such as 0.05 or 50m, got nan",
            id="tolerance-nan",
        ),
    ],
)
def test_parse_behavior_rejects(raw: Any, message: str) -> None:
    """A bad value is a ConfigError naming the field path, with the HPA's validation limits."""
    with pytest.raises(ConfigError) as caught:
        parse_behavior(raw)
    assert str(caught.value) == message


def test_parse_behavior_custom_path() -> None:
    """The caller can root the field path elsewhere (e.g. for a KEDA object's message)."""
    with pytest.raises(ConfigError, match=r"^x\.scaleUp\.selectPolicy: "):
        parse_behavior({"scaleUp": {"selectPolicy": "Fast"}}, path="x")


# ---------------------------------------------------------------------------------------------
# stabilize
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("behavior", "history", "current", "desired", "expected", "expected_history"),
    [
        pytest.param(
            windows(0, 300),
            History(),
            5,
            2,
            5,
            History(recommendations=((NOW, 5),), latest=2),
            id="unknown-history-seeds-current-and-holds",
        ),
        pytest.param(
            windows(0, 0),
            History(),
            5,
            2,
            2,
            History(recommendations=(), latest=2),
            id="window-0-ignores-the-seed",
        ),
        pytest.param(
            windows(0, 300),
            History(latest=2),
            2,
            6,
            6,
            History(recommendations=((NOW, 2),), latest=6),
            id="scale-up-immediate-by-default",
        ),
        pytest.param(
            windows(0, 300),
            History(recommendations=((800.0, 9), (900.0, 7)), latest=4),
            9,
            3,
            9,
            History(recommendations=((800.0, 9), (900.0, 7), (NOW, 4)), latest=3),
            id="scale-down-follows-highest-in-window",
        ),
        pytest.param(
            windows(0, 300),
            History(recommendations=((700.0, 9), (900.0, 7)), latest=4),
            9,
            3,
            7,
            History(recommendations=((900.0, 7), (NOW, 4)), latest=3),
            id="entry-at-window-edge-is-out-and-pruned",
        ),
        pytest.param(
            windows(0, 300),
            History(recommendations=((900.0, 7),), latest=3),
            7,
            3,
            7,
            History(recommendations=((900.0, 7),), latest=3),
            id="repeat-changes-nothing",
        ),
        pytest.param(
            windows(0, 300),
            History(recommendations=((100.0, 7),), latest=3),
            7,
            3,
            3,
            History(recommendations=((100.0, 7),), latest=3),
            id="repeat-keeps-stale-entries-harmlessly",
        ),
        pytest.param(
            windows(0, 300),
            History(recommendations=((900.0, 4), (950.0, 6)), latest=5),
            6,
            4,
            6,
            History(recommendations=((950.0, 6), (NOW, 5)), latest=4),
            id="one-entry-per-value",
        ),
        pytest.param(
            windows(60, 300),
            History(recommendations=((950.0, 3),), latest=8),
            3,
            10,
            3,
            History(recommendations=((950.0, 3), (NOW, 8)), latest=10),
            id="scale-up-window-takes-lowest",
        ),
        pytest.param(
            windows(60, 300),
            History(recommendations=((940.0, 3),), latest=8),
            3,
            10,
            8,
            History(recommendations=((940.0, 3), (NOW, 8)), latest=10),
            id="scale-up-window-expired-entry",
        ),
    ],
)
def test_stabilize(
    behavior: Behavior,
    history: History,
    current: int,
    desired: int,
    expected: int,
    expected_history: History,
) -> None:
    """Up takes the window's lowest, down its highest; the latest one is in force until replaced."""
    assert stabilize(behavior, history, current=current, desired=desired, now=NOW) == (
        expected,
        expected_history,
    )


@settings(deadline=None)
@given(
    up=st.integers(0, 600),
    down=st.integers(0, 600),
    entries=st.lists(st.tuples(st.floats(0, NOW), st.integers(0, 50)), max_size=8),
    latest=st.none() | st.integers(0, 50),
    current=st.integers(0, 50),
    desired=st.integers(0, 50),
)
def test_stabilize_moves_toward_desired(
    up: int,
    down: int,
    entries: list[tuple[float, int]],
    latest: int | None,
    current: int,
    desired: int,
) -> None:
    """Stabilization only slows a move: the result lies between current and desired."""
    history = History(recommendations=tuple(sorted(entries)), latest=latest)
    result, _ = stabilize(windows(up, down), history, current=current, desired=desired, now=NOW)
    assert min(current, desired) <= result <= max(current, desired)


# ---------------------------------------------------------------------------------------------
# limit_rate and record_scale
# ---------------------------------------------------------------------------------------------


def only(up: HPAScalingRules | None = None, down: HPAScalingRules | None = None) -> Behavior:
    return Behavior(scale_up=up or SCALE_UP_DEFAULTS, scale_down=down or SCALE_DOWN_DEFAULTS)


@pytest.mark.parametrize(
    ("behavior", "history", "current", "desired", "expected"),
    [
        pytest.param(Behavior(), History(), 0, 10, 4, id="up-from-0-pods-4-beats-percent-0"),
        pytest.param(Behavior(), History(), 1, 10, 5, id="up-from-1-pods"),
        pytest.param(Behavior(), History(), 10, 100, 20, id="up-from-10-percent"),
        pytest.param(Behavior(), History(), 2, 3, 3, id="up-within-limit"),
        pytest.param(
            only(up=rules(pods(4), percent(100), select=SelectPolicy.MIN)),
            History(),
            10,
            100,
            14,
            id="up-select-min",
        ),
        pytest.param(only(up=rules(percent(50))), History(), 3, 10, 5, id="up-percent-rounds-up"),
        pytest.param(only(up=rules(percent(100))), History(), 0, 10, 0, id="up-percent-from-0"),
        pytest.param(
            Behavior(),
            History(scale_up_events=((990.0, 4),)),
            8,
            30,
            8,
            id="up-events-in-period-use-the-budget",
        ),
        pytest.param(
            Behavior(),
            History(scale_up_events=((985.0, 4),)),
            8,
            30,
            16,
            id="up-event-at-period-edge-is-out",
        ),
        pytest.param(
            only(up=rules(pods(4))),
            History(scale_up_events=((990.0, 1),)),
            3,
            30,
            6,
            id="up-partial-budget-left",
        ),
        pytest.param(
            only(up=rules(pods(4))),
            History(scale_down_events=((995.0, 4),)),
            4,
            30,
            12,
            id="up-counts-removals-in-period",
        ),
        pytest.param(
            only(up=rules(pods(4), select=SelectPolicy.DISABLED)),
            History(),
            2,
            10,
            2,
            id="up-disabled",
        ),
        pytest.param(
            only(down=rules(pods(1), select=SelectPolicy.DISABLED)),
            History(),
            2,
            10,
            6,
            id="down-disabled-still-scales-up",
        ),
        pytest.param(Behavior(), History(), 10, 0, 0, id="down-default-all-at-once"),
        pytest.param(only(down=rules(pods(1, 60))), History(), 5, 0, 4, id="down-pods"),
        pytest.param(
            only(down=rules(pods(1, 60))),
            History(scale_down_events=((950.0, 1),)),
            4,
            0,
            4,
            id="down-pods-budget-used",
        ),
        pytest.param(
            only(down=rules(percent(50))), History(), 3, 0, 1, id="down-percent-truncates"
        ),
        pytest.param(
            only(down=rules(percent(7))),
            History(),
            100,
            0,
            93,
            id="down-percent-exact-where-float-says-92",
        ),
        pytest.param(
            only(down=rules(percent(150))), History(), 4, 0, 0, id="down-percent-over-100"
        ),
        pytest.param(
            only(down=rules(pods(2), percent(50))), History(), 10, 0, 5, id="down-max-change"
        ),
        pytest.param(
            only(down=rules(pods(2), percent(50), select=SelectPolicy.MIN)),
            History(),
            10,
            0,
            8,
            id="down-min-change",
        ),
        pytest.param(
            only(down=rules(pods(2))),
            History(scale_up_events=((995.0, 4),)),
            8,
            0,
            2,
            id="down-counts-additions-in-period",
        ),
        pytest.param(
            only(down=rules(select=SelectPolicy.MAX)), History(), 8, 1, 1, id="no-policies-no-limit"
        ),
        pytest.param(Behavior(), History(), 6, 6, 6, id="no-change"),
    ],
)
def test_limit_rate(
    behavior: Behavior, history: History, current: int, desired: int, expected: int
) -> None:
    """Each policy limits the change since its period began; selectPolicy picks among them."""
    assert limit_rate(behavior, history, current=current, desired=desired, now=NOW) == expected


@pytest.mark.parametrize(
    ("history", "before", "after", "expected"),
    [
        pytest.param(History(), 2, 6, History(scale_up_events=((NOW, 4),)), id="up"),
        pytest.param(History(), 6, 0, History(scale_down_events=((NOW, 6),)), id="down"),
        pytest.param(History(latest=3), 3, 3, History(latest=3), id="none"),
        pytest.param(
            History(scale_up_events=((985.0, 1), (990.0, 2)), scale_down_events=((900.0, 1),)),
            5,
            4,
            History(scale_up_events=((990.0, 2),), scale_down_events=((NOW, 1),)),
            id="prunes-past-longest-period",
        ),
    ],
)
def test_record_scale(history: History, before: int, after: int, expected: History) -> None:
    """A scale is one event; events older than the longest policy period are dropped."""
    assert record_scale(Behavior(), history, before=before, after=after, now=NOW) == expected


@pytest.mark.parametrize("direction", ["up", "down"])
@settings(max_examples=200, deadline=None)
@given(
    value=st.integers(1, 5),
    period=st.integers(1, 60),
    kind=st.sampled_from(PolicyType),
    ticks=st.lists(st.tuples(st.integers(1, 20), st.integers(0, 40)), min_size=1, max_size=40),
)
def test_policy_limits_hold_over_time(
    direction: str,
    value: int,
    period: int,
    kind: PolicyType,
    ticks: list[tuple[int, int]],
) -> None:
    """Whatever the demand, no scale changes more than its policy allows over its period."""
    policy = HPAScalingPolicy(type=kind, value=value, period_seconds=period)
    behavior = only(up=rules(policy)) if direction == "up" else only(down=rules(policy))
    history, current, now, log = History(), 20, 0.0, []
    for step, desired in ticks:
        now += step
        after = limit_rate(behavior, history, current=current, desired=desired, now=now)
        history = record_scale(behavior, history, before=current, after=after, now=now)
        start = current - sum(n for t, n in log if t > now - period)
        if direction == "up" and after > current:
            grow = start + value if kind is PolicyType.PODS else start * (100 + value) / 100
            assert after <= math.ceil(grow)
        if direction == "down" and after < current:
            shrink = start - value if kind is PolicyType.PODS else start * (100 - value) / 100
            assert after >= int(shrink)
        log.append((now, after - current))
        current = after


# ---------------------------------------------------------------------------------------------
# History in the status
# ---------------------------------------------------------------------------------------------


def test_history_status_round_trip() -> None:
    """to_status is JSON-able and from_status reads it back to an equal History."""
    history = History(
        recommendations=((850.5, 9), (990.0, 4)),
        latest=2,
        scale_up_events=((995.0, 1),),
        scale_down_events=((999.25, 3),),
    )
    status = json.loads(json.dumps(history.to_status()))
    assert status == {
        "recommendations": [[850.5, 9], [990.0, 4]],
        "latest": 2,
        "scaleUpEvents": [[995.0, 1]],
        "scaleDownEvents": [[999.25, 3]],
    }
    assert History.from_status(status) == history
    assert History.from_status(json.loads(json.dumps(History().to_status()))) == History()
    assert History.from_status(None) == History.from_status({}) == History()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param({"recommendations": [[1.0]]}, "recommendations: expected", id="short-pair"),
        pytest.param({"scaleUpEvents": [["x", 1]]}, "scaleUpEvents: expected", id="bad-time"),
        pytest.param(
            {"scaleDownEvents": [[1.0, 1.5]]}, "scaleDownEvents: replicas must be", id="float"
        ),
        pytest.param({"latest": "3"}, "latest: expected an integer", id="latest-string"),
    ],
)
def test_history_from_status_rejects(raw: dict[str, Any], message: str) -> None:
    """A malformed stored history is a ValueError, never a silently wrong window."""
    with pytest.raises(ValueError, match=f"^{message}"):
        History.from_status(raw)
