"""One ScaledObject's poll loop: sample its triggers, decide, patch /scale, write status.

The loop owns the object's scalers and engine state. Each tick, on a drift-free schedule, it
samples every trigger in parallel under a timeout, asks `replicas.decide` for the count,
patches the target's /scale only when the count must change, and writes the status only when
it differs from what it last wrote. Nothing here decides a count: that is replicas.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from autoscale import behavior, formula, pause, replicas, status
from autoscale.errors import (
    ConfigError,
    KubeError,
    ScalerError,
    ScalerUnavailableError,
    TargetNotFoundError,
)
from autoscale.kube import (
    ApiBusyError,
    Kube,
    NoScaleSubresourceError,
    ReplicaCache,
    Scale,
    TargetResource,
)
from autoscale.model import ScaledObject, Trigger
from autoscale.scalers.base import MetricSample, Scaler

log = logging.getLogger(__name__)

COMPOSITE_METRIC = "composite-metric"
# After a 429 or 5xx from the API server, the loop's next tick waits the server's Retry-After
# or the next step of this backoff, whichever is longer; a tick without one resets it.
API_BACKOFF_INITIAL = 1.0
API_BACKOFF_MAX = 60.0
# A spec that cannot be used is tried again after 1 s, doubling up to 60 s.
CONFIGURE_RETRY_INITIAL = 1.0
CONFIGURE_RETRY_MAX = 60.0
# Status figures that move on every poll without changing a decision (a failure count past the
# threshold, lastActiveTime of an object that stays active: status.only_refreshes_changed) are
# written this often, not at every poll.
STATUS_REFRESH = 60.0


def phase_of(key: str) -> float:
    """A stable fraction in [0, 1) from an object's uid: where in each polling interval its
    ticks fall, so objects created together (or an operator restart) do not all poll in one
    burst every interval. The same in every process (unlike `hash()`)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def next_due(now: float, interval: float, phase: float) -> float:
    """The first time strictly after `now` that sits at `phase` (a fraction of `interval`) in
    the schedule `phase * interval + k * interval`. After a tick that started on time this is
    the previous due time plus one interval; after an overrun it skips the missed slots (never
    a burst). It is never more than one interval after `now`."""
    offset = phase * interval
    due = offset + math.ceil((now - offset) / interval) * interval
    # A slot a rounding error after `now` is `now`'s own slot (a tick that started on time).
    slack = interval * 1e-9
    while due <= now + slack:
        due += interval
    while due - interval > now + slack:
        due -= interval
    return due


def due_after_tick(started: float, ended: float, interval: float, phase: float) -> float:
    """When the tick after one that started at `started` and ended at `ended` is due: the next
    slot at `phase` after the start, so two ticks are never more than an interval apart; or
    at once if the tick ran past that slot (one late tick, never a burst of missed ones)."""
    return max(next_due(started, interval, phase), ended)


def rebuilds_after(exc: BaseException) -> bool:
    """Whether a trigger's scaler is closed and built again after a poll failed with `exc`.
    A transient failure (unreachable, timed out, a library surprise) rebuilds it, as KEDA
    does; a permanent one (a missing queue, a bad query, a bad spec) keeps it: rebuilding would
    only reopen a shared connection on every poll of a source that answers."""
    if isinstance(exc, ConfigError):
        return False
    if isinstance(exc, ScalerError):
        return exc.transient
    return True


class ScaleAccess(Protocol):
    """Reads and patches a target's /scale: `Kube`, or a `ReplicaCache` in front of it."""

    async def get_scale(self, target: TargetResource, namespace: str, name: str) -> Scale: ...

    async def patch_scale(
        self, target: TargetResource, namespace: str, name: str, replicas: int
    ) -> Scale: ...


class ScalerFactory(Protocol):
    """Builds a trigger's scaler (no I/O to the source) from its resolved authentication."""

    async def build(
        self, so: ScaledObject, trigger: Trigger, *, rebuild: bool = False
    ) -> tuple[Scaler, str]:
        """The scaler and the digest of the credentials it was built with."""
        ...

    async def auth_digest(self, so: ScaledObject, trigger: Trigger) -> str:
        """The digest of the trigger's credentials now; a change calls for a rebuild."""
        ...


class EventSink(Protocol):
    async def __call__(self, *, event_type: str, reason: str, message: str) -> None: ...


class Observer(Protocol):
    """What the loop reports to metrics; `autoscale.metrics.Metrics` implements it."""

    def observe_trigger(
        self,
        *,
        namespace: str,
        name: str,
        trigger: str,
        metric: str,
        value: float,
        target: float,
        active: bool,
        latency: float,
    ) -> None: ...

    def trigger_error(
        self, *, namespace: str, name: str, trigger: str, metric: str, latency: float | None = None
    ) -> None: ...

    def observe_object(
        self, *, namespace: str, name: str, current: int, desired: int, paused: bool
    ) -> None: ...

    def scaled(self, *, namespace: str, name: str, direction: Literal["up", "down"]) -> None: ...

    def object_error(self, *, namespace: str, name: str) -> None: ...

    def polled(self, *, namespace: str, name: str, at: float) -> None: ...

    def forget_object(self, namespace: str, name: str) -> None: ...

    def observe_lateness(self, seconds: float) -> None: ...


def build_policy(so: ScaledObject) -> replicas.ScalingPolicy:
    """The engine's policy from the spec and the pause annotations (raises ConfigError)."""
    spec = so.spec
    hpa_config = spec.advanced.horizontal_pod_autoscaler_config
    return replicas.ScalingPolicy(
        min_replicas=spec.min_replica_count,
        max_replicas=spec.max_replica_count,
        idle_replicas=spec.idle_replica_count,
        cooldown_period=float(spec.cooldown_period),
        initial_cooldown_period=float(spec.initial_cooldown_period),
        fallback=spec.fallback,
        behavior=behavior.parse_behavior(hpa_config.behavior if hpa_config else None),
        pause=pause.parse_pause(so.metadata.annotations),
    )


@dataclass
class _Trigger:
    trigger: Trigger
    metric_name: str
    scaler: Scaler | None = None
    auth_digest: str = ""
    failing: bool = False
    error: str = ""  # why the current streak of failures began (the ScalerFailed event's text)

    @functools.cached_property
    def has_credentials(self) -> bool:
        """Whether its credentials come from elsewhere (a TriggerAuthentication or the
        workload's env) and may change under a running scaler; otherwise there is nothing
        to re-check each poll."""
        return self.trigger.authentication_ref is not None or self.trigger.reads_workload_env


@dataclass
class LoopState:
    """What the loop remembers between ticks (beyond the engine's own state)."""

    engine: replicas.EngineState
    last_status: dict[str, Any] | None = None
    original_replicas: int | None = None
    active: bool | None = None
    fallback_active: bool = False
    ready_reason: str | None = None
    conditions: list[dict[str, Any]] = field(default_factory=list)
    written_at: float = -math.inf  # time.monotonic() of the last status write


class ScaleLoop:
    """Polls one ScaledObject until cancelled; a new generation means a new loop."""

    def __init__(
        self,
        *,
        so: ScaledObject,
        raw: Mapping[str, Any],
        kube: Kube,
        scalers: ScalerFactory,
        emit: EventSink,
        observer: Observer | None = None,
        blocked_by: Callable[[], str | None] = lambda: None,
        poll_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        replica_cache: ReplicaCache | None = None,
    ) -> None:
        self.so = so
        self.raw = raw
        self.kube = kube
        self.scales: ScaleAccess = replica_cache if replica_cache is not None else kube
        self.scalers = scalers
        self.emit = emit
        self.observer = observer
        self.blocked_by = blocked_by
        self.poll_timeout = poll_timeout
        self.clock = clock
        self.namespace = so.metadata.namespace or ""
        self.name = so.metadata.name
        self.label = f"{self.namespace}/{self.name}"
        self.target_ref = so.spec.scale_target_ref
        self.target: TargetResource | None = None
        raw_status = so.status
        self.state = LoopState(
            engine=_engine_state(raw_status.get("engine")),
            original_replicas=_int_or_none(raw_status.get("originalReplicaCount")),
            conditions=[dict(c) for c in raw_status.get("conditions") or ()],
            last_status=None,
        )
        self.state.engine = resumed_engine(
            self.state.engine,
            self.state.conditions,
            now=clock(),
            polling_interval=so.spec.polling_interval,
        )
        self.triggers: list[_Trigger] = []
        self.modifiers: formula.ScalingModifiers | None = None
        self.policy: replicas.ScalingPolicy | None = None
        self._api_backoff = 0.0  # the current step; 0 while the API server answers
        self._retry_at: float | None = None  # time.monotonic() before which no tick starts
        self._throttled = False  # a 429 or 5xx during this tick
        self._scale_failing = False  # the last /scale patch failed (one event per streak)
        created = so.metadata.creation_timestamp
        self.created_at = created.timestamp() if created else clock()
        self.phase = phase_of(so.metadata.uid or self.label)
        self._static: tuple[tuple[int, int], dict[str, Any]] | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            retry = CONFIGURE_RETRY_INITIAL
            while not await self._configure():
                # Retried: a reference may be missing only for now (a TriggerAuthentication
                # created later), or unreadable because the API server failed for a moment.
                # A spec that is wrong stays reported, at no cost: conditions and events are
                # written on change only.
                await asyncio.sleep(retry * random.uniform(0.9, 1.1))
                retry = min(retry * 2, CONFIGURE_RETRY_MAX)
                await self.close()
            interval = float(self.so.spec.polling_interval)
            due = time.monotonic() + random.uniform(0, min(1.0, interval / 10))
            while True:
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                lateness = time.monotonic() - due
                if self.observer:
                    self.observer.observe_lateness(max(0.0, lateness))
                self._throttled = False
                started = time.monotonic()
                await self.tick()
                if self.observer:
                    self.observer.polled(namespace=self.namespace, name=self.name, at=self.clock())
                if not self._throttled:
                    self._api_backoff = 0.0
                # The first tick came promptly; the following ones sit at this object's phase
                # of the interval, so many objects' polls spread evenly over it.
                due = due_after_tick(started, time.monotonic(), interval, self.phase)
                if self._retry_at is not None and due < self._retry_at:
                    due = self._retry_at  # the API server asked us to slow down
        finally:
            await self.close()

    async def close(self) -> None:
        for entry in self.triggers:
            await self._close_scaler(entry)

    async def _configure(self) -> bool:
        """Build the policy, scalers and formula; on a bad spec report it and return False."""
        try:
            self.policy = build_policy(self.so)
            named = [t.name for t in self.so.spec.triggers]
            if self.so.spec.advanced.scaling_modifiers is not None:
                self.modifiers = formula.validate_scaling_modifiers(
                    self.so.spec.advanced.scaling_modifiers, named
                )
            self.triggers = []
            self._static = None
            for trigger in self.so.spec.triggers:
                scaler, digest = await self.scalers.build(self.so, trigger)
                self.triggers.append(
                    _Trigger(
                        trigger=trigger,
                        metric_name=_metric_name(scaler, trigger),
                        scaler=scaler,
                        auth_digest=digest,
                    )
                )
        except ConfigError as exc:
            await self._report_not_ready("ScaledObjectCheckFailed", str(exc))
            return False
        await self.emit(
            event_type="Normal",
            reason="ScalersStarted",
            message="Started scalers watch: " + ", ".join(t.metric_name for t in self.triggers),
        )
        return True

    # --- one tick ----------------------------------------------------------------------------

    async def tick(self) -> None:
        """One poll: sample, decide, scale, report. Never raises but for cancellation."""
        assert self.policy is not None
        now = self.clock()
        try:
            if self.target is None:
                self.target = await self.kube.resolve_target(
                    self.target_ref.api_version, self.target_ref.kind
                )
            scale = await self.scales.get_scale(self.target, self.namespace, self.target_ref.name)
        except (TargetNotFoundError, NoScaleSubresourceError) as exc:
            self.target = None
            message = str(exc)
            if self.target_ref.name not in message:  # discovery errors name only the kind
                ref = self.target_ref
                message = f"{ref.kind} {self.namespace}/{ref.name}: {message}"
            await self._report_not_ready("ScaleTargetNotFound", message)
            return
        except KubeError as exc:
            self._api_failed(exc)
            log.warning("%s: reading the scale target failed: %s", self.label, exc)
            await self._report_not_ready("ErrorGettingCurrentReplicas", str(exc))
            return
        current = scale.spec_replicas
        if self.state.original_replicas is None:
            self.state.original_replicas = current

        owner = self.blocked_by()
        if owner is not None:
            await self._report_not_ready("ScaleTargetConflict", owner)
            return

        samples = await self._sample_all()
        engine_samples: Mapping[str, MetricSample | None] = samples
        if self.modifiers is not None:
            engine_samples = {COMPOSITE_METRIC: self._composite(samples)}
        decision, engine = replicas.decide(
            self.policy,
            self.state.engine,
            replicas.Observation(
                samples=engine_samples,
                current_replicas=current,
                now=now,
                created_at=self.created_at,
            ),
        )
        desired = decision.replicas
        if desired != current and not await self._apply(current, desired, decision):
            return  # the engine state stays as it was: the scale did not happen
        self.state.engine = engine
        await self._after_decision(now, current, decision, samples)

    async def _sample_all(self) -> dict[str, MetricSample | None]:
        if len(self.triggers) == 1:  # most objects: no task and gather per poll
            entry = self.triggers[0]
            return {entry.metric_name: await self._sample(entry)}
        results = await asyncio.gather(*(self._sample(entry) for entry in self.triggers))
        return {
            entry.metric_name: result for entry, result in zip(self.triggers, results, strict=True)
        }

    async def _sample(self, entry: _Trigger) -> MetricSample | None:
        started = time.monotonic()
        try:
            if entry.scaler is not None and entry.has_credentials:
                digest = await self.scalers.auth_digest(self.so, entry.trigger)
                if digest != entry.auth_digest:  # e.g. a rotated Secret
                    log.info(
                        "%s: credentials of %s changed; reconnecting", self.label, entry.metric_name
                    )
                    await self._close_scaler(entry)
            if entry.scaler is None:
                entry.scaler, entry.auth_digest = await self.scalers.build(
                    self.so, entry.trigger, rebuild=True
                )
            async with asyncio.timeout(self.poll_timeout):
                sample = await _sample_or_fail(entry.scaler)
        except Exception as exc:  # any failure of a trigger is that trigger failing
            # A scaler's own errors carry safe messages; anything else is a bug or a library
            # surprise whose text may hold a credential, so only its type is told.
            if isinstance(exc, TimeoutError):
                reason = "timed out"
            elif isinstance(exc, ScalerError | ConfigError):
                reason = str(exc)
            else:
                reason = f"unexpected {type(exc).__name__} from the {entry.trigger.type} scaler"
            if not entry.failing:
                entry.error = reason
                log.warning("%s: trigger %s failed: %s", self.label, entry.metric_name, reason)
                await self.emit(
                    event_type="Warning",
                    reason="ScalerFailed",
                    message=f"{entry.metric_name}: {reason}",
                )
            entry.failing = True
            if self.observer:
                self.observer.trigger_error(
                    namespace=self.namespace,
                    name=self.name,
                    trigger=entry.trigger.type,
                    metric=entry.metric_name,
                    latency=time.monotonic() - started,
                )
            if rebuilds_after(exc):
                await self._close_scaler(entry)
            return None
        if entry.failing:
            log.info("%s: trigger %s recovered", self.label, entry.metric_name)
            entry.failing = False
        if self.observer:
            self.observer.observe_trigger(
                namespace=self.namespace,
                name=self.name,
                trigger=entry.trigger.type,
                metric=entry.metric_name,
                value=sample.value,
                target=sample.target,
                active=sample.value > sample.activation_target,
                latency=time.monotonic() - started,
            )
        return sample

    def _composite(self, samples: Mapping[str, MetricSample | None]) -> MetricSample | None:
        assert self.modifiers is not None
        values: dict[str, float | None] = {}
        for entry in self.triggers:
            if entry.trigger.name:
                sample = samples.get(entry.metric_name)
                values[entry.trigger.name] = sample.value if sample else None
        try:
            value = self.modifiers.formula.evaluate(values)
        except ScalerError as exc:
            log.warning("%s: scalingModifiers formula failed: %s", self.label, exc)
            return None
        return MetricSample(
            name=COMPOSITE_METRIC,
            value=value,
            target=self.modifiers.target,
            activation_target=self.modifiers.activation_target,
            metric_type=self.modifiers.metric_type,
        )

    async def _apply(self, current: int, desired: int, decision: replicas.Decision) -> bool:
        assert self.target is not None
        try:
            await self.scales.patch_scale(
                self.target, self.namespace, self.target_ref.name, desired
            )
        except KubeError as exc:
            self._api_failed(exc)
            log.warning("%s: scaling %d -> %d failed: %s", self.label, current, desired, exc)
            if not self._scale_failing:  # one event per streak of failures, not per attempt
                await self.emit(
                    event_type="Warning",
                    reason="ScaleFailed",
                    message=f"scaling {current} -> {desired} failed: {exc}",
                )
            self._scale_failing = True
            return False
        self._scale_failing = False
        log.info(
            "%s %d -> %d: %s (%s)",
            self.label,
            current,
            desired,
            decision.message,
            decision.reason.value,
        )
        if self.observer:
            self.observer.scaled(
                namespace=self.namespace,
                name=self.name,
                direction="up" if desired > current else "down",
            )
        if current == 0 and desired > 0:
            await self.emit(
                event_type="Normal",
                reason="ScaleTargetActivated",
                message=f"Scaled {self.target.kind} {self.namespace}/"
                f"{self.target_ref.name} from 0 to {desired}: {decision.message}",
            )
        elif desired == 0:
            await self.emit(
                event_type="Normal",
                reason="ScaleTargetDeactivated",
                message=f"Scaled {self.target.kind} {self.namespace}/"
                f"{self.target_ref.name} from {current} to 0",
            )
        else:
            await self.emit(
                event_type="Normal",
                reason="Rescaled",
                message=f"New size: {desired} (was {current}); {decision.message}",
            )
        return True

    async def _after_decision(
        self,
        now: float,
        current: int,
        decision: replicas.Decision,
        samples: Mapping[str, MetricSample | None],
    ) -> None:
        assert self.policy is not None
        if decision.fallback_active != self.state.fallback_active:
            await self.emit(
                event_type="Warning" if decision.fallback_active else "Normal",
                reason="FallbackActivated" if decision.fallback_active else "FallbackDeactivated",
                message="fallback replicas "
                + ("in effect" if decision.fallback_active else "lifted"),
            )
            self.state.fallback_active = decision.fallback_active
        if self.state.ready_reason is not None:
            await self.emit(
                event_type="Normal",
                reason="ScaledObjectReady",
                message="ScaledObject is ready for scaling",
            )
        self.state.ready_reason = None
        failing = [name for name, sample in samples.items() if sample is None]
        # The reason a streak began, not each poll's: the condition (and so the status write)
        # changes once per streak, not whenever an error's wording does.
        errors = {entry.metric_name: entry.error for entry in self.triggers if entry.failing}
        pause_state = self.policy.pause
        conditions = [
            status.ready()
            if not failing
            else status.Condition(
                type=status.READY,
                status="True" if len(failing) < len(samples) else "False",
                reason="PartialTriggerError" if len(failing) < len(samples) else "TriggerError",
                message="failing: "
                + "; ".join(
                    f"{name}: {errors[name]}" if errors.get(name) else name for name in failing
                ),
            ),
            status.active(
                decision.active,
                cooldown=decision.reason is replicas.Reason.COOLDOWN,
                forced=pause_state.force_activation,
            ),
            status.fallback(decision.fallback_active, failing),
            status.paused(pause_state.paused, pause_state.replicas),
        ]
        if self.observer:
            self.observer.observe_object(
                namespace=self.namespace,
                name=self.name,
                current=current,
                desired=decision.replicas,
                paused=pause_state.paused,
            )
        await self._write_status(now, conditions, samples)

    async def _report_not_ready(self, reason: str, message: str) -> None:
        """Ready=False with the reason, a Warning event once per reason, no scaling."""
        if self.observer:
            self.observer.object_error(namespace=self.namespace, name=self.name)
        if self.state.ready_reason != reason:
            log.warning("%s: not ready (%s): %s", self.label, reason, message)
            await self.emit(event_type="Warning", reason=reason, message=message)
            self.state.ready_reason = reason
        await self._write_status(self.clock(), [status.not_ready(reason, message)], {})

    async def _write_status(
        self,
        now: float,
        conditions: list[status.Condition],
        samples: Mapping[str, MetricSample | None],
    ) -> None:
        engine = self.state.engine
        static = self._static_status()
        metric_names = static["externalMetricNames"]
        body: dict[str, Any] = {
            "conditions": status.merge_conditions(self.state.conditions, conditions, now=now),
            "scaleTargetKind": static["scaleTargetKind"],
            "externalMetricNames": metric_names,
            "triggersTypes": static["triggersTypes"],
            "health": status.health(engine.failures, metric_names) if metric_names else None,
            "engine": engine.to_status(),
        }
        if self.target is not None:
            body["scaleTargetGVKR"] = self.target.gvkr
        if self.state.original_replicas is not None:
            body["originalReplicaCount"] = self.state.original_replicas
        if engine.last_active_time is not None:
            body["lastActiveTime"] = status.rfc3339(engine.last_active_time)
        if samples:
            body["triggersActivity"] = {
                name: {"isActive": bool(s and s.value > s.activation_target)}
                for name, s in samples.items()
            }
        if self.policy is not None and self.policy.pause.replicas is not None:
            body["pausedReplicaCount"] = self.policy.pause.replicas
        body["authenticationsTypes"] = static["authenticationsTypes"]
        body = {k: v for k, v in body.items() if v is not None}
        if body == self.state.last_status:
            return
        fallback = self.so.spec.fallback
        settled = fallback.failure_threshold + 1 if fallback is not None else 1
        if (
            status.only_refreshes_changed(self.state.last_status, body, settled)
            and time.monotonic() - self.state.written_at < STATUS_REFRESH
        ):
            return  # nothing that changes a decision; written at the next refresh
        try:
            await self.kube.patch_scaled_object_status(self.namespace, self.name, body)
        except TargetNotFoundError:
            return  # the ScaledObject is gone; the controller stops this loop
        except KubeError as exc:
            self._api_failed(exc)
            log.warning("%s: writing status failed: %s", self.label, exc)
            return
        self.state.last_status = body
        self.state.written_at = time.monotonic()
        self.state.conditions = body["conditions"]

    def _static_status(self) -> dict[str, Any]:
        """The status fields fixed by the spec and the built triggers: computed once per set of
        triggers, not on every poll."""
        key = len(self.triggers), id(self.triggers)
        if self._static is None or self._static[0] != key:
            auth_kinds = sorted(
                {t.authentication_ref.name for t in self.so.spec.triggers if t.authentication_ref}
            )
            fields = {
                "scaleTargetKind": f"{self.target_ref.api_version}.{self.target_ref.kind}",
                "externalMetricNames": [entry.metric_name for entry in self.triggers],
                "triggersTypes": ",".join(t.trigger.type for t in self.triggers) or None,
                "authenticationsTypes": ",".join(auth_kinds) or None,
            }
            self._static = (key, fields)
        return self._static[1]

    def _api_failed(self, exc: KubeError) -> None:
        """After a 429 or 5xx, put the next tick off: by the server's Retry-After, or by an
        exponential backoff (1 s, doubling, up to 60 s, with jitter), whichever is longer."""
        if not isinstance(exc, ApiBusyError):
            return
        self._throttled = True
        self._api_backoff = min(API_BACKOFF_MAX, self._api_backoff * 2 or API_BACKOFF_INITIAL)
        delay = max(self._api_backoff * random.uniform(0.9, 1.1), exc.retry_after or 0.0)
        retry_at = time.monotonic() + delay
        if self._retry_at is None or retry_at > self._retry_at:
            self._retry_at = retry_at

    async def _close_scaler(self, entry: _Trigger) -> None:
        scaler, entry.scaler = entry.scaler, None
        if scaler is not None:
            with contextlib.suppress(Exception):
                await scaler.aclose()


async def _sample_or_fail(scaler: Scaler) -> MetricSample:
    """`scaler.sample()`, with a CancelledError this task was not asked for turned into a
    failed poll. aiormq fails the futures of a connection it loses with CancelledError; let
    through, that ended the object's loop for good, silently (found by the soak: a RabbitMQ
    freeze stopped 59 of 100 AMQP objects' loops). A real cancellation (the loop stopping, or
    the poll timeout, which asyncio.timeout turns into TimeoutError) is re-raised."""
    try:
        return await scaler.sample()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        raise ScalerUnavailableError(
            "the source's client cancelled the poll (connection lost)"
        ) from None


def _metric_name(scaler: Scaler, trigger: Trigger) -> str:
    name = getattr(scaler, "metric_name", None)
    return name if isinstance(name, str) and name else f"s{trigger.index}-{trigger.type}"


def _engine_state(raw: Any) -> replicas.EngineState:
    """The persisted engine state; a malformed one is dropped (the engine then waits a full
    window before any scale-down, which is the safe direction)."""
    try:
        return replicas.EngineState.from_status(raw if isinstance(raw, Mapping) else None)
    except (ValueError, TypeError) as exc:
        log.warning("ignoring malformed status.engine: %s", exc)
        return replicas.EngineState()


def resumed_engine(
    engine: replicas.EngineState,
    conditions: list[dict[str, Any]],
    *,
    now: float,
    polling_interval: float,
) -> replicas.EngineState:
    """The engine state read back from the status, made safe to resume from.

    While an object stays active its lastActiveTime is written only every STATUS_REFRESH
    seconds, so if the status says it was active, it may have been active until a poll after
    that write. The cooldown then counts from the latest moment it can have been active
    (never later than now): a restart never scales down early."""
    was_active = any(
        c.get("type") == status.ACTIVE and c.get("status") == "True" for c in conditions
    )
    if engine.last_active_time is None or not was_active:
        return engine
    latest = engine.last_active_time + STATUS_REFRESH + polling_interval
    return dataclasses.replace(
        engine, last_active_time=max(engine.last_active_time, min(now, latest))
    )


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
