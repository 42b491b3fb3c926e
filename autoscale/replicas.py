"""The scaling engine: trigger samples in, one desired replica count out.

Owns the per-trigger HPA maths, activation and cooldown, idle/min/max, fallback, the pause
annotations and the HPA `behavior`, on the whole path from N to 0 and back: unlike KEDA, no HPA
computes 1..N for us. Pure: no I/O, no clock (time is `Observation.now`), no logging; the caller
keeps `EngineState` in the object's status (`to_status` / `from_status`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

from autoscale import behavior as hpa
from autoscale.errors import ConfigError
from autoscale.model import Fallback, FallbackBehavior
from autoscale.pause import Pause
from autoscale.scalers.base import MetricSample, MetricType


def replicas_for(
    sample: MetricSample,
    current_replicas: int,
    *,
    up_tolerance: float = hpa.DEFAULT_TOLERANCE,
    down_tolerance: float = hpa.DEFAULT_TOLERANCE,
) -> int:
    """One trigger's replica count, by the HPA's maths for External metrics.

    AverageValue: ceil(value / target), whatever the current count. Value: ceil(current x value /
    target), and ceil(value / target) from 0. Except from 0, the count stays as it is while the
    usage ratio is within tolerance of 1 (`up_tolerance` above 1, `down_tolerance` below; a ratio
    exactly at the bound is within). Negative, NaN and infinite values count as 0, as KEDA clamps
    them for the HPA. Numbers are taken as the decimals they print as, so 1.1 / 0.1 is exactly 11
    (float division gives 11.000000000000002, hence 12). Value uses the current (spec) count where
    the HPA uses ready pods: the engine sees no pods. Raises ConfigError when the target is not > 0.
    """
    if not (math.isfinite(sample.target) and sample.target > 0):
        raise ConfigError(f"{sample.name}: the metric target must be > 0, got {sample.target!r}")
    target = _exact(sample.target)
    value = (
        _exact(sample.value) if math.isfinite(sample.value) and sample.value > 0 else Fraction(0)
    )
    if sample.metric_type is MetricType.AVERAGE_VALUE:
        if current_replicas > 0 and _within_tolerance(
            value / (target * current_replicas), up_tolerance, down_tolerance
        ):
            return current_replicas
        return math.ceil(value / target)
    ratio = value / target
    if current_replicas == 0:
        return math.ceil(ratio)
    if _within_tolerance(ratio, up_tolerance, down_tolerance):
        return current_replicas
    return math.ceil(ratio * current_replicas)


def _exact(number: float) -> Fraction:
    return Fraction(repr(number)) if isinstance(number, float) else Fraction(number)


def _within_tolerance(ratio: Fraction, up_tolerance: float, down_tolerance: float) -> bool:
    if ratio >= 1:
        return ratio - 1 <= _exact(up_tolerance)
    return 1 - ratio <= _exact(down_tolerance)


# ---------------------------------------------------------------------------------------------
# Inputs and outputs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ScalingPolicy:
    """What the spec and annotations ask for; model.py's ScaledObject supplies the values."""

    min_replicas: int = 0
    max_replicas: int = 100
    idle_replicas: int | None = None
    cooldown_period: float = 300.0
    initial_cooldown_period: float = 0.0
    fallback: Fallback | None = None
    behavior: hpa.Behavior = field(default_factory=hpa.Behavior)
    pause: Pause = field(default_factory=Pause)

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ConfigError(
                f"minReplicaCount ({self.min_replicas}) must be >= 0 and <= "
                f"maxReplicaCount ({self.max_replicas})"
            )
        if self.idle_replicas is not None and not 0 <= self.idle_replicas < self.min_replicas:
            raise ConfigError(
                f"idleReplicaCount ({self.idle_replicas}) must be >= 0 and < "
                f"minReplicaCount ({self.min_replicas})"
            )
        if self.cooldown_period < 0 or self.initial_cooldown_period < 0:
            raise ConfigError("cooldownPeriod and initialCooldownPeriod must be >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """One poll: every trigger's sample by metric name (None when it failed), and the target.

    With scalingModifiers the caller evaluates the formula (formula.py) and passes the composite
    as the only sample, or None when it cannot be computed.
    """

    samples: Mapping[str, MetricSample | None]
    current_replicas: int
    now: float  # seconds, on the same clock as created_at and the state's timestamps
    created_at: float  # the ScaledObject's creationTimestamp


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineState:
    """What the engine remembers between polls; restarts resume from `from_status`.

    `failures` counts consecutive failed polls per metric name (absent means 0); it feeds fallback
    and can be shown as the status's `health`.
    """

    last_active_time: float | None = None
    history: hpa.History = field(default_factory=hpa.History)
    failures: Mapping[str, int] = field(default_factory=dict)

    def to_status(self) -> dict[str, Any]:
        """A JSON-able dict for the status; `from_status` reads it back to an equal state."""
        status: dict[str, Any] = {"history": self.history.to_status()}
        if self.last_active_time is not None:
            status["lastActiveTime"] = self.last_active_time
        if self.failures:
            status["failures"] = dict(self.failures)
        return status

    @classmethod
    def from_status(cls, raw: Mapping[str, Any] | None) -> EngineState:
        """Inverse of `to_status`; None or {} gives a fresh state; ValueError if malformed."""
        raw = raw or {}
        last = raw.get("lastActiveTime")
        if last is not None and (isinstance(last, bool) or not isinstance(last, int | float)):
            raise ValueError(f"lastActiveTime: expected seconds, got {last!r}")
        failures = raw.get("failures") or {}
        if not isinstance(failures, Mapping) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in failures.values()
        ):
            raise ValueError("failures: expected a map of metric name to a count > 0")
        return cls(
            last_active_time=None if last is None else float(last),
            history=hpa.History.from_status(raw.get("history")),
            failures=dict(failures),
        )


class Reason(enum.Enum):
    """The rule that settled a decision (for logs, events and conditions)."""

    SCALED = "Scaled"  # the triggers' maths, within every limit (including no change)
    ACTIVATED = "Activated"  # from 0 (or from idle below min) because something is active
    DEACTIVATED = "Deactivated"  # toward idle/min: nothing active for the whole cooldown
    COOLDOWN = "Cooldown"  # nothing active, waiting out the cooldown above idle
    FALLBACK = "Fallback"  # a trigger failed past the threshold and its fallback count won
    TRIGGER_FAILING = "TriggerFailing"  # a failing trigger blocked a decrease
    PAUSED = "Paused"  # a pause annotation decided or bounded the count
    CAPPED = "Capped"  # a trigger's replica_cap or maxReplicaCount
    LIMITED_BY_POLICY = "LimitedByPolicy"  # a behavior stabilization window or rate policy


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The count to set and why; `trigger` names the trigger that settled it, if one did."""

    replicas: int
    active: bool  # a trigger active, a fallback in effect or force-activation; False if paused
    reason: Reason
    fallback_active: bool = False
    trigger: str | None = None
    details: tuple[str, ...] = ()  # e.g. ("s0-redis-streams-jobs=14 > 0", ...)

    @property
    def message(self) -> str:
        """The details as one line, for `ns/name 0 -> 3: <message>`."""
        return "; ".join(self.details)


@dataclass(frozen=True, slots=True)
class _Vote:
    trigger: str
    replicas: int
    detail: str
    capped: bool = False
    fallback: bool = False


# ---------------------------------------------------------------------------------------------
# The decision
# ---------------------------------------------------------------------------------------------


def decide(
    policy: ScalingPolicy, state: EngineState, observation: Observation
) -> tuple[Decision, EngineState]:
    """Decide the replica count for one poll; return it with the state to keep for the next.

    In order:
    1. Paused: hold the current count, or paused-replicas. The recommendation in force is
       forgotten, so the first poll after the pause stands the current count in for it and
       starts a fresh scale-down window (KEDA deletes and re-creates its HPA: the same effect).
    2. Per trigger: `replicas_for`, capped by the sample's `replica_cap`. A failed trigger adds 1
       to its failure count; past `fallback.failureThreshold` it proposes the fallback count and
       counts as active (as in KEDA); otherwise it is "failing". The recommendation is the max.
    3. Active: any trigger's value > its activation target, a fallback, or force-activation.
    4. Idle: when something can idle (min is 0, or idleReplicaCount is set), nothing is active,
       and either the count is already at or below idle, or the cooldown is over (strictly more
       than cooldownPeriod since the last activity, or initialCooldownPeriod since creation if
       there never was any) and no trigger is failing. Idle recommends idle (or min) with that as
       the floor; otherwise the floor is max(min, 1) and the triggers recommend.
    5. Failing triggers never lower the count (the HPA's rule for missing metrics, which KEDA
       loses at 0): with any trigger failing, a recommendation below the current count, or none,
       becomes the current count, and the recommendation in force stays as it was (the HPA skips
       such a poll). A trigger in fallback is not failing: its fallback count may lower the count.
    6. behavior: stabilize, then rate-limit (behavior.py), on every path including the step to
       idle, so one scale-down policy governs N -> 0 as well as N -> 1. The cooldown and the
       scale-down window run side by side rather than one after the other: during the cooldown
       the triggers' own recommendations are put in force. The step to idle itself waits for the
       scale-down window when the user wrote one (`Behavior.idle_window`) or when no activity was
       ever seen (a new object, or a lost status: the window then guards the first scale-down,
       KEDA #5008); otherwise it happens when the cooldown ends, as in KEDA, so a KEDA manifest
       keeps its timing. The rate policies apply to that step either way.
    7. Clamp to [floor, max]: activation reaches max(min, 1) at once, whatever the scale-up
       policies allow (a Percent policy cannot grow from 0), and a count below the floor or
       above max is repaired at once, as KEDA's executor and the HPA do.
    8. paused-scale-in: never below the current count; paused-scale-out: never above it. This is
       stricter than the HPA, whose range check still moves a count that is out of [min, max].
    The scale is recorded as a scale event on the assumption the caller applies it; if applying
    fails, the extra event only makes the rate limits stricter for one period. The returned state
    is all a restart needs; it changes only when something does (while active, every poll, as
    KEDA's lastActiveTime does), so the caller can write it to the status when it differs.
    Raises ConfigError (and decides nothing) for a sample whose target is not > 0.
    """
    current, now, pause = observation.current_replicas, observation.now, policy.pause
    if pause.paused or pause.replicas is not None:
        held = current if pause.replicas is None else pause.replicas
        detail = "paused" if pause.replicas is None else f"paused at {pause.replicas} replicas"
        decision = Decision(replicas=held, active=False, reason=Reason.PAUSED, details=(detail,))
        return decision, replace(state, history=replace(state.history, latest=None))

    votes: list[_Vote] = []
    failing: list[str] = []
    failures: dict[str, int] = {}
    activation: tuple[str | None, str] | None = None  # (trigger, why) of the first activity
    for name, sample in observation.samples.items():
        if sample is None:
            count = failures[name] = state.failures.get(name, 0) + 1
            fallback = policy.fallback
            if fallback is None or count <= fallback.failure_threshold:
                failing.append(name)
                continue
            replicas = _fallback_replicas(fallback, current)
            detail = (
                f"{name} failed {count} times (threshold {fallback.failure_threshold}): "
                f"fallback {fallback.behavior.value} -> {replicas}"
            )
            votes.append(_Vote(name, replicas, detail, fallback=True))
            activation = activation or (name, detail)
            continue
        replicas = replicas_for(
            sample,
            current,
            up_tolerance=policy.behavior.scale_up.tolerance,
            down_tolerance=policy.behavior.scale_down.tolerance,
        )
        detail = f"{name}={sample.value:g} (target {sample.target:g}) -> {replicas}"
        cap, capped = sample.replica_cap, False
        if cap is not None and replicas > cap:
            replicas, capped = cap, True
            detail += f", capped at {cap}"
        votes.append(_Vote(name, replicas, detail, capped=capped))
        if sample.value > sample.activation_target and activation is None:
            activation = (name, f"{name}={sample.value:g} > {sample.activation_target:g}")
    if activation is None and pause.force_activation:
        activation = (None, "force-activation annotation")
    active = activation is not None
    deciding = max(votes, key=lambda vote: vote.replicas, default=None)

    active_floor = max(policy.min_replicas, 1)
    idle_count = policy.min_replicas if policy.idle_replicas is None else policy.idle_replicas
    if state.last_active_time is None:
        since, wait = observation.created_at, policy.initial_cooldown_period
    else:
        since, wait = state.last_active_time, policy.cooldown_period
    cooled = now - since > wait
    can_idle = idle_count < active_floor
    idle = can_idle and not active and (current <= idle_count or (cooled and not failing))
    if idle:
        raw, floor = idle_count, idle_count
    else:
        raw, floor = (current if deciding is None else deciding.replicas), active_floor
    held = bool(failing) and not idle and (deciding is None or raw < current)

    if held:
        raw, stabilized, history = current, current, state.history
    else:
        stabilized, history = hpa.stabilize(
            policy.behavior, state.history, current=current, desired=raw, now=now
        )
        if idle and not policy.behavior.idle_window and state.last_active_time is not None:
            stabilized = raw  # after seen activity, the cooldown alone times the step to idle
    limited = hpa.limit_rate(policy.behavior, history, current=current, desired=stabilized, now=now)
    bounded = min(max(limited, floor), policy.max_replicas)
    target = bounded
    if pause.scale_in:
        target = max(target, current)
    if pause.scale_out:
        target = min(target, current)
    history = hpa.record_scale(policy.behavior, history, before=current, after=target, now=now)
    next_state = EngineState(
        last_active_time=now if active else state.last_active_time,
        history=history,
        failures=failures,
    )

    # Why: the first rule that explains the result, then what else shaped it.
    recommended = min(max(raw, floor), policy.max_replicas)
    trigger = None if idle or deciding is None else deciding.trigger
    details: list[str] = []
    if target != bounded:
        reason = Reason.PAUSED
        details.append("scale-in paused" if target > bounded else "scale-out paused")
    elif activation is not None and target > current and _activating(policy, current):
        reason, trigger = Reason.ACTIVATED, activation[0]
        details.append(activation[1])
    elif idle and target < current:
        reason, trigger = Reason.DEACTIVATED, None
        details.append(f"no trigger active for {now - since:.0f}s (cooldown {wait:g}s)")
    elif limited > policy.max_replicas:
        reason = Reason.CAPPED
    elif held:
        reason, trigger = Reason.TRIGGER_FAILING, failing[0]
        details.append(f"{', '.join(failing)} failing: not scaling down")
    elif deciding is not None and deciding.fallback and not idle:
        reason = Reason.FALLBACK
    elif can_idle and not active and not idle:
        reason, trigger = Reason.COOLDOWN, None
        details.append(f"no trigger active; cooldown ends in {max(since + wait - now, 0):g}s")
    elif target != recommended:
        reason = Reason.LIMITED_BY_POLICY
    elif raw > policy.max_replicas or (deciding is not None and deciding.capped and not idle):
        reason = Reason.CAPPED
    else:
        reason = Reason.SCALED
    if deciding is not None and not idle and deciding.detail not in details:
        details.append(deciding.detail)
    if target != recommended and reason is not Reason.PAUSED:
        details.append(f"behavior allows {target} now (recommended {recommended})")
    if raw > policy.max_replicas:
        details.append(f"capped at maxReplicaCount {policy.max_replicas}")
    if bounded > limited and reason is Reason.SCALED:
        details.append(f"raised to the minimum of {floor}")
    decision = Decision(
        replicas=target,
        active=active,
        reason=reason,
        fallback_active=any(vote.fallback for vote in votes),
        trigger=trigger,
        details=tuple(details),
    )
    return decision, next_state


def _fallback_replicas(fallback: Fallback, current: int) -> int:
    """The count a trigger in fallback proposes (keda-parity.md 2.4).

    scalingModifiers substitutes failed inputs inside the formula; when the composite itself
    cannot be computed, its fallback count is the static one.
    """
    if fallback.behavior is FallbackBehavior.CURRENT_REPLICAS:
        return current
    if fallback.behavior is FallbackBehavior.CURRENT_REPLICAS_IF_HIGHER:
        return max(current, fallback.replicas)
    if fallback.behavior is FallbackBehavior.CURRENT_REPLICAS_IF_LOWER:
        return min(current, fallback.replicas)
    return fallback.replicas


def _activating(policy: ScalingPolicy, current: int) -> bool:
    """KEDA's activation: from 0, or from below min when idleReplicaCount is set."""
    return current == 0 or (policy.idle_replicas is not None and current < policy.min_replicas)
