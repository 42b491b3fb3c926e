"""Watches ScaledObjects and runs one ScaleLoop task per object.

- list + watch (with bookmarks) per watched namespace, re-list on 410 Gone, reconnect with
  backoff; a loop restarts when the object's generation or annotations change;
- a finalizer on every object, so deletion can restore the original replica count;
- one owner per scale target: the oldest ScaledObject; others, and targets that an HPA
  already scales, get Ready=False naming the owner and are never patched;
- sharded (`shard_count` > 0): every object is watched, but only those in the shards this
  replica holds (`set_shards`) get a loop, a finalizer or a status write.

The controller never polls a source itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from autoscale import model, sharding, status
from autoscale.errors import ConfigError, ConflictError, KubeError, TargetNotFoundError
from autoscale.kube import Kube, ReplicaCache, WatchExpiredError
from autoscale.loop import Observer, ScaleLoop, ScalerFactory

log = logging.getLogger(__name__)

FINALIZER = "autoscale.dev/finalizer"
HPA_REFRESH_SECONDS = 30.0
RESYNC_CONCURRENCY = 32

TargetKey = tuple[str, str, str, str]  # namespace, API group, kind, name


@dataclass
class _Running:
    task: asyncio.Task[None]
    fingerprint: tuple[Any, ...]


def _target_key(so: model.ScaledObject) -> TargetKey:
    ref = so.spec.scale_target_ref
    return (so.metadata.namespace or "", ref.api_version.rpartition("/")[0], ref.kind, ref.name)


def _fingerprint(so: model.ScaledObject) -> tuple[Any, ...]:
    """What, when it changes, calls for a new loop: the spec (generation) and annotations."""
    return (so.metadata.generation, tuple(sorted(so.metadata.annotations.items())))


class Controller:
    def __init__(
        self,
        *,
        kube: Kube,
        scalers: ScalerFactory,
        namespaces: tuple[str, ...] = (),
        observer: Observer | None = None,
        poll_timeout: float = 10.0,
        replica_cache: ReplicaCache | None = None,
        shard_count: int = 0,
    ) -> None:
        self.kube = kube
        self.replica_cache = replica_cache
        self.scalers = scalers
        self.namespaces = namespaces or (None,)
        self.observer = observer
        self.poll_timeout = poll_timeout
        self.objects: dict[str, model.ScaledObject] = {}
        self.raw: dict[str, dict[str, Any]] = {}
        # The uids of the objects naming each scale target, so a tick's ownership check costs
        # the rivals of one target, not a scan of every object (N^2 per interval at 10,000).
        self._by_target: dict[TargetKey, set[str]] = {}
        self.loops: dict[str, _Running] = {}
        self.hpa_targets: dict[TargetKey, str] = {}
        self.synced = asyncio.Event()
        self._synced_namespaces: set[str | None] = set()
        self.shard_count = shard_count
        self.shards: frozenset[int] = frozenset()
        """The shards this replica holds (used only when `shard_count` > 0)."""
        self._stopping: set[asyncio.Task[None]] = set()
        self._adopting: asyncio.Task[None] | None = None
        self._adopt_again = False

    async def run(self) -> None:
        """Watch until cancelled, then stop every loop (scale counts stay as they are)."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._refresh_hpas())
                for namespace in self.namespaces:
                    group.create_task(self._watch(namespace))
        finally:
            if self._adopting is not None:
                self._adopting.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._adopting
            await self._stop_all()

    # --- watching ------------------------------------------------------------------------

    async def _watch(self, namespace: str | None) -> None:
        backoff = 1.0
        resource_version: str | None = None
        while True:
            try:
                if resource_version is None:
                    items, resource_version = await self.kube.list_scaled_objects(namespace)
                    await self._resync(namespace, items)
                    self._synced_namespaces.add(namespace)
                    if len(self._synced_namespaces) == len(self.namespaces):
                        self.synced.set()
                async for event in self.kube.watch_scaled_objects(namespace, resource_version):
                    resource_version = event.object["metadata"]["resourceVersion"]
                    if event.type == "BOOKMARK":
                        continue
                    await self._handle(event.type, event.object)
                backoff = 1.0  # the server ended the watch normally: resume from where we are
            except WatchExpiredError:
                log.info("watch of ScaledObjects expired (410 Gone); listing again")
                resource_version = None
            except (KubeError, OSError, TimeoutError, ValueError) as exc:
                log.warning("watching ScaledObjects failed (%s); retrying in %.0fs", exc, backoff)
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, 30.0)

    async def _resync(self, namespace: str | None, items: list[dict[str, Any]]) -> None:
        """Bring the running loops in line with a fresh list (start, restart, stop).

        Every object is recorded before any loop starts, so ownership of a shared target is
        decided with all rivals known; the per-object API calls (finalizers) then run
        RESYNC_CONCURRENCY at a time rather than one after another, which at 10,000 objects
        is the difference between seconds and minutes before the last object's first poll.
        """
        seen = set()
        for item in items:
            seen.add(item["metadata"]["uid"])
            with contextlib.suppress(ConfigError):  # reported by _handle below
                self._record(item["metadata"]["uid"], model.parse_scaled_object(item), item)
        gate = asyncio.Semaphore(RESYNC_CONCURRENCY)

        async def handle(item: dict[str, Any]) -> None:
            async with gate:
                await self._handle("ADDED", item)

        await asyncio.gather(*(handle(item) for item in items))
        for uid, so in list(self.objects.items()):
            if uid not in seen and (namespace is None or so.metadata.namespace == namespace):
                await self._handle("DELETED", self.raw[uid])

    async def _handle(self, event_type: str, raw: dict[str, Any]) -> None:
        uid = raw["metadata"]["uid"]
        if event_type == "DELETED":
            self._forget(uid)
            await self._stop(uid)
            if self.observer is not None:
                meta = raw["metadata"]
                self.observer.forget_object(meta.get("namespace", ""), meta["name"])
            return
        try:
            so = model.parse_scaled_object(raw)
        except ConfigError as exc:
            # The schema let it through (or it is a keda.sh object): report, never crash.
            await self._stop(uid)
            if self.owns(raw):
                await self._reject(raw, str(exc))
            return
        self._record(uid, so, raw)
        if not self.owns(raw):
            await self._stop(uid)  # another replica polls it, finalizes it and writes its status
            return
        if so.metadata.deletion_timestamp is not None:
            await self._finalize(so, raw)
            return
        if FINALIZER not in so.metadata.finalizers:
            await self._add_finalizer(so)
        running = self.loops.get(uid)
        fingerprint = _fingerprint(so)
        if running is not None and running.fingerprint == fingerprint and not running.task.done():
            return
        if running is not None:
            await self._stop(uid)
            if self.observer is not None:  # the new generation may have other triggers
                self.observer.forget_object(so.metadata.namespace or "", so.name)
        if not self.owns(raw) or uid in self.loops:
            return  # its shard went away (or it was started) while we waited above
        self._start(uid, so, raw, fingerprint)

    def _record(self, uid: str, so: model.ScaledObject, raw: dict[str, Any]) -> None:
        previous = self.objects.get(uid)
        if previous is not None:
            self._unindex(uid, _target_key(previous))
        self.objects[uid] = so
        self.raw[uid] = raw
        self._by_target.setdefault(_target_key(so), set()).add(uid)

    def _forget(self, uid: str) -> None:
        previous = self.objects.pop(uid, None)
        self.raw.pop(uid, None)
        if previous is not None:
            self._unindex(uid, _target_key(previous))

    def _unindex(self, uid: str, key: TargetKey) -> None:
        uids = self._by_target.get(key)
        if uids is not None:
            uids.discard(uid)
            if not uids:
                del self._by_target[key]

    # --- loops ---------------------------------------------------------------------------

    def _start(
        self, uid: str, so: model.ScaledObject, raw: dict[str, Any], fingerprint: tuple[Any, ...]
    ) -> None:
        async def emit(*, event_type: str, reason: str, message: str) -> None:
            await self.kube.emit_event(
                involved=self.raw.get(uid, raw),
                event_type=event_type,
                reason=reason,
                message=message,
            )

        loop = ScaleLoop(
            so=so,
            raw=raw,
            kube=self.kube,
            scalers=self.scalers,
            emit=emit,
            observer=self.observer,
            blocked_by=lambda: self.conflict(uid),
            poll_timeout=self.poll_timeout,
            replica_cache=self.replica_cache,
        )
        task = asyncio.create_task(
            self._guard(loop), name=f"loop {so.metadata.namespace}/{so.name}"
        )
        self.loops[uid] = _Running(task=task, fingerprint=fingerprint)

    async def _guard(self, loop: ScaleLoop) -> None:
        """A loop that dies of a bug is logged and restarted, never taking others with it."""
        while True:
            try:
                await loop.run()
                return
            except (Exception, asyncio.CancelledError):
                # A CancelledError nobody asked this task for (a client library failing its
                # futures that way) is a crash like any other, not a reason to stop for good.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # stopping: whatever the loop raised on the way out is moot
                log.exception("%s: scale loop crashed; restarting in 5s", loop.label)
                await asyncio.sleep(5)

    async def _stop(self, uid: str) -> None:
        running = self.loops.pop(uid, None)
        if running is None:
            return
        running.task.cancel()
        self._stopping.add(running.task)
        running.task.add_done_callback(self._stopping.discard)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await running.task

    async def _stop_all(self) -> None:
        for uid in list(self.loops):
            await self._stop(uid)

    # --- sharding ------------------------------------------------------------------------

    def owns(self, raw: Mapping[str, Any]) -> bool:
        """Whether this replica polls the object: always, unless sharded and its shard (by
        scale target, so rivals share one) is not held here."""
        if self.shard_count <= 0:
            return True
        return sharding.shard_of(sharding.shard_key(raw), self.shard_count) in self.shards

    async def set_shards(self, shards: frozenset[int]) -> None:
        """Poll the objects of `shards` from now on. The loops of objects no longer ours have
        stopped when this returns (the caller releases their Leases only then); objects that
        became ours are handled as if just seen (finalizer, deletion, a fresh loop) by a
        background task, so that the caller (renewing Leases) never waits for that."""
        self.shards = frozenset(shards)
        leaving = [uid for uid, raw in self.raw.items() if uid in self.loops and not self.owns(raw)]
        for uid in leaving:
            running = self.loops.pop(uid)
            running.task.cancel()
            self._stopping.add(running.task)
            running.task.add_done_callback(self._stopping.discard)
            so = self.objects.get(uid)
            if so is not None and self.observer is not None:
                self.observer.forget_object(so.metadata.namespace or "", so.name)
        if self._stopping:
            await asyncio.wait(set(self._stopping))
        if self._adopting is None or self._adopting.done():
            self._adopting = asyncio.create_task(self._adopt(), name="adopt shards")
        else:
            self._adopt_again = True

    async def _adopt(self) -> None:
        """Start what the held shards hold and nothing runs for; again if they changed since."""
        while True:
            self._adopt_again = False
            for uid, raw in list(self.raw.items()):
                if uid not in self.loops and self.owns(raw) and self.raw.get(uid) is raw:
                    try:
                        await self._handle("MODIFIED", raw)
                    except Exception:
                        log.exception("taking over %s failed", uid)
            if not self._adopt_again:
                return

    # --- ownership -----------------------------------------------------------------------

    def conflict(self, uid: str) -> str | None:
        """Why this object must not scale its target, or None if it owns it."""
        so = self.objects.get(uid)
        if so is None:
            return None
        key = _target_key(so)
        hpa = self.hpa_targets.get(key)
        if hpa is not None:
            return (
                f"the scale target {key[2]}/{key[3]} is already managed by "
                f"HorizontalPodAutoscaler {hpa}"
            )
        rivals = [
            other
            for other in (self.objects.get(u) for u in self._by_target.get(key, ()))
            if other is not None and other.metadata.deletion_timestamp is None
        ]
        owner = min(rivals, key=_age_key, default=so)
        if owner.metadata.uid != so.metadata.uid:
            return (
                f"the scale target {key[2]}/{key[3]} is already managed by "
                f"ScaledObject {owner.metadata.name}"
            )
        return None

    async def _refresh_hpas(self) -> None:
        while True:
            try:
                targets: dict[TargetKey, str] = {}
                for namespace in self.namespaces:
                    for hpa in await self.kube.list_hpas(namespace):
                        ref = hpa.get("spec", {}).get("scaleTargetRef", {})
                        key = (
                            hpa["metadata"]["namespace"],
                            str(ref.get("apiVersion", "")).rpartition("/")[0],
                            str(ref.get("kind", "")),
                            str(ref.get("name", "")),
                        )
                        targets[key] = hpa["metadata"]["name"]
                self.hpa_targets = targets
            except (KubeError, OSError, TimeoutError) as exc:
                log.warning("listing HorizontalPodAutoscalers failed: %s", exc)
            await asyncio.sleep(HPA_REFRESH_SECONDS)

    # --- finalizer and deletion --------------------------------------------------------

    async def _add_finalizer(self, so: model.ScaledObject) -> None:
        finalizers = [*so.metadata.finalizers, FINALIZER]
        try:
            await self.kube.set_finalizers(
                so.metadata.namespace or "", so.name, finalizers, so.metadata.resource_version or ""
            )
        except ConflictError:
            pass  # a newer version is on its way through the watch
        except KubeError as exc:
            log.warning(
                "%s/%s: adding the finalizer failed: %s", so.metadata.namespace, so.name, exc
            )

    async def _finalize(self, so: model.ScaledObject, raw: dict[str, Any]) -> None:
        uid = so.metadata.uid or ""
        await self._stop(uid)
        if FINALIZER not in so.metadata.finalizers:
            return
        namespace = so.metadata.namespace or ""
        original = so.status.get("originalReplicaCount")
        if so.spec.advanced.restore_to_original_replica_count and isinstance(original, int):
            ref = so.spec.scale_target_ref
            try:
                target = await self.kube.resolve_target(ref.api_version, ref.kind)
                await self.kube.patch_scale(target, namespace, ref.name, original)
                log.info(
                    "%s/%s deleted: restored %s/%s to %d replicas",
                    namespace,
                    so.name,
                    ref.kind,
                    ref.name,
                    original,
                )
            except TargetNotFoundError:
                pass  # nothing left to restore
            except KubeError as exc:
                log.warning(
                    "%s/%s: restoring the original replica count failed: %s",
                    namespace,
                    so.name,
                    exc,
                )
                return  # keep the finalizer: the next event retries
        finalizers = [f for f in so.metadata.finalizers if f != FINALIZER]
        with contextlib.suppress(ConflictError, TargetNotFoundError):
            await self.kube.set_finalizers(
                namespace, so.name, finalizers, so.metadata.resource_version or ""
            )

    async def _reject(self, raw: Mapping[str, Any], message: str) -> None:
        """Ready=False and a Warning event for a spec the operator cannot use."""
        meta = raw.get("metadata", {})
        namespace, name = meta.get("namespace", ""), meta.get("name", "")
        previous = {
            c.get("type"): c for c in (raw.get("status") or {}).get("conditions") or ()
        }.get("Ready", {})
        if (
            previous.get("reason") == "ScaledObjectCheckFailed"
            and previous.get("message") == message
        ):
            return
        log.warning("%s/%s is invalid: %s", namespace, name, message)
        await self.kube.emit_event(
            involved=raw, event_type="Warning", reason="ScaledObjectCheckFailed", message=message
        )
        body = {
            "conditions": status.merge_conditions(
                (raw.get("status") or {}).get("conditions"),
                [status.not_ready("ScaledObjectCheckFailed", message)],
                now=time.time(),
            )
        }
        with contextlib.suppress(KubeError):
            await self.kube.patch_scaled_object_status(namespace, name, body)


def _age_key(so: model.ScaledObject) -> tuple[float, str]:
    created = so.metadata.creation_timestamp
    return (created.timestamp() if created else float("inf"), so.name)
