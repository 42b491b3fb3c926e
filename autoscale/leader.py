"""Leader election on a `coordination.k8s.io/v1` Lease, so that one replica alone scales.

Owns the Lease protocol: a pure core (`observe`, `decide`, `released`, `parse_lease`,
`lease_body`; no I/O, time passed in) and `LeaderElector`, the loop that reads and writes the
Lease and runs `lead()` only while it holds it. It must never let `lead()` outlive the moment a
standby could take the Lease over, and it never compares another host's timestamps with our clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger(__name__)

API_VERSION: Final = "coordination.k8s.io/v1"
STANDBY_JITTER: Final = 0.2
"""A standby waits `retry_period` times a random factor in [1, 1 + STANDBY_JITTER) between tries."""

_SPEC_KEYS: Final = (
    "holderIdentity",
    "leaseDurationSeconds",
    "acquireTime",
    "renewTime",
    "leaseTransitions",
)


# --- pure core -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LeaseRecord:
    """The election's part of a Lease: its spec, and `metadata.resourceVersion`.

    Equality ignores `resource_version`: a write that changes only metadata is not a renewal.
    An empty or missing `holder` means nobody holds the Lease.
    """

    holder: str | None = None
    lease_duration_seconds: int | None = None
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    lease_transitions: int = 0
    resource_version: str | None = dataclasses.field(default=None, compare=False)

    @property
    def held(self) -> bool:
        return bool(self.holder)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """The Lease as we last read it, and when (on OUR monotonic clock) its record last changed.

    `record` is None when there is no Lease object. A standby measures a holder's lease from
    `changed_at`, never from the holder's `renewTime`, so clock skew between hosts cannot matter.
    """

    record: LeaseRecord | None
    changed_at: float


class Action(enum.Enum):
    """What one try of the election does."""

    CREATE = "create"  # there is no Lease: create it, held by us
    ACQUIRE = "acquire"  # the Lease is free (released, or never held): take it
    TAKE_OVER = "take-over"  # its holder has not renewed for a whole lease duration: take it
    RENEW = "renew"  # we hold it: write a fresh renewTime
    STAND_BY = "stand-by"  # another holder's lease is live: write nothing, try again later


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The outcome of `decide`: the action, and the record to write (None when standing by)."""

    action: Action
    desired: LeaseRecord | None = None
    expires_at: float | None = None  # STAND_BY: when, on our clock, the holder's lease runs out


def observe(previous: Observation | None, record: LeaseRecord | None, *, now: float) -> Observation:
    """Fold a fresh read into what we had: `changed_at` moves only when the record changed."""
    if previous is not None and previous.record == record:
        return Observation(record=record, changed_at=previous.changed_at)
    return Observation(record=record, changed_at=now)


def lease_expiry(observation: Observation, *, default_duration: float) -> float | None:
    """When, on our monotonic clock, the observed holder's lease runs out (None: not held).

    The duration is the one the holder wrote (`leaseDurationSeconds`), or `default_duration`
    when that is missing or not positive.
    """
    record = observation.record
    if record is None or not record.held:
        return None
    duration: float = default_duration
    if record.lease_duration_seconds is not None and record.lease_duration_seconds > 0:
        duration = record.lease_duration_seconds
    return observation.changed_at + duration


def decide(
    observation: Observation,
    *,
    identity: str,
    lease_duration: float,
    now: float,
    wall_now: datetime,
) -> Decision:
    """Decide one election try from what we observed.

    `now` is our monotonic clock (compared with `observation.changed_at`); `wall_now` only goes
    into the written `acquireTime` / `renewTime`. A Lease held by `identity` is renewed even when
    this process did not know it held it (a restart with the same identity). Taking a Lease from
    somebody else, or from nobody, counts one more `leaseTransitions`.
    """
    duration_seconds = max(1, math.ceil(lease_duration))
    record = observation.record
    if record is None:
        return Decision(
            action=Action.CREATE,
            desired=LeaseRecord(
                holder=identity,
                lease_duration_seconds=duration_seconds,
                acquire_time=wall_now,
                renew_time=wall_now,
                lease_transitions=0,
            ),
        )
    if record.holder == identity:
        return Decision(
            action=Action.RENEW,
            desired=dataclasses.replace(
                record,
                lease_duration_seconds=duration_seconds,
                acquire_time=record.acquire_time or wall_now,
                renew_time=wall_now,
            ),
        )
    action = Action.ACQUIRE
    expiry = lease_expiry(observation, default_duration=lease_duration)
    if expiry is not None:
        if now < expiry:
            return Decision(action=Action.STAND_BY, expires_at=expiry)
        action = Action.TAKE_OVER
    return Decision(
        action=action,
        desired=LeaseRecord(
            holder=identity,
            lease_duration_seconds=duration_seconds,
            acquire_time=wall_now,
            renew_time=wall_now,
            lease_transitions=record.lease_transitions + 1,
            resource_version=record.resource_version,
        ),
    )


def released(record: LeaseRecord, *, wall_now: datetime) -> LeaseRecord:
    """The record that hands a Lease back: no holder, so any standby takes it at its next try."""
    return LeaseRecord(
        holder=None,
        lease_duration_seconds=1,
        acquire_time=None,
        renew_time=wall_now,
        lease_transitions=record.lease_transitions,
        resource_version=record.resource_version,
    )


def format_micro_time(value: datetime) -> str:
    """A Kubernetes MicroTime: RFC 3339 in UTC with exactly six fractional digits."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_lease(obj: Mapping[str, Any]) -> LeaseRecord:
    """The LeaseRecord of a Lease object in its JSON form (camelCase keys)."""
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    duration = spec.get("leaseDurationSeconds")
    return LeaseRecord(
        holder=spec.get("holderIdentity") or None,
        lease_duration_seconds=int(duration) if duration is not None else None,
        acquire_time=_parse_time(spec.get("acquireTime")),
        renew_time=_parse_time(spec.get("renewTime")),
        lease_transitions=int(spec.get("leaseTransitions") or 0),
        resource_version=metadata.get("resourceVersion"),
    )


def lease_body(
    record: LeaseRecord,
    *,
    name: str,
    namespace: str,
    base: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The Lease to write for `record`: `base` (the object as read) keeps its other metadata and
    spec fields; `resourceVersion` comes from the record, for optimistic concurrency."""
    base_metadata = dict((base or {}).get("metadata") or {})
    base_metadata.pop("managedFields", None)
    base_metadata.pop("resourceVersion", None)
    metadata = {**base_metadata, "name": name, "namespace": namespace}
    if record.resource_version is not None:
        metadata["resourceVersion"] = record.resource_version
    base_spec = (base or {}).get("spec") or {}
    spec: dict[str, Any] = {
        key: value
        for key, value in base_spec.items()
        if key not in _SPEC_KEYS and value is not None
    }
    if record.holder:
        spec["holderIdentity"] = record.holder
    if record.lease_duration_seconds is not None:
        spec["leaseDurationSeconds"] = record.lease_duration_seconds
    if record.acquire_time is not None:
        spec["acquireTime"] = format_micro_time(record.acquire_time)
    if record.renew_time is not None:
        spec["renewTime"] = format_micro_time(record.renew_time)
    spec["leaseTransitions"] = record.lease_transitions
    return {"apiVersion": API_VERSION, "kind": "Lease", "metadata": metadata, "spec": spec}


# --- I/O ---------------------------------------------------------------------------------------


class LeaseConflictError(Exception):
    """HTTP 409 on a Lease write: somebody else wrote it since our read."""


def describe_failure(exc: BaseException) -> str:
    """A short, secret-free description of a failed Lease request."""
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, LeaseConflictError):
        return "conflict: the Lease changed since it was read"
    return f"{type(exc).__name__}: {exc}"


class LeaseClient:
    """Reads and writes Leases in one namespace as plain JSON dicts: the I/O that leader election
    and sharding (`autoscale/sharding.py`) share.

    A write sends `lease_body(record, base=...)`, with `resourceVersion` from the record for
    optimistic concurrency; a 409 is raised as `LeaseConflictError`.
    """

    def __init__(self, api_client: Any, namespace: str) -> None:
        self._client: Any = api_client
        self._api = k8s.CoordinationV1Api(api_client)
        self.namespace = namespace

    async def read(self, name: str) -> dict[str, Any] | None:
        """The Lease `name` as a dict, or None when there is none."""
        try:
            lease = await self._api.read_namespaced_lease(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return self._to_dict(lease)

    async def write(
        self,
        name: str,
        record: LeaseRecord,
        *,
        create: bool,
        base: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create or replace the Lease `name` with `record`; the Lease as written."""
        # A plain dict, which the client sends as it is: a V1Lease would have its MicroTimes
        # written by datetime.isoformat(), which drops the fraction when it is zero.
        body: Any = lease_body(record, name=name, namespace=self.namespace, base=base)
        try:
            if create:
                lease = await self._api.create_namespaced_lease(self.namespace, body)
            else:
                lease = await self._api.replace_namespaced_lease(name, self.namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                raise LeaseConflictError from exc
            raise
        return self._to_dict(lease)

    def _to_dict(self, lease: Any) -> dict[str, Any]:
        obj: dict[str, Any] = self._client.sanitize_for_serialization(lease)
        return obj


class LeaderElector:
    """Runs `lead()` only while this process holds the Lease `namespace/name`.

    Timing, as client-go's leaderelection: a standby tries every `retry_period` (with up to 20 %
    jitter) and takes a held Lease only once it has seen no change to it for the holder's lease
    duration, measured on its own monotonic clock. The leader renews every `retry_period`; if no
    renewal has succeeded for `renew_deadline` (counted from the START of the last successful
    attempt), it cancels `lead()` and waits for it, so `lead()` stops at least
    `lease_duration - renew_deadline` before any standby may take over.

    On losing the Lease, `run()` goes back to standby and calls `lead()` afresh if it wins again:
    `lead` must be restartable. When `run()` is cancelled it cancels `lead()`, waits for it, then
    releases the Lease (no holder) so a standby takes over at its next try; a standby that cannot
    hold the Lease skips that. When `lead()` returns, the Lease is released and `run()` returns;
    when it raises, the Lease is released and `run()` raises the same exception.
    """

    def __init__(
        self,
        *,
        api_client: Any,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
    ) -> None:
        if not (namespace and name and identity):
            raise ValueError("namespace, name and identity must not be empty")
        if not 0 < retry_period < renew_deadline < lease_duration:
            raise ValueError(
                "need 0 < retry_period < renew_deadline < lease_duration, got "
                f"{retry_period} / {renew_deadline} / {lease_duration}"
            )
        self._leases = LeaseClient(api_client, namespace)
        self._namespace = namespace
        self._name = name
        self._identity = identity
        self._lease_duration = lease_duration
        self._renew_deadline = renew_deadline
        self._retry_period = retry_period
        self.leading = asyncio.Event()
        """Set while this process holds the Lease and `lead()` runs; cleared on loss or release."""
        self._observation: Observation | None = None
        self._last_object: dict[str, Any] | None = None
        self._renewed_at: float | None = None
        self._running = False
        self._failing = False
        self._write_unsettled = False  # a write was sent and may have landed unseen

    @property
    def is_leader(self) -> bool:
        return self.leading.is_set()

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def holder(self) -> str | None:
        """The holder of the Lease as last read or written (None: free, or not read yet)."""
        if self._observation is None or self._observation.record is None:
            return None
        return self._observation.record.holder

    @property
    def renewed_at(self) -> float | None:
        """`time.monotonic()` at the start of the last successful acquire or renew attempt."""
        return self._renewed_at

    @property
    def _lease_key(self) -> str:
        return f"{self._namespace}/{self._name}"

    async def run(self, lead: Callable[[], Awaitable[None]]) -> None:
        """Stand by, lead while holding the Lease, stand by again on loss; see the class doc."""
        if self._running:
            raise RuntimeError("LeaderElector.run() is already running")
        self._running = True
        try:
            while True:
                decision = await self._acquire()
                self.leading.set()
                log.info(
                    "became leader: %s holds lease %s (%s, transitions=%d)",
                    self._identity,
                    self._lease_key,
                    decision.action.value,
                    decision.desired.lease_transitions if decision.desired else 0,
                )
                task = asyncio.create_task(_call(lead), name=f"lead {self._lease_key}")
                try:
                    lost = await self._keep_renewing(task)
                finally:
                    self.leading.clear()
                    await self._stop(task)
                if lost:
                    log.info("lost leadership of lease %s; standing by", self._lease_key)
                    continue
                await self._release()
                if not task.cancelled():
                    task.result()  # re-raises what lead() raised
                return
        except asyncio.CancelledError:
            if self.holder == self._identity or self._write_unsettled:
                await self._release()
            raise
        finally:
            self._running = False

    async def _acquire(self) -> Decision:
        """Try every retry_period (jittered) until we hold the Lease."""
        while True:
            started = time.monotonic()
            try:
                async with asyncio.timeout(self._renew_deadline):
                    decision = await self._attempt(renew_only=False)
            except Exception as exc:  # any failure: try again later
                self._log_failure("could not acquire lease %s: %s", exc, while_leading=False)
            else:
                self._failing = False
                if decision.action is not Action.STAND_BY:
                    self._renewed_at = started
                    return decision
            delay = self._retry_period * (1.0 + random.random() * STANDBY_JITTER)
            await asyncio.sleep(delay)

    async def _keep_renewing(self, task: asyncio.Task[None]) -> bool:
        """Renew every retry_period until `task` ends (False) or leadership is lost (True)."""
        assert self._renewed_at is not None
        while True:
            deadline = self._renewed_at + self._renew_deadline
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            done, _ = await asyncio.wait({task}, timeout=min(self._retry_period, remaining))
            if done:
                return False
            started = time.monotonic()
            if started >= deadline:
                return True
            try:
                async with asyncio.timeout(deadline - started):
                    decision = await self._attempt(renew_only=True)
            except Exception as exc:  # retry until the deadline
                self._log_failure("could not renew lease %s: %s", exc, while_leading=True)
                continue
            self._failing = False
            if decision.action is not Action.RENEW:
                log.warning("lease %s is now held by %s", self._lease_key, self.holder)
                return True
            self._renewed_at = started

    async def _attempt(self, *, renew_only: bool) -> Decision:
        """One read-decide-write round. Raises on API errors and on a write conflict."""
        obj = await self._read()
        record = parse_lease(obj) if obj is not None else None
        previous_holder = self.holder
        self._observation = observe(self._observation, record, now=time.monotonic())
        self._last_object = obj
        if record is not None and record.holder != previous_holder and not renew_only:
            log.info("lease %s is held by %s", self._lease_key, record.holder or "nobody")
        decision = decide(
            self._observation,
            identity=self._identity,
            lease_duration=self._lease_duration,
            now=time.monotonic(),
            wall_now=datetime.now(UTC),
        )
        if decision.desired is None or (renew_only and decision.action is not Action.RENEW):
            return decision
        written = await self._write(decision.desired, create=decision.action is Action.CREATE)
        self._observation = Observation(record=parse_lease(written), changed_at=time.monotonic())
        self._last_object = written
        return decision

    async def _read(self) -> dict[str, Any] | None:
        return await self._leases.read(self._name)

    async def _write(self, record: LeaseRecord, *, create: bool) -> dict[str, Any]:
        self._write_unsettled = True  # stays set if cancelled or cut off before the answer
        try:
            written = await self._leases.write(
                self._name, record, create=create, base=self._last_object
            )
        except (ApiException, LeaseConflictError):
            self._write_unsettled = False  # the apiserver answered: it did not write
            raise
        self._write_unsettled = False
        return written

    async def _stop(self, task: asyncio.Task[None]) -> None:
        """Cancel `lead()` if it still runs, and wait until it has really stopped."""
        if task.done():
            return  # it ended by itself: run() re-raises what it raised
        task.cancel()
        started = time.monotonic()
        await asyncio.wait({task})
        took = time.monotonic() - started
        margin = self._lease_duration - self._renew_deadline
        if took > margin:
            log.warning(
                "lead() took %.1fs to stop, more than the %.1fs margin before a standby may "
                "take lease %s over",
                took,
                margin,
                self._lease_key,
            )
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("lead() failed while being stopped", exc_info=exc)

    async def _release(self) -> None:
        """Clear the holder if it is still us, so a standby takes over at its next try."""
        try:
            async with asyncio.timeout(self._renew_deadline):
                obj = await self._read()
                if obj is None:
                    return
                record = parse_lease(obj)
                if record.holder != self._identity:
                    return
                self._last_object = obj
                await self._write(released(record, wall_now=datetime.now(UTC)), create=False)
        except Exception as exc:  # best effort: it expires anyway
            log.warning("could not release lease %s: %s", self._lease_key, describe_failure(exc))
            return
        self._observation = None
        log.info("released lease %s", self._lease_key)

    def _log_failure(self, message: str, exc: Exception, *, while_leading: bool) -> None:
        """Warn about every failure while leading; in standby, about the first of a series only,
        and never about a lost race (a conflict: another candidate wrote first)."""
        quiet = not while_leading and (self._failing or isinstance(exc, LeaseConflictError))
        if not isinstance(exc, LeaseConflictError):
            self._failing = True
        log.log(
            logging.DEBUG if quiet else logging.WARNING,
            message,
            self._lease_key,
            describe_failure(exc),
        )


async def _call(lead: Callable[[], Awaitable[None]]) -> None:
    await lead()
