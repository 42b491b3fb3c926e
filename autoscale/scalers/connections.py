"""Shared, reference-counted clients: one per event-source endpoint and credentials, process-wide.

KEDA opens one client per trigger of every ScaledObject, and reopens it on every error (its
issues #3151, #6266, #6955): a thousand ScaledObjects reading one Redis hold a thousand
connections. Here every scaler that reads the same endpoint with the same credentials and TLS
settings leases the same client (a connection pool), and the client is closed when the last
lease is released. A scaler leases lazily, on its first poll, and releases in `aclose()`.

The key that identifies a client is a hashable value chosen by the scaler. It must not hold a
secret: put `secret_digest(password)` in it instead, a keyed hash whose key is random per
process, so a heap dump or a logged key reveals nothing that can be tested offline. The
plaintext stays in the scaler's config and in the client itself, nowhere else.

This module knows no client library. It must not log keys' contents beyond their repr, which
therefore must not show secrets either.

Sources that coalesce reads (Kafka's offsets batcher, Redis' auto-pipelining, Prometheus'
shared in-flight queries) count what they send in `coalescing_counters()`: per source, the
scaler reads served and the round trips (requests, pipelines) actually sent. Their ratio is
what coalescing saves; the counters are plain integers, cheap to bump on every read, and carry
no key, address or query (nothing that could hold a secret).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

__all__ = [
    "CoalescingCounters",
    "Lease",
    "SharedClients",
    "all_coalescing_counters",
    "coalescing_counters",
    "secret_digest",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_DIGEST_KEY = secrets.token_bytes(32)


def secret_digest(secret: str | bytes | None) -> str | None:
    """A keyed, per-process digest of `secret` for use in client keys; None stays None.

    Equal secrets give equal digests within one process, so clients are shared exactly when
    credentials match; the digest cannot be reversed or checked against guesses without the
    process's random key.
    """
    if secret is None:
        return None
    data = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(_DIGEST_KEY, data, hashlib.sha256).hexdigest()


@dataclass(slots=True)
class CoalescingCounters:
    """What one source's coalescing saved, since the process started (monotonic counts)."""

    reads: int = 0  # reads scalers asked for (one per request a poll would send on its own)
    round_trips: int = 0  # requests or pipelines actually sent to the source


_COUNTERS: dict[str, CoalescingCounters] = {}


def all_coalescing_counters() -> dict[str, CoalescingCounters]:
    """Every source's counters so far, by source name (a copy: safe to read while polls run)."""
    return {
        source: CoalescingCounters(counters.reads, counters.round_trips)
        for source, counters in _COUNTERS.items()
    }


def coalescing_counters(source: str) -> CoalescingCounters:
    """The process-wide counters of `source` ("kafka", "redis", "prometheus"), created on first
    use; callers bump them, exporters read them."""
    counters = _COUNTERS.get(source)
    if counters is None:
        counters = _COUNTERS[source] = CoalescingCounters()
    return counters


@dataclass(slots=True, eq=False)
class _Entry:
    client: Any
    close: Callable[[Any], Awaitable[None]]
    leases: int = 0


class Lease(Generic[T]):
    """One scaler's hold on a shared client; `release()` is idempotent."""

    __slots__ = ("_entry", "_key", "_owner", "_released")

    def __init__(self, owner: SharedClients, key: Hashable, entry: _Entry) -> None:
        self._owner = owner
        self._key = key
        self._entry = entry
        self._released = False

    @property
    def client(self) -> T:
        """The shared client; valid until this lease is released."""
        if self._released:
            raise RuntimeError("the lease on this client was released")
        return cast(T, self._entry.client)

    @property
    def released(self) -> bool:
        return self._released

    async def release(self) -> None:
        """Give the client back; the last lease to go closes it."""
        if self._released:
            return
        self._released = True
        await self._owner._release(self._key, self._entry)

    def __repr__(self) -> str:
        state = "released" if self._released else "held"
        return f"<Lease {self._key!r} {state}>"


class SharedClients:
    """The process's shared clients, by key; create one per operator and `aclose()` it at exit.

    Not thread-safe: use it from one event loop, like the rest of the operator.
    """

    def __init__(self) -> None:
        self._entries: dict[Hashable, _Entry] = {}
        self._opening: dict[Hashable, asyncio.Future[None]] = {}
        self._closed = False

    async def acquire(
        self,
        key: Hashable,
        open_client: Callable[[], Awaitable[T]],
        close_client: Callable[[T], Awaitable[None]],
    ) -> Lease[T]:
        """Lease the client for `key`, opening it with `open_client()` if nobody holds one.

        Concurrent first acquirers of one key wait for a single open. If opening raises, the
        exception propagates to the opener, nothing is kept, and those waiting try again.
        `close_client` is the one given by whoever opened the client.
        """
        while True:
            if self._closed:
                raise RuntimeError("SharedClients is closed")
            entry = self._entries.get(key)
            if entry is not None:
                entry.leases += 1
                return Lease(self, key, entry)
            opening = self._opening.get(key)
            if opening is None:
                break
            await asyncio.wait({opening})  # then look again: opened, or ours to try
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._opening[key] = done
        try:
            client = await open_client()
            if self.closed:  # closed while we were opening: do not leak the client
                await _close_quietly(key, close_client, client)
                raise RuntimeError("SharedClients is closed")
            entry = _Entry(client, cast(Callable[[Any], Awaitable[None]], close_client), 1)
            self._entries[key] = entry
            log.debug("opened shared client %r", key)
            return Lease(self, key, entry)
        finally:
            del self._opening[key]
            done.set_result(None)

    @property
    def closed(self) -> bool:
        """True once aclose() has run."""
        return self._closed

    def leases(self, key: Hashable) -> int:
        """How many leases hold the client for `key` (0 when there is none)."""
        entry = self._entries.get(key)
        return entry.leases if entry is not None else 0

    def __len__(self) -> int:
        """The number of open clients."""
        return len(self._entries)

    async def aclose(self) -> None:
        """Close every client, leased or not; later releases are no-ops. Idempotent."""
        self._closed = True
        entries, self._entries = self._entries, {}
        for key, entry in entries.items():
            await _close_quietly(key, entry.close, entry.client)

    async def _release(self, key: Hashable, entry: _Entry) -> None:
        if self._entries.get(key) is not entry:  # closed by aclose() already
            return
        entry.leases -= 1
        if entry.leases > 0:
            return
        del self._entries[key]
        await _close_quietly(key, entry.close, entry.client)


async def _close_quietly(
    key: Hashable, close: Callable[[Any], Awaitable[None]], client: object
) -> None:
    """Close a client; a failure to close is logged, never raised (the client is gone anyway)."""
    try:
        await close(client)
    except Exception as exc:  # a close error must not break the release of a scaler
        log.warning("closing shared client %r failed: %s", key, type(exc).__name__)
    else:
        log.debug("closed shared client %r", key)
