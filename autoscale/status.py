"""The ScaledObject's status and conditions, built from a decision; pure, no I/O.

Conditions and fields follow KEDA's (Ready, Active, Fallback, Paused; health, triggersActivity,
scaleTargetKind, ...), so `kubectl get so` and dashboards read the same. `engine` holds what the
scaling engine needs to resume after a restart.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Condition types
READY = "Ready"
ACTIVE = "Active"
FALLBACK = "Fallback"
PAUSED = "Paused"
CONDITION_ORDER = (READY, ACTIVE, FALLBACK, PAUSED)


@dataclass(frozen=True, slots=True, kw_only=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str


def rfc3339(seconds: float) -> str:
    """Seconds since the epoch as Kubernetes' RFC 3339 time (whole seconds, UTC)."""
    moment = datetime.datetime.fromtimestamp(int(seconds), datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    existing: Sequence[Mapping[str, Any]] | None, updates: Sequence[Condition], *, now: float
) -> list[dict[str, Any]]:
    """Conditions after `updates`, keeping lastTransitionTime where a status did not change."""
    by_type = {c.get("type"): dict(c) for c in existing or () if isinstance(c, Mapping)}
    for update in updates:
        previous = by_type.get(update.type) or {}
        transition = rfc3339(now)
        if previous.get("status") == update.status:
            transition = previous.get("lastTransitionTime") or transition
        by_type[update.type] = {
            "type": update.type,
            "status": update.status,
            "reason": update.reason,
            "message": update.message,
            "lastTransitionTime": transition,
        }
    ordered = [by_type.pop(t) for t in CONDITION_ORDER if t in by_type]
    return ordered + [by_type[t] for t in sorted(by_type, key=str)]


def ready(message: str = "ScaledObject is defined correctly and is ready for scaling") -> Condition:
    return Condition(type=READY, status="True", reason="ScaledObjectReady", message=message)


def not_ready(reason: str, message: str) -> Condition:
    return Condition(type=READY, status="False", reason=reason, message=message)


def active(is_active: bool, *, cooldown: bool = False, forced: bool = False) -> Condition:
    if is_active:
        message = (
            "Scaling is performed because of the force-activation annotation"
            if forced
            else "Scaling is performed because triggers are active"
        )
        return Condition(type=ACTIVE, status="True", reason="ScalerActive", message=message)
    if cooldown:
        return Condition(
            type=ACTIVE,
            status="False",
            reason="ScalerCooldown",
            message="Triggers are not active; waiting out the cooldown period",
        )
    return Condition(
        type=ACTIVE,
        status="False",
        reason="ScalerNotActive",
        message="Scaling is not performed because triggers are not active",
    )


def fallback(is_active: bool, failing: Sequence[str] = ()) -> Condition:
    if is_active:
        return Condition(
            type=FALLBACK,
            status="True",
            reason="FallbackExists",
            message="Fallback replicas are in effect: failing " + ", ".join(failing),
        )
    return Condition(
        type=FALLBACK,
        status="False",
        reason="NoFallbackFound",
        message="No fallbacks are active on this scaled object",
    )


def paused(is_paused: bool, replicas: int | None = None) -> Condition:
    if is_paused:
        message = "ScaledObject is paused" + (
            f" at {replicas} replicas" if replicas is not None else ""
        )
        return Condition(type=PAUSED, status="True", reason="ScaledObjectPaused", message=message)
    return Condition(
        type=PAUSED,
        status="False",
        reason="ScaledObjectUnpaused",
        message="ScaledObject is not paused",
    )


def health(failures: Mapping[str, int], metric_names: Sequence[str]) -> dict[str, Any]:
    """KEDA's status.health: per metric, consecutive failures and Happy/Failing."""
    return {
        name: {
            "numberOfFailures": failures.get(name, 0),
            "status": "Failing" if failures.get(name, 0) else "Happy",
        }
        for name in metric_names
    }


def only_refreshes_changed(
    previous: Mapping[str, Any] | None, current: Mapping[str, Any], settled: int
) -> bool:
    """Whether status body `current` differs from `previous` only in figures that move on
    every poll without changing any decision, so the loop may write them less often:

    - consecutive-failure counts (`health`, `engine.failures`) that were already at `settled`
      or more and still are (`settled` is failureThreshold + 1 with a fallback, else 1);
    - `lastActiveTime` (and the engine's copy) moving on while the object stays active (both
      bodies have one; becoming inactive changes the `Active` condition, which is written).

    KEDA writes both on every poll: an active or failing object costs the API server a write
    per object per poll. The loop writes them once a minute (`loop.STATUS_REFRESH`)."""
    if previous is None or previous == current:
        return False
    return _settle(previous, settled, current) == _settle(current, settled, previous)


def _settle(body: Mapping[str, Any], settled: int, other: Mapping[str, Any]) -> dict[str, Any]:
    """`body` with failure counts above `settled` lowered to it, and without lastActiveTime
    where `other` has one too."""
    found = dict(body)
    if isinstance(body.get("health"), Mapping):
        found["health"] = {
            name: {**entry, "numberOfFailures": min(entry.get("numberOfFailures", 0), settled)}
            for name, entry in body["health"].items()
        }
    if "lastActiveTime" in body and "lastActiveTime" in other:
        del found["lastActiveTime"]
    engine, other_engine = body.get("engine"), other.get("engine")
    if isinstance(engine, Mapping):
        engine = dict(engine)
        if isinstance(engine.get("failures"), Mapping):
            engine["failures"] = {n: min(c, settled) for n, c in engine["failures"].items()}
        if isinstance(other_engine, Mapping) and "lastActiveTime" in other_engine:
            engine.pop("lastActiveTime", None)
        found["engine"] = engine
    return found
