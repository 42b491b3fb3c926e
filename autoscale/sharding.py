"""Sharding: several active replicas, each polling a disjoint share of the ScaledObjects.

The ScaledObjects are split into `K` shards by their scale target (`shard_of`), so two
ScaledObjects fighting over one target always land in the same shard and one replica settles
the conflict. Each shard is a Lease, `<name>-shard-<i>`; a replica polls the objects of the
shards whose Lease it holds. Replicas find each other through member Leases,
`<name>-member-<j>` (`K` slots: a replica beyond the K-th has nothing to poll and waits for a
slot), and each holds at most `ceil(K / live members)` shards, so the shards spread evenly.

Safety, as in `autoscale/leader.py` (whose Lease protocol and I/O this reuses): a replica
renews its shards every retry period; a shard it has not renewed for `renew_deadline` is
dropped, its loops stopped and awaited, at least `lease_duration - renew_deadline` before any
other replica may take it over; a shard given away for balance has its loops stopped before
its Lease is released. So no ScaledObject is ever polled by two replicas at once.

The pure part (`shard_key`, `shard_of`, `shard_quota`, `live_members`, `preference`, `plan`)
has no I/O and no clock; `ShardManager` is the loop around it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from autoscale import model
from autoscale.leader import (
    STANDBY_JITTER,
    Action,
    Decision,
    LeaseClient,
    Observation,
    decide,
    describe_failure,
    lease_expiry,
    observe,
    parse_lease,
    released,
)

log = logging.getLogger(__name__)

MAX_SHARDS: Final = 256
"""The most shards `--shards` accepts: every replica reads every shard and member Lease once
per retry period, so the API load grows with K."""

TAKEABLE: Final = frozenset({Action.CREATE, Action.ACQUIRE, Action.TAKE_OVER, Action.RENEW})
"""What `decide` answers for a Lease we may take now (RENEW: it already names us)."""


# --- pure core ----------------------------------------------------------------------------


def shard_key(raw: Mapping[str, Any]) -> str:
    """What decides a ScaledObject's shard: its namespace and scale target (API group, kind,
    name), from the object as the API server returned it, so rivals share a shard."""
    metadata = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    ref = spec.get("scaleTargetRef") if isinstance(spec, Mapping) else None
    ref = ref if isinstance(ref, Mapping) else {}
    api_version = str(ref.get("apiVersion") or model.DEFAULT_SCALE_TARGET_API_VERSION)
    kind = str(ref.get("kind") or model.DEFAULT_SCALE_TARGET_KIND)
    group = api_version.rpartition("/")[0]
    return f"{metadata.get('namespace') or ''}/{group}/{kind}/{ref.get('name') or ''}"


def shard_of(key: str, shards: int) -> int:
    """The shard of `key`, in [0, shards): a hash that every process and Python run agrees on
    (not `hash()`, which is salted per process)."""
    if shards < 1:
        raise ValueError(f"need at least one shard, got {shards}")
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def shard_quota(shards: int, live: int) -> int:
    """How many shards one replica may hold when `live` replicas share `shards`."""
    return math.ceil(shards / max(live, 1))


def live_members(
    observations: Iterable[Observation | None],
    *,
    identity: str,
    now: float,
    default_duration: float,
) -> int:
    """How many member Leases are held by a live replica: us, or a holder whose lease has not
    run out on our clock (a dead replica counts until its lease does)."""
    live = 0
    for observation in observations:
        if observation is None or observation.record is None or not observation.record.held:
            continue
        if observation.record.holder == identity:
            live += 1
            continue
        expiry = lease_expiry(observation, default_duration=default_duration)
        if expiry is not None and now < expiry:
            live += 1
    return live


def preference(identity: str, count: int) -> list[int]:
    """The order in which `identity` tries free shards or member slots: all of [0, count),
    starting at a place that depends on the identity, so replicas rarely race for one Lease."""
    if count < 1:
        return []
    start = shard_of(identity, count)
    return [(start + offset) % count for offset in range(count)]


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """What one round does besides renewing: shards to give away, and shards to try to take."""

    release: tuple[int, ...] = ()
    acquire: tuple[int, ...] = ()


def plan(held: Iterable[int], *, quota: int, takeable: Sequence[int]) -> Plan:
    """Give away what is above `quota` (the highest-numbered shards), or try to take free shards
    from `takeable` (in its order) up to `quota`."""
    mine = sorted(set(held))
    if len(mine) > quota:
        return Plan(release=tuple(mine[quota:][::-1]))
    wanted = quota - len(mine)
    candidates = [i for i in takeable if i not in mine]
    return Plan(acquire=tuple(candidates[:wanted]))


def shard_lease_name(base: str, index: int) -> str:
    return f"{base}-shard-{index}"


def member_lease_name(base: str, index: int) -> str:
    return f"{base}-member-{index}"


# --- I/O ----------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Lease:
    """What we know of one Lease: the last observation, the object as read, and, when we hold
    it, the start of our last successful write (our monotonic clock)."""

    name: str
    observation: Observation | None = None
    obj: dict[str, Any] | None = None
    renewed_at: float | None = None


class ShardManager:
    """Holds this replica's share of the `shards` shard Leases and tells `on_change` which.

    `on_change(held)` is awaited with the new set whenever it changes, and must have stopped the
    loops of every shard not in it when it returns: the manager releases a shard's Lease only
    afterwards. Timing as `LeaderElector`: retry every `retry_period`, drop a shard not renewed
    for `renew_deadline`, take a held one over only after a whole `lease_duration` without change.
    """

    def __init__(
        self,
        *,
        api_client: Any,
        namespace: str,
        name: str,
        identity: str,
        shards: int,
        on_change: Callable[[frozenset[int]], Awaitable[None]],
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
    ) -> None:
        if not (namespace and name and identity):
            raise ValueError("namespace, name and identity must not be empty")
        if not 1 <= shards <= MAX_SHARDS:
            raise ValueError(f"need 1 <= shards <= {MAX_SHARDS}, got {shards}")
        if not 0 < retry_period < renew_deadline < lease_duration:
            raise ValueError(
                "need 0 < retry_period < renew_deadline < lease_duration, got "
                f"{retry_period} / {renew_deadline} / {lease_duration}"
            )
        self._leases = LeaseClient(api_client, namespace)
        self._identity = identity
        self._count = shards
        self._on_change = on_change
        self._lease_duration = lease_duration
        self._renew_deadline = renew_deadline
        self._retry_period = retry_period
        self._shards = [_Lease(shard_lease_name(name, i)) for i in range(shards)]
        self._members = [_Lease(member_lease_name(name, j)) for j in range(shards)]
        self._order = preference(identity, shards)
        self._held: frozenset[int] = frozenset()
        self._slot: int | None = None
        self._announced: frozenset[int] | None = None

    @property
    def held(self) -> frozenset[int]:
        """The shards whose loops may run now."""
        return self._held

    @property
    def slot(self) -> int | None:
        """The member slot we hold, if any."""
        return self._slot

    async def run(self) -> None:
        """Keep our share until cancelled; then stop every loop and release every Lease."""
        try:
            while True:
                started = time.monotonic()
                try:
                    async with asyncio.timeout(self._tick_budget(started)):
                        await self._tick(started)
                except Exception as exc:  # API errors, timeouts: the next round retries
                    log.warning("sharding round failed: %s", describe_failure(exc))
                await self._drop_expired()
                await self._publish()
                await asyncio.sleep(self._next_delay())
        except asyncio.CancelledError:
            await self._shutdown()
            raise

    # --- one round ------------------------------------------------------------------------

    def _tick_budget(self, now: float) -> float:
        deadline = self._earliest_deadline()
        return self._renew_deadline if deadline is None else max(deadline - now, 0.0)

    def _earliest_deadline(self) -> float | None:
        times = [lease.renewed_at for lease in self._held_leases() if lease.renewed_at is not None]
        return min(times) + self._renew_deadline if times else None

    def _held_leases(self) -> list[_Lease]:
        return [self._shards[i] for i in self._held]

    def _next_delay(self) -> float:
        delay = self._retry_period * (1.0 + random.random() * STANDBY_JITTER)
        deadline = self._earliest_deadline()
        if deadline is not None:
            delay = min(delay, max(deadline - time.monotonic(), 0.0))
        return delay

    async def _tick(self, started: float) -> None:
        # Renew first, from the objects we last wrote (a 409 means somebody else wrote since):
        # the renewals must not wait behind the reads on a slow API server.
        await self._renew_all(started)
        await self._read_all()
        now = time.monotonic()
        lost = {i for i in self._held if self._holder(self._shards[i]) != self._identity}
        if lost:
            log.warning("shards %s are now held by others; stopping their loops", sorted(lost))
            await self._set_held(self._held - lost)
        await self._keep_slot(started, now)
        live = live_members(
            (m.observation for m in self._members),
            identity=self._identity,
            now=now,
            default_duration=self._lease_duration,
        )
        quota = shard_quota(self._count, live) if self._slot is not None else 0
        takeable = [
            i
            for i in self._order
            if i not in self._held and self._decision(self._shards[i], now).action in TAKEABLE
        ]
        step = plan(self._held, quota=quota, takeable=takeable)
        if step.release:
            await self._set_held(self._held - set(step.release))
            await asyncio.gather(*(self._release(self._shards[i]) for i in step.release))
        for index in step.acquire:
            if await self._take(self._shards[index], started):
                self._held = self._held | {index}
        # Leases still naming us that we do not poll (a release cut short): hand them back.
        stale = [
            lease
            for i, lease in enumerate(self._shards)
            if i not in self._held and self._holder(lease) == self._identity
        ]
        await asyncio.gather(*(self._release(lease) for lease in stale))

    async def _renew_all(self, started: float) -> None:
        leases = [self._shards[i] for i in sorted(self._held)]
        if self._slot is not None:
            leases.append(self._members[self._slot])
        await asyncio.gather(*(self._take(lease, started, renew_only=True) for lease in leases))

    def _holder(self, lease: _Lease) -> str | None:
        record = lease.observation.record if lease.observation else None
        return record.holder if record is not None else None

    async def _read_all(self) -> None:
        leases = [*self._members, *self._shards]
        results = await asyncio.gather(
            *(self._leases.read(lease.name) for lease in leases), return_exceptions=True
        )
        now = time.monotonic()
        for lease, result in zip(leases, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, BaseException):
                log.debug("reading lease %s failed: %s", lease.name, describe_failure(result))
                continue
            record = parse_lease(result) if result is not None else None
            lease.observation = observe(lease.observation, record, now=now)
            lease.obj = result

    def _decision(self, lease: _Lease, now: float) -> Decision:
        observation = lease.observation or Observation(record=None, changed_at=now)
        return decide(
            observation,
            identity=self._identity,
            lease_duration=self._lease_duration,
            now=now,
            wall_now=datetime.now(UTC),
        )

    async def _keep_slot(self, started: float, now: float) -> None:
        """Give our member slot up when it was not renewed in time; take a free one if we have
        none."""
        if self._slot is not None:
            lease = self._members[self._slot]
            at = lease.renewed_at
            mine = self._holder(lease) == self._identity
            if mine and at is not None and now - at < self._renew_deadline:
                return
            log.warning("lost member slot %s", lease.name)
            self._slot = None
        for index in self._order:
            lease = self._members[index]
            if self._decision(lease, now).action in TAKEABLE and await self._take(lease, started):
                self._slot = index
                log.info("%s joined as member %d", self._identity, index)
                return

    async def _take(self, lease: _Lease, started: float, *, renew_only: bool = False) -> bool:
        """Write our claim on `lease` (create, acquire, take over or renew); True if it landed."""
        decision = self._decision(lease, time.monotonic())
        if decision.desired is None or (renew_only and decision.action is not Action.RENEW):
            return False
        try:
            written = await self._leases.write(
                lease.name,
                decision.desired,
                create=decision.action is Action.CREATE,
                base=lease.obj,
            )
        except Exception as exc:
            level = logging.WARNING if renew_only else logging.DEBUG
            log.log(level, "could not write lease %s: %s", lease.name, describe_failure(exc))
            return False
        lease.observation = Observation(record=parse_lease(written), changed_at=time.monotonic())
        lease.obj = written
        lease.renewed_at = started
        if decision.action is not Action.RENEW or not renew_only:
            log.info("%s holds lease %s (%s)", self._identity, lease.name, decision.action.value)
        return True

    async def _release(self, lease: _Lease) -> None:
        record = lease.observation.record if lease.observation else None
        lease.renewed_at = None
        if record is None or record.holder != self._identity:
            return
        try:
            written = await self._leases.write(
                lease.name,
                released(record, wall_now=datetime.now(UTC)),
                create=False,
                base=lease.obj,
            )
        except Exception as exc:  # it expires anyway
            log.warning("could not release lease %s: %s", lease.name, describe_failure(exc))
            return
        lease.observation = Observation(record=parse_lease(written), changed_at=time.monotonic())
        lease.obj = written
        log.info("released lease %s", lease.name)

    async def _drop_expired(self) -> None:
        """Stop the loops of every shard not renewed for the renew deadline."""
        now = time.monotonic()
        expired = {
            i
            for i in self._held
            if (at := self._shards[i].renewed_at) is None or now - at >= self._renew_deadline
        }
        if expired:
            log.warning("could not renew shards %s in time; stopping their loops", sorted(expired))
            await self._set_held(self._held - expired)

    async def _set_held(self, held: frozenset[int]) -> None:
        """Shrink (or grow) the held set; when it shrinks, the loops stop before this returns."""
        self._held = frozenset(held)
        if self._announced is not None and self._held >= self._announced:
            return  # only growing: published at the end of the round
        await self._publish()

    async def _publish(self) -> None:
        if self._held == self._announced:
            return
        log.info("%s polls shards %s", self._identity, sorted(self._held))
        await self._on_change(self._held)
        self._announced = self._held

    async def _shutdown(self) -> None:
        """Stop every loop, then release our shards and member slot (bounded; best effort)."""
        self._held = frozenset()
        try:
            async with asyncio.timeout(self._renew_deadline):
                await self._on_change(self._held)
                self._announced = self._held
                for lease in [*self._shards, *self._members]:
                    await self._release(lease)
        except Exception as exc:  # they expire anyway
            log.warning("releasing shard leases on shutdown failed: %s", describe_failure(exc))
        self._slot = None
