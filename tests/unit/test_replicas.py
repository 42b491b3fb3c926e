"""The scaling engine: per-trigger maths, then every rule of decide() and their interactions."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscale.behavior import Behavior, History, parse_behavior
from autoscale.errors import ConfigError
from autoscale.model import Fallback, FallbackBehavior
from autoscale.pause import Pause
from autoscale.replicas import (
    Decision,
    EngineState,
    Observation,
    Reason,
    ScalingPolicy,
    decide,
    replicas_for,
)
from autoscale.scalers.base import MetricSample, MetricType

NOW = 10_000.0
S0 = "s0-redis-streams-jobs"
S1 = "s1-kafka-orders"
AVG, VAL = MetricType.AVERAGE_VALUE, MetricType.VALUE


def s(
    value: float,
    target: float = 5.0,
    *,
    name: str = S0,
    activation: float = 0.0,
    kind: MetricType = AVG,
    cap: int | None = None,
) -> MetricSample:
    return MetricSample(
        name=name,
        value=value,
        target=target,
        activation_target=activation,
        metric_type=kind,
        replica_cap=cap,
    )


def state(
    *,
    last_active: float | None = NOW - 30,
    latest: int | None = 0,
    recs: tuple[tuple[float, int], ...] = (),
    down_events: tuple[tuple[float, int], ...] = (),
    failures: dict[str, int] | None = None,
) -> EngineState:
    """By default: active 30 s ago, with 0 in force, so no window holds anything up."""
    history = History(recommendations=recs, latest=latest, scale_down_events=down_events)
    return EngineState(last_active_time=last_active, history=history, failures=failures or {})


def want(
    replicas: int,
    reason: Reason,
    trigger: str | None = None,
    *,
    active: bool,
    fallback: bool = False,
) -> tuple[int, Reason, str | None, bool, bool]:
    return replicas, reason, trigger, active, fallback


def run(
    policy: ScalingPolicy,
    engine: EngineState,
    samples: dict[str, MetricSample | None],
    current: int,
    *,
    now: float = NOW,
    created_at: float = 0.0,
) -> tuple[Decision, EngineState]:
    observation = Observation(
        samples=samples, current_replicas=current, now=now, created_at=created_at
    )
    return decide(policy, engine, observation)


# ---------------------------------------------------------------------------------------------
# replicas_for
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "current", "expected"),
    [
        pytest.param(s(14), 0, 3, id="average-from-0"),
        pytest.param(s(15), 0, 3, id="average-exact"),
        pytest.param(s(0), 0, 0, id="average-nothing"),
        pytest.param(s(30), 3, 6, id="average-ignores-current"),
        pytest.param(s(52), 10, 10, id="average-inside-tolerance"),
        pytest.param(s(55), 10, 10, id="average-ratio-1.1-is-inside"),
        pytest.param(s(55.5), 10, 12, id="average-ratio-1.11-is-outside"),
        pytest.param(s(45), 10, 10, id="average-ratio-0.9-is-inside"),
        pytest.param(s(44.5), 10, 9, id="average-ratio-0.89-is-outside"),
        pytest.param(s(1.1, 0.1), 0, 11, id="decimal-exact-not-12"),
        pytest.param(s(0.3, 0.1), 0, 3, id="decimal-exact-0.3"),
        pytest.param(s(-5), 4, 0, id="negative-is-0"),
        pytest.param(s(math.nan), 4, 0, id="nan-is-0"),
        pytest.param(s(math.inf), 4, 0, id="inf-is-0-as-keda"),
        pytest.param(s(14, 5, cap=2), 0, 3, id="cap-is-applied-by-decide-not-here"),
        pytest.param(s(150, 100, kind=VAL), 4, 6, id="value-scales-current"),
        pytest.param(s(50, 100, kind=VAL), 4, 2, id="value-scales-down"),
        pytest.param(s(105, 100, kind=VAL), 4, 4, id="value-inside-tolerance"),
        pytest.param(s(250, 100, kind=VAL), 0, 3, id="value-from-0-is-the-ratio"),
        pytest.param(s(0.5, 100, kind=VAL), 0, 1, id="value-from-0-rounds-up"),
        pytest.param(s(0, 100, kind=VAL), 3, 0, id="value-zero"),
    ],
)
def test_replicas_for(sample: MetricSample, current: int, expected: int) -> None:
    """The HPA's External-metric maths, with exact decimals and 0.1 tolerance."""
    assert replicas_for(sample, current) == expected


@pytest.mark.parametrize(
    ("sample", "current", "up", "down", "expected"),
    [
        pytest.param(s(52), 10, 0.0, 0.1, 11, id="up-0"),
        pytest.param(s(30), 10, 0.1, 0.5, 10, id="down-0.5-holds"),
        pytest.param(s(30), 10, 0.5, 0.1, 6, id="up-tolerance-not-used-downwards"),
        pytest.param(s(52, 100, kind=VAL), 10, 0.0, 0.1, 6, id="value-up-0"),
    ],
)
def test_replicas_for_tolerances(
    sample: MetricSample, current: int, up: float, down: float, expected: int
) -> None:
    """Each direction has its own tolerance (behavior.scaleUp/scaleDown.tolerance)."""
    assert replicas_for(sample, current, up_tolerance=up, down_tolerance=down) == expected


@pytest.mark.parametrize("target", [0.0, -1.0, math.nan, math.inf])
def test_replicas_for_rejects_target(target: float) -> None:
    """A target that is not a positive number is a ConfigError naming the metric."""
    with pytest.raises(ConfigError, match=f"^{S0}: the metric target must be > 0"):
        replicas_for(s(10, target), 1)


# ---------------------------------------------------------------------------------------------
# decide(): one table per theme
# ---------------------------------------------------------------------------------------------

P = ScalingPolicy()
FALLBACK = Fallback(failure_threshold=3, replicas=6)


def fb(behavior: FallbackBehavior, threshold: int = 3) -> ScalingPolicy:
    return ScalingPolicy(
        fallback=Fallback(failure_threshold=threshold, replicas=6, behavior=behavior)
    )


def case(
    policy: ScalingPolicy,
    engine: EngineState,
    samples: dict[str, MetricSample | None],
    current: int,
    expected: tuple[int, Reason, str | None, bool, bool],
    *,
    id: str,
    created_at: float = 0.0,
) -> Any:
    return pytest.param(policy, engine, samples, current, created_at, expected, id=id)


CASES = [
    # Scaling while active.
    case(P, state(), {S0: s(30)}, 3, want(6, Reason.SCALED, S0, active=True), id="scale-up"),
    case(P, state(), {S0: s(52)}, 10, want(10, Reason.SCALED, S0, active=True), id="tolerance"),
    case(
        P,
        state(),
        {S0: s(10), S1: s(35, name=S1)},
        4,
        want(7, Reason.SCALED, S1, active=True),
        id="max-over-triggers",
    ),
    case(
        P,
        state(),
        {S0: s(100, cap=8)},
        4,
        want(8, Reason.CAPPED, S0, active=True),
        id="replica-cap",
    ),
    case(
        P,
        state(),
        {S0: s(30, cap=8)},
        4,
        want(6, Reason.SCALED, S0, active=True),
        id="replica-cap-above-demand",
    ),
    case(
        ScalingPolicy(max_replicas=10),
        state(),
        {S0: s(100)},
        8,
        want(10, Reason.CAPPED, S0, active=True),
        id="max-replicas",
    ),
    case(
        P,
        state(),
        {S0: s(100)},
        2,
        want(6, Reason.LIMITED_BY_POLICY, S0, active=True),
        id="scale-up-policy",
    ),
    case(
        P,
        state(latest=8),
        {S0: s(10)},
        8,
        want(8, Reason.LIMITED_BY_POLICY, S0, active=True),
        id="scale-down-window-holds",
    ),
    case(
        P,
        state(recs=((NOW - 300, 8),), latest=2),
        {S0: s(10)},
        8,
        want(2, Reason.SCALED, S0, active=True),
        id="scale-down-after-window",
    ),
    case(
        ScalingPolicy(min_replicas=3),
        state(),
        {S0: s(0)},
        1,
        want(3, Reason.SCALED, S0, active=False),
        id="repairs-below-min",
    ),
    case(
        ScalingPolicy(max_replicas=5),
        state(),
        {S0: s(45)},
        9,
        want(5, Reason.CAPPED, S0, active=True),
        id="repairs-above-max",
    ),
    case(
        P,
        state(),
        {S0: s(150, 100, kind=VAL)},
        4,
        want(6, Reason.SCALED, S0, active=True),
        id="value-metric",
    ),
    case(
        ScalingPolicy(behavior=parse_behavior({"scaleUp": {"tolerance": 0}})),
        state(),
        {S0: s(52)},
        10,
        want(11, Reason.SCALED, S0, active=True),
        id="behavior-tolerance-up",
    ),
    case(
        ScalingPolicy(behavior=parse_behavior({"scaleDown": {"tolerance": "500m"}})),
        state(),
        {S0: s(30)},
        10,
        want(10, Reason.SCALED, S0, active=True),
        id="behavior-tolerance-down",
    ),
    # Activation.
    case(
        P,
        state(last_active=NOW - 1000),
        {S0: s(14)},
        0,
        want(3, Reason.ACTIVATED, S0, active=True),
        id="activates-from-0",
    ),
    case(P, state(), {S0: s(0)}, 0, want(0, Reason.SCALED, active=False), id="idle-stays-at-0"),
    case(
        P,
        state(),
        {S0: s(5, 1, activation=10)},
        0,
        want(0, Reason.SCALED, active=False),
        id="below-activation-target",
    ),
    case(
        P,
        state(),
        {S0: s(11, 100, activation=10)},
        0,
        want(1, Reason.ACTIVATED, S0, active=True),
        id="small-value-activates-to-1",
    ),
    case(
        ScalingPolicy(min_replicas=5, idle_replicas=0),
        state(),
        {S0: s(1)},
        0,
        want(5, Reason.ACTIVATED, S0, active=True),
        id="activates-straight-to-min",
    ),
    case(
        ScalingPolicy(min_replicas=4, idle_replicas=1),
        state(),
        {S0: s(3)},
        1,
        want(4, Reason.ACTIVATED, S0, active=True),
        id="activates-from-idle-below-min",
    ),
    case(
        ScalingPolicy(pause=Pause(force_activation=True)),
        state(),
        {S0: s(0)},
        0,
        want(1, Reason.ACTIVATED, None, active=True),
        id="force-activation",
    ),
    case(
        P,
        state(),
        {S0: s(100, 1)},
        0,
        want(4, Reason.ACTIVATED, S0, active=True),
        id="activation-then-pods-policy",
    ),
    case(
        ScalingPolicy(
            behavior=parse_behavior(
                {"scaleUp": {"policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}}
            )
        ),
        state(),
        {S0: s(100, 1)},
        0,
        want(1, Reason.ACTIVATED, S0, active=True),
        id="percent-only-policy-still-activates-to-1",
    ),
    case(
        ScalingPolicy(behavior=parse_behavior({"scaleUp": {"stabilizationWindowSeconds": 120}})),
        state(recs=((NOW - 60, 0),)),
        {S0: s(14)},
        0,
        want(1, Reason.ACTIVATED, S0, active=True),
        id="scale-up-window-still-activates-to-1",
    ),
    # Cooldown and deactivation.
    case(
        P,
        state(last_active=NOW - 100, latest=3),
        {S0: s(0)},
        3,
        want(3, Reason.COOLDOWN, active=False),
        id="cooldown-window-holds",
    ),
    case(
        ScalingPolicy(behavior=parse_behavior({"scaleDown": {"stabilizationWindowSeconds": 60}})),
        state(last_active=NOW - 200, recs=((NOW - 200, 3),)),
        {S0: s(0)},
        3,
        want(1, Reason.COOLDOWN, active=False),
        id="cooldown-follows-metrics-down-to-1",
    ),
    case(
        P,
        state(last_active=NOW - 301, recs=((NOW - 301, 3),)),
        {S0: s(0)},
        3,
        want(0, Reason.DEACTIVATED, active=False),
        id="deactivates-after-cooldown",
    ),
    case(
        P,
        state(last_active=NOW - 300, recs=((NOW - 300, 3),)),
        {S0: s(0)},
        3,
        want(1, Reason.COOLDOWN, active=False),
        id="cooldown-boundary-is-strict",
    ),
    case(
        P,
        state(last_active=NOW - 400, recs=((NOW - 200, 2),)),
        {S0: s(0)},
        3,
        want(0, Reason.DEACTIVATED, active=False),
        id="deactivation-follows-cooldown-under-default-window",
    ),
    case(
        ScalingPolicy(behavior=parse_behavior({"scaleDown": {"stabilizationWindowSeconds": 300}})),
        state(last_active=NOW - 400, recs=((NOW - 200, 2),)),
        {S0: s(0)},
        3,
        want(2, Reason.DEACTIVATED, active=False),
        id="deactivation-held-by-explicit-window",
    ),
    case(
        ScalingPolicy(
            behavior=parse_behavior(
                {
                    "scaleDown": {
                        "stabilizationWindowSeconds": 0,
                        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                    }
                }
            )
        ),
        state(last_active=NOW - 400),
        {S0: s(0)},
        3,
        want(2, Reason.DEACTIVATED, active=False),
        id="deactivation-stepped-by-policy",
    ),
    case(
        ScalingPolicy(
            behavior=parse_behavior(
                {
                    "scaleDown": {
                        "stabilizationWindowSeconds": 0,
                        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                    }
                }
            )
        ),
        state(last_active=NOW - 400, down_events=((NOW - 30, 1),)),
        {S0: s(0)},
        3,
        want(3, Reason.LIMITED_BY_POLICY, active=False),
        id="deactivation-waits-for-policy-budget",
    ),
    case(
        ScalingPolicy(initial_cooldown_period=60),
        state(last_active=None),
        {S0: s(0)},
        3,
        want(1, Reason.COOLDOWN, active=False),
        created_at=NOW - 50,
        id="initial-cooldown-pending",
    ),
    case(
        ScalingPolicy(initial_cooldown_period=60),
        state(last_active=None),
        {S0: s(0)},
        3,
        want(0, Reason.DEACTIVATED, active=False),
        created_at=NOW - 61,
        id="initial-cooldown-over",
    ),
    case(
        P,
        EngineState(),
        {S0: s(0)},
        3,
        want(3, Reason.LIMITED_BY_POLICY, active=False),
        created_at=NOW - 10,
        id="new-object-waits-a-window-before-0",
    ),
    case(
        ScalingPolicy(min_replicas=2, idle_replicas=0),
        state(last_active=NOW - 400),
        {S0: s(0)},
        5,
        want(0, Reason.DEACTIVATED, active=False),
        id="idle-replica-count",
    ),
    case(
        ScalingPolicy(min_replicas=2, idle_replicas=0),
        state(last_active=NOW - 100),
        {S0: s(0)},
        5,
        want(2, Reason.COOLDOWN, active=False),
        id="idle-set-cooldown-floors-at-min",
    ),
    case(
        ScalingPolicy(min_replicas=2),
        state(last_active=NOW - 400),
        {S0: s(0)},
        4,
        want(2, Reason.SCALED, S0, active=False),
        id="min-without-idle-has-no-cooldown",
    ),
    case(
        ScalingPolicy(min_replicas=3, idle_replicas=1),
        state(last_active=NOW - 1000),
        {S0: s(0)},
        0,
        want(1, Reason.SCALED, active=False),
        id="repairs-below-idle",
    ),
    case(
        ScalingPolicy(min_replicas=2, idle_replicas=0),
        state(last_active=NOW - 10),
        {S0: s(0)},
        0,
        want(0, Reason.SCALED, active=False),
        id="stays-idle-during-cooldown",
    ),
    # Fallback.
    case(
        ScalingPolicy(fallback=FALLBACK),
        state(failures={S0: 2}),
        {S0: None},
        4,
        want(4, Reason.TRIGGER_FAILING, S0, active=False),
        id="fallback-not-yet",
    ),
    case(
        ScalingPolicy(fallback=FALLBACK),
        state(failures={S0: 3}),
        {S0: None},
        4,
        want(6, Reason.FALLBACK, S0, active=True, fallback=True),
        id="fallback-static",
    ),
    case(
        ScalingPolicy(fallback=FALLBACK),
        state(failures={S0: 3}),
        {S0: None},
        10,
        want(6, Reason.FALLBACK, S0, active=True, fallback=True),
        id="fallback-static-lowers",
    ),
    case(
        fb(FallbackBehavior.CURRENT_REPLICAS),
        state(failures={S0: 3}),
        {S0: None},
        4,
        want(4, Reason.FALLBACK, S0, active=True, fallback=True),
        id="fallback-current",
    ),
    case(
        fb(FallbackBehavior.CURRENT_REPLICAS_IF_HIGHER),
        state(failures={S0: 3}),
        {S0: None},
        9,
        want(9, Reason.FALLBACK, S0, active=True, fallback=True),
        id="fallback-if-higher-keeps-current",
    ),
    case(
        fb(FallbackBehavior.CURRENT_REPLICAS_IF_HIGHER),
        state(failures={S0: 3}),
        {S0: None},
        2,
        want(6, Reason.FALLBACK, S0, active=True, fallback=True),
        id="fallback-if-higher-raises",
    ),
    case(
        fb(FallbackBehavior.CURRENT_REPLICAS_IF_LOWER),
        state(failures={S0: 3}),
        {S0: None},
        9,
        want(6, Reason.FALLBACK, S0, active=True, fallback=True),
        id="fallback-if-lower-lowers",
    ),
    case(
        fb(FallbackBehavior.CURRENT_REPLICAS_IF_LOWER),
        state(failures={S0: 3}),
        {S0: None},
        2,
        want(2, Reason.FALLBACK, S0, active=True, fallback=True),
        id="fallback-if-lower-keeps-current",
    ),
    case(
        fb(FallbackBehavior.SCALING_MODIFIERS),
        state(failures={S0: 3}),
        {S0: None},
        4,
        want(6, Reason.FALLBACK, S0, active=True, fallback=True),
        id="fallback-failed-composite-is-static",
    ),
    case(
        fb(FallbackBehavior.STATIC, threshold=0),
        state(),
        {S0: None},
        4,
        want(6, Reason.FALLBACK, S0, active=True, fallback=True),
        id="fallback-threshold-0-first-failure",
    ),
    case(
        ScalingPolicy(fallback=FALLBACK),
        state(failures={S0: 3}),
        {S0: None, S1: s(40, name=S1)},
        4,
        want(8, Reason.SCALED, S1, active=True, fallback=True),
        id="fallback-and-healthy-take-max",
    ),
    case(
        ScalingPolicy(fallback=FALLBACK),
        state(failures={S0: 3}),
        {S0: None},
        0,
        want(4, Reason.ACTIVATED, S0, active=True, fallback=True),
        id="fallback-wakes-from-0",
    ),
    case(
        fb(FallbackBehavior.CURRENT_REPLICAS),
        state(failures={S0: 3}),
        {S0: None},
        0,
        want(1, Reason.ACTIVATED, S0, active=True, fallback=True),
        id="fallback-current-at-0-wakes-to-1",
    ),
    case(
        ScalingPolicy(fallback=FALLBACK),
        state(last_active=NOW - 400, failures={S0: 3}),
        {S0: None},
        3,
        want(6, Reason.FALLBACK, S0, active=True, fallback=True),
        id="fallback-is-activity",
    ),
    # Failing triggers without fallback in effect.
    case(
        P,
        state(),
        {S0: None, S1: s(5, name=S1)},
        5,
        want(5, Reason.TRIGGER_FAILING, S0, active=True),
        id="failing-blocks-scale-down",
    ),
    case(
        P,
        state(),
        {S0: None, S1: s(40, name=S1)},
        5,
        want(8, Reason.SCALED, S1, active=True),
        id="failing-allows-scale-up",
    ),
    case(
        P,
        state(),
        {S0: None},
        5,
        want(5, Reason.TRIGGER_FAILING, S0, active=False),
        id="all-failing-hold",
    ),
    case(
        P,
        state(last_active=NOW - 400),
        {S0: None, S1: s(0, name=S1)},
        3,
        want(3, Reason.TRIGGER_FAILING, S0, active=False),
        id="failing-blocks-deactivation",
    ),
    case(
        P,
        state(last_active=NOW - 400),
        {S0: None},
        0,
        want(0, Reason.SCALED, active=False),
        id="failing-at-0-stays",
    ),
    case(
        P,
        state(),
        {S0: None, S1: s(10, name=S1)},
        0,
        want(2, Reason.ACTIVATED, S1, active=True),
        id="failing-and-other-activates",
    ),
    case(
        ScalingPolicy(max_replicas=5),
        state(),
        {S0: None},
        8,
        want(5, Reason.CAPPED, active=False),
        id="failing-still-capped-at-max",
    ),
    # Pause annotations.
    case(
        ScalingPolicy(pause=Pause(paused=True)),
        state(),
        {S0: s(100)},
        7,
        want(7, Reason.PAUSED, active=False),
        id="paused",
    ),
    case(
        ScalingPolicy(pause=Pause(paused=True, replicas=0)),
        state(),
        {S0: s(100)},
        7,
        want(0, Reason.PAUSED, active=False),
        id="paused-replicas",
    ),
    case(
        ScalingPolicy(pause=Pause(paused=True, replicas=500)),
        state(),
        {S0: s(100)},
        7,
        want(500, Reason.PAUSED, active=False),
        id="paused-replicas-not-clamped",
    ),
    case(
        ScalingPolicy(pause=Pause(scale_in=True)),
        state(last_active=NOW - 400),
        {S0: s(0)},
        3,
        want(3, Reason.PAUSED, active=False),
        id="scale-in-paused-blocks-deactivation",
    ),
    case(
        ScalingPolicy(pause=Pause(scale_in=True)),
        state(),
        {S0: s(30)},
        3,
        want(6, Reason.SCALED, S0, active=True),
        id="scale-in-paused-scales-up",
    ),
    case(
        ScalingPolicy(pause=Pause(scale_out=True)),
        state(),
        {S0: s(14)},
        0,
        want(0, Reason.PAUSED, S0, active=True),
        id="scale-out-paused-blocks-activation",
    ),
    case(
        ScalingPolicy(pause=Pause(scale_out=True)),
        state(),
        {S0: s(10)},
        6,
        want(2, Reason.SCALED, S0, active=True),
        id="scale-out-paused-scales-down",
    ),
    case(
        ScalingPolicy(pause=Pause(force_activation=True, scale_out=True)),
        state(),
        {S0: s(0)},
        0,
        want(0, Reason.PAUSED, S0, active=True),
        id="force-activation-vs-scale-out-paused",
    ),
    case(
        ScalingPolicy(max_replicas=5, pause=Pause(scale_in=True)),
        state(),
        {S0: s(40)},
        8,
        want(8, Reason.PAUSED, S0, active=True),
        id="scale-in-paused-even-above-max",
    ),
]


@pytest.mark.parametrize(
    ("policy", "engine", "samples", "current", "created_at", "expected"), CASES
)
def test_decide(
    policy: ScalingPolicy,
    engine: EngineState,
    samples: dict[str, MetricSample | None],
    current: int,
    created_at: float,
    expected: tuple[int, Reason, str | None, bool, bool],
) -> None:
    """Each rule on its own and where it meets the others: count, reason, trigger, flags."""
    decision, _ = run(policy, engine, samples, current, created_at=created_at)
    got = (
        decision.replicas,
        decision.reason,
        decision.trigger,
        decision.active,
        decision.fallback_active,
    )
    assert got == expected, decision.message


@pytest.mark.parametrize(
    ("policy", "engine", "samples", "current", "message"),
    [
        pytest.param(
            P,
            state(),
            {S0: s(14)},
            0,
            f"{S0}=14 > 0; {S0}=14 (target 5) -> 3",
            id="activated",
        ),
        pytest.param(
            P,
            state(),
            {S0: s(100, 1)},
            0,
            f"{S0}=100 > 0; {S0}=100 (target 1) -> 100; behavior allows 4 now (recommended 100)",
            id="activated-limited",
        ),
        pytest.param(
            ScalingPolicy(max_replicas=10),
            state(),
            {S0: s(100, cap=30)},
            8,
            f"{S0}=100 (target 5) -> 20; capped at maxReplicaCount 10",
            id="capped-by-max",
        ),
        pytest.param(
            P,
            state(),
            {S0: s(100, cap=8)},
            4,
            f"{S0}=100 (target 5) -> 20, capped at 8",
            id="capped-by-trigger",
        ),
        pytest.param(
            P,
            state(last_active=NOW - 301),
            {S0: s(0)},
            3,
            "no trigger active for 301s (cooldown 300s)",
            id="deactivated",
        ),
        pytest.param(
            P,
            state(last_active=NOW - 100),
            {S0: s(0)},
            3,
            f"no trigger active; cooldown ends in 200s; {S0}=0 (target 5) -> 0",
            id="cooldown",
        ),
        pytest.param(
            ScalingPolicy(fallback=FALLBACK),
            state(failures={S0: 3}),
            {S0: None},
            4,
            f"{S0} failed 4 times (threshold 3): fallback static -> 6",
            id="fallback",
        ),
        pytest.param(
            P,
            state(),
            {S0: None, S1: s(5, name=S1)},
            5,
            f"{S0} failing: not scaling down; {S1}=5 (target 5) -> 1",
            id="failing",
        ),
        pytest.param(
            ScalingPolicy(min_replicas=3),
            state(),
            {S0: s(0)},
            1,
            f"{S0}=0 (target 5) -> 0; raised to the minimum of 3",
            id="raised-to-min",
        ),
        pytest.param(
            ScalingPolicy(pause=Pause(paused=True, replicas=2)),
            state(),
            {},
            5,
            "paused at 2 replicas",
            id="paused-replicas",
        ),
        pytest.param(
            ScalingPolicy(pause=Pause(scale_out=True)),
            state(),
            {S0: s(14)},
            0,
            f"scale-out paused; {S0}=14 (target 5) -> 3",
            id="scale-out-paused",
        ),
    ],
)
def test_decision_message(
    policy: ScalingPolicy,
    engine: EngineState,
    samples: dict[str, MetricSample | None],
    current: int,
    message: str,
) -> None:
    """The message names the deciding trigger and its numbers, for `ns/name 0 -> 3: ...`."""
    decision, _ = run(policy, engine, samples, current)
    assert decision.message == message


# ---------------------------------------------------------------------------------------------
# The state decide() returns
# ---------------------------------------------------------------------------------------------


def test_activity_refreshes_last_active_time() -> None:
    """Active (or in fallback) sets last_active_time to now; inactive keeps it."""
    _, active = run(P, state(last_active=NOW - 100), {S0: s(1)}, 1)
    _, inactive = run(P, state(last_active=NOW - 100), {S0: s(0)}, 1)
    _, fallback = run(
        ScalingPolicy(fallback=FALLBACK),
        state(last_active=NOW - 100, failures={S0: 9}),
        {S0: None},
        1,
    )
    _, failing = run(P, state(last_active=NOW - 100), {S0: None}, 1)
    assert active.last_active_time == NOW
    assert inactive.last_active_time == NOW - 100
    assert fallback.last_active_time == NOW
    assert failing.last_active_time == NOW - 100


def test_failure_counts() -> None:
    """Consecutive failures count up, a success resets, a removed trigger is forgotten."""
    engine = state(failures={S0: 2, "s9-gone": 7})
    _, failed = run(P, engine, {S0: None, S1: s(1, name=S1)}, 1)
    _, recovered = run(P, failed, {S0: s(1), S1: None}, 1)
    assert failed.failures == {S0: 3}
    assert recovered.failures == {S1: 1}


def test_scale_is_recorded_as_an_event() -> None:
    """The count decided is recorded for the rate policies, and becomes the latest in force."""
    _, engine = run(P, state(), {S0: s(30)}, 3)
    assert engine.history.scale_up_events == ((NOW, 3),)
    assert engine.history.latest == 6


def test_pause_forgets_the_recommendation_in_force() -> None:
    """A pause keeps counts and activity, and the first poll after it seeds a fresh window."""
    engine = state(latest=9, failures={S0: 1}, last_active=NOW - 50)
    _, paused = run(ScalingPolicy(pause=Pause(paused=True)), engine, {S0: s(0)}, 4)
    assert paused == replace(engine, history=replace(engine.history, latest=None))
    after, _ = run(P, paused, {S0: s(5)}, 4, now=NOW + 30)
    assert (after.replicas, after.reason) == (4, Reason.LIMITED_BY_POLICY)


def test_idle_state_does_not_change() -> None:
    """An idle object's state is stable from poll to poll, so its status needs no writes."""
    _, first = run(P, state(last_active=NOW - 1000), {S0: s(0)}, 0)
    _, second = run(P, first, {S0: s(0)}, 0, now=NOW + 30)
    assert second.to_status() == first.to_status()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"min_replicas": -1}, "minReplicaCount (-1) must be >= 0", id="min-negative"),
        pytest.param(
            {"min_replicas": 5, "max_replicas": 4},
            "minReplicaCount (5) must be >= 0 and <= maxReplicaCount (4)",
            id="min-above-max",
        ),
        pytest.param(
            {"min_replicas": 2, "idle_replicas": 2},
            "idleReplicaCount (2) must be >= 0 and < minReplicaCount (2)",
            id="idle-not-below-min",
        ),
        pytest.param(
            {"idle_replicas": -1, "min_replicas": 1},
            "idleReplicaCount (-1) must be >= 0",
            id="idle-negative",
        ),
        pytest.param({"cooldown_period": -1}, "cooldownPeriod and", id="cooldown-negative"),
    ],
)
def test_policy_rejects(kwargs: dict[str, Any], message: str) -> None:
    """A policy whose bounds contradict each other is a ConfigError (KEDA's webhook rules)."""
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        ScalingPolicy(**kwargs)


# ---------------------------------------------------------------------------------------------
# The status: round trip, restarts and a whole day in the life
# ---------------------------------------------------------------------------------------------


def test_engine_state_status_round_trip() -> None:
    """to_status is JSON-able and from_status reads it back to an equal state."""
    engine = EngineState(
        last_active_time=NOW - 12.5,
        history=History(
            recommendations=((NOW - 100, 9),), latest=3, scale_down_events=((NOW - 5, 6),)
        ),
        failures={S1: 2},
    )
    status = json.loads(json.dumps(engine.to_status()))
    assert status == {
        "lastActiveTime": NOW - 12.5,
        "failures": {S1: 2},
        "history": {
            "recommendations": [[NOW - 100, 9]],
            "latest": 3,
            "scaleUpEvents": [],
            "scaleDownEvents": [[NOW - 5, 6]],
        },
    }
    assert EngineState.from_status(status) == engine
    assert EngineState.from_status(None) == EngineState.from_status({}) == EngineState()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param({"lastActiveTime": "2024-01-01T00:00:00Z"}, "lastActiveTime", id="rfc3339"),
        pytest.param({"failures": {S0: 0}}, "failures", id="zero-failures"),
        pytest.param({"failures": [1]}, "failures", id="failures-list"),
        pytest.param({"history": {"latest": 1.5}}, "latest", id="history"),
    ],
)
def test_engine_state_from_status_rejects(raw: dict[str, Any], message: str) -> None:
    """A malformed stored state is a ValueError naming the field."""
    with pytest.raises(ValueError, match=f"^{message}"):
        EngineState.from_status(raw)


# A day in the life with the defaults, polling every 30 s: (time, value, expected, reason).
TIMELINE = [
    (0, 0, 0, Reason.SCALED),
    (30, 14, 3, Reason.ACTIVATED),
    (60, 100, 7, Reason.LIMITED_BY_POLICY),  # 20 wanted; max(+4 pods, +100 %) per 15 s
    (90, 100, 14, Reason.LIMITED_BY_POLICY),
    (120, 100, 20, Reason.SCALED),
    (150, 0, 20, Reason.COOLDOWN),  # the scale-down window holds 20 ...
    (300, 0, 20, Reason.COOLDOWN),
    (420, 0, 20, Reason.COOLDOWN),  # ... until 300 s after 20 was last in force (t=150)
    (450, 0, 0, Reason.DEACTIVATED),  # and the cooldown (from t=120) ends too: 20 -> 0 at once
    (480, 0, 0, Reason.SCALED),
    (510, 3, 1, Reason.ACTIVATED),
]


def test_timeline_survives_a_restart_at_every_poll() -> None:
    """The defaults from 0 to 20 and back to 0; reading the state back from JSON each poll
    gives the same decisions as keeping it in memory."""
    policy, memory, current = P, EngineState(), 0
    for t, value, expected, reason in TIMELINE:
        stored = EngineState.from_status(json.loads(json.dumps(memory.to_status())))
        decision, memory = run(policy, memory, {S0: s(value)}, current, now=float(t))
        replayed, _ = run(policy, stored, {S0: s(value)}, current, now=float(t))
        assert (t, decision.replicas, decision.reason) == (t, expected, reason)
        assert replayed == decision
        current = decision.replicas


def test_lost_status_never_scales_down_early() -> None:
    """With the stored state gone, the current count holds for a full scale-down window."""
    engine = EngineState()  # what from_status(None) gives
    for t, expected in [(10_000, 8), (10_299, 8), (10_301, 0)]:
        decision, engine = run(P, engine, {S0: s(0)}, 8, now=float(t))
        assert decision.replicas == expected


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------


@st.composite
def policies(draw: st.DrawFn) -> ScalingPolicy:
    min_replicas = draw(st.integers(0, 5))
    idle = draw(st.none() | st.integers(0, max(min_replicas - 1, 0)))
    return ScalingPolicy(
        min_replicas=min_replicas,
        max_replicas=draw(st.integers(max(min_replicas, 1), 20)),
        idle_replicas=idle if idle is not None and idle < min_replicas else None,
        cooldown_period=draw(st.sampled_from([0, 30, 300])),
        fallback=draw(
            st.none()
            | st.builds(
                Fallback,
                failure_threshold=st.integers(0, 3),
                replicas=st.integers(0, 30),
                behavior=st.sampled_from(FallbackBehavior),
            )
        ),
        behavior=draw(
            st.sampled_from(
                [
                    Behavior(),
                    parse_behavior({"scaleDown": {"stabilizationWindowSeconds": 0}}),
                    parse_behavior(
                        {
                            "scaleUp": {"stabilizationWindowSeconds": 60, "selectPolicy": "Min"},
                            "scaleDown": {
                                "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]
                            },
                        }
                    ),
                ]
            )
        ),
        pause=draw(st.builds(Pause, force_activation=st.booleans())),
    )


samples_st = st.dictionaries(
    st.sampled_from([S0, S1, "s2-prometheus"]),
    st.none()
    | st.builds(
        MetricSample,
        name=st.just("m"),
        value=st.floats(-10, 500) | st.just(math.nan),
        target=st.floats(0.5, 50),
        activation_target=st.floats(0, 20),
        metric_type=st.sampled_from(MetricType),
        replica_cap=st.none() | st.integers(0, 30),
    ),
    max_size=3,
)
states_st = st.builds(
    EngineState,
    last_active_time=st.none() | st.floats(NOW - 1000, NOW),
    history=st.builds(
        History,
        recommendations=st.lists(
            st.tuples(st.floats(NOW - 400, NOW), st.integers(0, 30)), max_size=4
        ).map(lambda entries: tuple(sorted(entries))),
        latest=st.none() | st.integers(0, 30),
        scale_up_events=st.lists(
            st.tuples(st.floats(NOW - 60, NOW), st.integers(1, 5)), max_size=3
        ).map(tuple),
    ),
    failures=st.dictionaries(st.sampled_from([S0, S1]), st.integers(1, 5)),
)


@settings(max_examples=300, deadline=None)
@given(policy=policies(), engine=states_st, samples=samples_st, current=st.integers(0, 30))
def test_result_within_bounds(
    policy: ScalingPolicy,
    engine: EngineState,
    samples: dict[str, MetricSample | None],
    current: int,
) -> None:
    """Without pause annotations the count is in [idle or min, max], and >= max(min, 1) when
    active."""
    decision, _ = run(policy, engine, samples, current)
    idle = policy.min_replicas if policy.idle_replicas is None else policy.idle_replicas
    assert idle <= decision.replicas <= policy.max_replicas
    if decision.active:
        assert decision.replicas >= max(policy.min_replicas, 1)


@settings(max_examples=300, deadline=None)
@given(policy=policies(), engine=states_st, samples=samples_st, current=st.integers(0, 30))
def test_failing_trigger_never_lowers(
    policy: ScalingPolicy,
    engine: EngineState,
    samples: dict[str, MetricSample | None],
    current: int,
) -> None:
    """While a trigger fails short of its fallback, the count never goes down (but to max)."""
    threshold = policy.fallback.failure_threshold if policy.fallback else math.inf
    failing = [n for n, v in samples.items() if v is None and engine.failures.get(n, 0) < threshold]
    decision, _ = run(policy, engine, samples, current)
    if failing:
        assert decision.replicas >= min(current, policy.max_replicas)


@settings(max_examples=200, deadline=None)
@given(
    policy=policies(),
    engine=states_st,
    ticks=st.lists(st.tuples(samples_st, st.integers(0, 30)), min_size=1, max_size=5),
)
def test_state_round_trips_through_status(
    policy: ScalingPolicy,
    engine: EngineState,
    ticks: list[tuple[dict[str, MetricSample | None], int]],
) -> None:
    """Whatever decide() returns, the status form reads back to an equal state."""
    for i, (samples, current) in enumerate(ticks):
        _, engine = run(policy, engine, samples, current, now=NOW + 15 * i)
        stored = json.loads(json.dumps(engine.to_status()))
        assert EngineState.from_status(stored) == engine
