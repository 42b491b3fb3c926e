"""The HPA's `behavior` (autoscaling/v2): stabilization windows and rate policies, as we apply them.

Owns the typed form of `advanced.horizontalPodAutoscalerConfig.behavior` with the HPA's defaults,
and the pure functions that turn a raw replica recommendation into an allowed one. Pure: no I/O,
no clock (`now` is an argument, in seconds), and the history is plain data the caller persists.
Clamping to [min, max] is the caller's job (replicas.py), as in the HPA it comes last.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, TypeVar

from autoscale.errors import ConfigError

BEHAVIOR_PATH = "spec.advanced.horizontalPodAutoscalerConfig.behavior"
DEFAULT_TOLERANCE = 0.1  # the cluster-wide --horizontal-pod-autoscaler-tolerance default
MAX_STABILIZATION_WINDOW_SECONDS = 3600
MAX_PERIOD_SECONDS = 1800

_E = TypeVar("_E", bound=enum.Enum)


class PolicyType(enum.Enum):
    """How a policy's value limits a change: a number of pods or a percentage of them."""

    PODS = "Pods"
    PERCENT = "Percent"


class SelectPolicy(enum.Enum):
    """Which policy wins: the largest allowed change, the smallest, or no change at all."""

    MAX = "Max"
    MIN = "Min"
    DISABLED = "Disabled"


@dataclass(frozen=True, slots=True, kw_only=True)
class HPAScalingPolicy:
    """At most `value` pods (or percent) of change per `period_seconds`."""

    type: PolicyType
    value: int
    period_seconds: int


@dataclass(frozen=True, slots=True, kw_only=True)
class HPAScalingRules:
    """The rules of one direction: scaleUp or scaleDown."""

    stabilization_window_seconds: int
    select_policy: SelectPolicy = SelectPolicy.MAX
    policies: tuple[HPAScalingPolicy, ...]
    tolerance: float = DEFAULT_TOLERANCE  # KEP-4951's per-direction tolerance


SCALE_UP_DEFAULTS = HPAScalingRules(
    stabilization_window_seconds=0,
    policies=(
        HPAScalingPolicy(type=PolicyType.PODS, value=4, period_seconds=15),
        HPAScalingPolicy(type=PolicyType.PERCENT, value=100, period_seconds=15),
    ),
)
SCALE_DOWN_DEFAULTS = HPAScalingRules(
    stabilization_window_seconds=300,
    policies=(HPAScalingPolicy(type=PolicyType.PERCENT, value=100, period_seconds=15),),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Behavior:
    """Both directions; the defaults are the HPA's.

    `idle_window` says whether the scale-down stabilization window also holds back the step to
    idle (or 0) once the cooldown is over: only when the user set that window explicitly. With
    no window written, the step to idle happens when cooldownPeriod says, as in KEDA, whose
    executor scales to zero after the cooldown whatever its HPA's default window.
    """

    scale_up: HPAScalingRules = SCALE_UP_DEFAULTS
    scale_down: HPAScalingRules = SCALE_DOWN_DEFAULTS
    idle_window: bool = False

    @property
    def longest_window(self) -> int:
        """How long a recommendation can matter, in seconds."""
        return max(
            self.scale_up.stabilization_window_seconds, self.scale_down.stabilization_window_seconds
        )

    @property
    def longest_period(self) -> int:
        """How long a scale event can matter, in seconds (both directions read both lists)."""
        periods = [p.period_seconds for p in self.scale_up.policies + self.scale_down.policies]
        return max(periods, default=0)


Entry = tuple[float, int]  # (timestamp in seconds, replicas)


@dataclass(frozen=True, slots=True, kw_only=True)
class History:
    """What the behavior remembers between decisions; the controller keeps it in the status.

    A raw (unstabilized) recommendation stays in force until a different one replaces it, so a
    poll that repeats it changes nothing here, and an object that sits idle never needs a status
    write. `latest` is the one in force, counted as made "now" by every window; None means none
    is known (a new object, or just after a pause) and the current count stands in for it, as
    the HPA seeds its history. `recommendations` holds earlier ones as (when they were replaced,
    value), the latest per value only. The event lists hold (when, replicas added or removed).
    """

    recommendations: tuple[Entry, ...] = ()
    latest: int | None = None
    scale_up_events: tuple[Entry, ...] = ()
    scale_down_events: tuple[Entry, ...] = ()

    def to_status(self) -> dict[str, Any]:
        """A JSON-able dict; `from_status` reads it back to an equal History."""
        status: dict[str, Any] = {
            "recommendations": [[t, n] for t, n in self.recommendations],
            "scaleUpEvents": [[t, n] for t, n in self.scale_up_events],
            "scaleDownEvents": [[t, n] for t, n in self.scale_down_events],
        }
        if self.latest is not None:
            status["latest"] = self.latest
        return status

    @classmethod
    def from_status(cls, raw: Mapping[str, Any] | None) -> History:
        """Inverse of `to_status`; None or {} gives a fresh History; ValueError if malformed."""
        raw = raw or {}
        latest = raw.get("latest")
        if latest is not None and (isinstance(latest, bool) or not isinstance(latest, int)):
            raise ValueError(f"latest: expected an integer, got {latest!r}")
        return cls(
            recommendations=_entries(raw.get("recommendations", ()), "recommendations"),
            latest=latest,
            scale_up_events=_entries(raw.get("scaleUpEvents", ()), "scaleUpEvents"),
            scale_down_events=_entries(raw.get("scaleDownEvents", ()), "scaleDownEvents"),
        )


def _entries(raw: Any, key: str) -> tuple[Entry, ...]:
    try:
        entries = tuple((float(t), n) for t, n in raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{key}: expected a list of [timestamp, replicas] pairs") from exc
    if not all(isinstance(n, int) and not isinstance(n, bool) for _, n in entries):
        raise ValueError(f"{key}: replicas must be integers")
    return entries


# ---------------------------------------------------------------------------------------------
# Applying it: stabilize, then limit the rate (the caller clamps, then records the scale).
# ---------------------------------------------------------------------------------------------


def stabilize(
    behavior: Behavior, history: History, *, current: int, desired: int, now: float
) -> tuple[int, History]:
    """Stabilize `desired` and put it in force; return the stabilized count and the new history.

    Scale-up follows the lowest recommendation of its window and scale-down the highest of its
    window, both including `desired`: the result is `current` raised to the first, then lowered to
    the second, so it always lies between `current` and `desired`. A recommendation is in a window
    of w seconds when it was in force after `now - w`: a window of 0 holds only `desired`, and one
    of w holds what was in force at the previous poll (the HPA would drop it once the poll is
    more than w seconds old, so windows shorter than the polling interval hold one poll longer).
    """
    in_force = current if history.latest is None else history.latest
    entries = (*history.recommendations, (now, in_force))
    up_cutoff = now - behavior.scale_up.stabilization_window_seconds
    down_cutoff = now - behavior.scale_down.stabilization_window_seconds
    up_recommendation = min([desired, *(n for t, n in entries if t > up_cutoff)])
    down_recommendation = max([desired, *(n for t, n in entries if t > down_cutoff)])
    stabilized = min(max(current, up_recommendation), down_recommendation)
    if in_force == desired and history.latest is not None:
        return stabilized, history
    keep_after = now - behavior.longest_window
    latest_per_value = {n: t for t, n in sorted(entries) if t > keep_after and n != desired}
    kept = tuple(sorted((t, n) for n, t in latest_per_value.items()))
    return stabilized, replace(history, recommendations=kept, latest=desired)


def limit_rate(
    behavior: Behavior, history: History, *, current: int, desired: int, now: float
) -> int:
    """Limit the move from `current` to `desired` by the policies of its direction.

    Each policy measures from the count at the start of its period: `current`, minus what was
    added and plus what was removed by scale events after `now - periodSeconds`. Up: Pods adds
    `value`, Percent multiplies by (1 + value/100) rounded up. Down: Pods removes `value`, Percent
    multiplies by (1 - value/100) truncated. Max takes the largest change, Min the smallest,
    Disabled none. A limit never moves past `current` the wrong way. Exact integer maths, where the
    HPA uses float64 and can be off by one at exact boundaries (100 x 0.93 = 92.99...).
    """
    if desired > current:
        limit = _limit(behavior.scale_up, history, current=current, now=now, up=True)
        return desired if limit is None else min(desired, max(limit, current))
    if desired < current:
        limit = _limit(behavior.scale_down, history, current=current, now=now, up=False)
        return desired if limit is None else max(desired, min(limit, current))
    return desired


def _limit(
    rules: HPAScalingRules, history: History, *, current: int, now: float, up: bool
) -> int | None:
    if rules.select_policy is SelectPolicy.DISABLED:
        return current
    limits = []
    for policy in rules.policies:
        cutoff = now - policy.period_seconds
        added = sum(n for t, n in history.scale_up_events if t > cutoff)
        removed = sum(n for t, n in history.scale_down_events if t > cutoff)
        start = current - added + removed
        if policy.type is PolicyType.PODS:
            limits.append(start + policy.value if up else start - policy.value)
        elif up:
            limits.append(math.ceil(Fraction(start * (100 + policy.value), 100)))
        else:
            limits.append(int(Fraction(start * (100 - policy.value), 100)))
    if not limits:
        return None
    largest_change = max if up else min
    smallest_change = min if up else max
    pick = largest_change if rules.select_policy is SelectPolicy.MAX else smallest_change
    return pick(limits)


def record_scale(
    behavior: Behavior, history: History, *, before: int, after: int, now: float
) -> History:
    """Record a scale from `before` to `after` (nothing if equal); drop events no policy can see."""
    cutoff = now - behavior.longest_period
    up = tuple(entry for entry in history.scale_up_events if entry[0] > cutoff)
    down = tuple(entry for entry in history.scale_down_events if entry[0] > cutoff)
    if after > before:
        up = (*up, (now, after - before))
    elif after < before:
        down = (*down, (now, before - after))
    return replace(history, scale_up_events=up, scale_down_events=down)


# ---------------------------------------------------------------------------------------------
# Parsing the CR's camelCase mapping.
# ---------------------------------------------------------------------------------------------


def parse_behavior(raw: Mapping[str, Any] | None, *, path: str = BEHAVIOR_PATH) -> Behavior:
    """Read `behavior` as the HPA does: absent directions and fields take the HPA's defaults.

    Raises ConfigError naming the field path (e.g. `...behavior.scaleUp.policies[0].value`).
    """
    if raw is None:
        return Behavior()
    _check_keys(raw, {"scaleUp", "scaleDown"}, path)
    scale_down = raw.get("scaleDown")
    return Behavior(
        scale_up=_parse_rules(raw.get("scaleUp"), SCALE_UP_DEFAULTS, f"{path}.scaleUp"),
        scale_down=_parse_rules(scale_down, SCALE_DOWN_DEFAULTS, f"{path}.scaleDown"),
        idle_window=isinstance(scale_down, Mapping)
        and scale_down.get("stabilizationWindowSeconds") is not None,
    )


_RULES_KEYS = {"stabilizationWindowSeconds", "selectPolicy", "policies", "tolerance"}
_POLICY_KEYS = {"type", "value", "periodSeconds"}


def _parse_rules(raw: Any, defaults: HPAScalingRules, path: str) -> HPAScalingRules:
    if raw is None:
        return defaults
    _check_keys(raw, _RULES_KEYS, path)
    rules = defaults
    window = raw.get("stabilizationWindowSeconds")
    if window is not None:
        window = _integer(
            window, f"{path}.stabilizationWindowSeconds", 0, MAX_STABILIZATION_WINDOW_SECONDS
        )
        rules = replace(rules, stabilization_window_seconds=window)
    select = raw.get("selectPolicy")
    if select is not None:
        rules = replace(rules, select_policy=_enum(SelectPolicy, select, f"{path}.selectPolicy"))
    policies = raw.get("policies")
    if policies is not None:
        if isinstance(policies, str | bytes) or not isinstance(policies, Sequence):
            raise ConfigError(f"{path}.policies: must be a list of policies")
        if not policies:
            raise ConfigError(f"{path}.policies: must hold at least one policy when set")
        parsed = tuple(_parse_policy(p, f"{path}.policies[{i}]") for i, p in enumerate(policies))
        rules = replace(rules, policies=parsed)
    tolerance = raw.get("tolerance")
    if tolerance is not None:
        rules = replace(rules, tolerance=_tolerance(tolerance, f"{path}.tolerance"))
    return rules


def _parse_policy(raw: Any, path: str) -> HPAScalingPolicy:
    _check_keys(raw, _POLICY_KEYS, path)
    for key in sorted(_POLICY_KEYS):
        if raw.get(key) is None:
            raise ConfigError(f"{path}.{key}: required")
    return HPAScalingPolicy(
        type=_enum(PolicyType, raw["type"], f"{path}.type"),
        value=_integer(raw["value"], f"{path}.value", 1, None),
        period_seconds=_integer(
            raw["periodSeconds"], f"{path}.periodSeconds", 1, MAX_PERIOD_SECONDS
        ),
    )


def _check_keys(raw: Any, allowed: set[str], path: str) -> None:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: must be an object")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{path}: unknown field {unknown[0]!r}")


def _integer(raw: Any, path: str, minimum: int, maximum: int | None) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ConfigError(f"{path}: must be an integer, got {raw!r}")
    if raw < minimum or (maximum is not None and raw > maximum):
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ConfigError(f"{path}: must be {bounds}, got {raw}")
    return raw


def _enum(kind: type[_E], raw: Any, path: str) -> _E:
    for member in kind:
        if member.value == raw:
            return member
    choices = ", ".join(str(m.value) for m in kind)
    raise ConfigError(f"{path}: must be one of {choices}, got {raw!r}")


_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?P<suffix>[a-zA-Z]*|[eE][+-]?[0-9]+)"
)
_SUFFIXES = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    **{s: Fraction(1024**i) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), start=1)},
}


def _tolerance(raw: Any, path: str) -> float:
    """A Kubernetes quantity (0.05, "0.05", "50m", "5e-2") that must be >= 0."""
    value: Fraction | None = None
    if isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw):
        value = Fraction(repr(raw))
    elif isinstance(raw, str) and (match := _QUANTITY.fullmatch(raw)):
        suffix = match["suffix"]
        if suffix[:1] in ("e", "E"):
            value = Fraction(match["number"] + suffix)
        elif suffix in _SUFFIXES:
            value = Fraction(match["number"]) * _SUFFIXES[suffix]
    if value is None:
        raise ConfigError(f"{path}: must be a quantity such as 0.05 or 50m, got {raw!r}")
    if value < 0:
        raise ConfigError(f"{path}: must not be negative, got {raw!r}")
    return float(value)
