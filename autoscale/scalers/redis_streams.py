"""`type: redis-streams`: scale on a Redis stream's pending entries, length, or group lag.

KEDA's trigger, parameter for parameter. The mode follows from the parameters exactly as KEDA
picks it:

- no `consumerGroup`: stream length (XLEN), target `streamLength` (default 5);
- `consumerGroup` and a non-zero `lagCount`: the group's lag (XINFO GROUPS, Redis 7+), i.e.
  entries not yet delivered to the group (delivered but unacknowledged ones do not count, as in
  KEDA: add a pending-entries trigger to keep busy workers up), target `lagCount`;
- `consumerGroup` otherwise: the group's pending entries (XPENDING summary: delivered, not
  acknowledged), target `pendingEntriesCount` (default 5). `lagCount: "0"` means unset, as in
  KEDA.

In every mode the trigger is active when the value exceeds `activationLagCount` (default 0).
The metric is named `s{index}-redis-streams-{stream}` (KEDA's name, "/", ".", ":" and "%"
becoming "-").

What a poll reads, and what a missing key or group means (KEDA's behaviour, kept):

- stream length: XLEN reads a missing stream as 0.
- pending entries: XPENDING answers NOGROUP for a missing stream or group. That is a
  ScalerQueryError, not 0: a misspelt group would otherwise scale the workload to zero.
- lag: XINFO GROUPS and XLEN in one round trip. A missing stream is 0 (nothing to
  do yet). A missing group counts every entry of the stream (XLEN): the workers that create the
  group may be the ones scaled to zero. A NULL lag (Redis cannot compute it after deletions
  inside the group's unread range, or for a group created at an arbitrary ID) also falls back
  to XLEN: an upper bound of the undelivered entries, so the trigger may over-scale until Redis
  can count again but never scales to zero while entries wait. A server without the `lag`
  field (Redis < 7) is a ScalerQueryError, detected from the reply itself, with no INFO call.

Differences from KEDA, all on the side of safety:

- `password` is read from `passwordFromEnv` or auth params only; a plaintext `password` in the
  trigger metadata is ignored with a warning (KEDA reads it).
- the target in use must be > 0 and `databaseIndex` >= 0 (KEDA passes them on; the HPA or
  Redis then fails); parameters the chosen mode ignores produce warnings.
- `cert` and `key` must come together, and TLS material is checked when the trigger is read.
- single servers only: the `redis-cluster-streams` and `redis-sentinel-streams` types, and
  their `addresses` / `hosts` / `ports` lists, are not implemented.

Connections: the client (a bounded connection pool) is leased from SharedClients on the first
poll and shared with every trigger reading the same address, database, user, password and TLS
settings; KEDA opens one client per trigger. Every poll's commands go through the client's
AutoPipeline: the commands of the polls waiting at one time are sent as one pipelined round
trip (non-transactional, one reply or error per command), the next as soon as the previous
returns. Polls that the operator spreads over the interval mostly arrive alone and are sent at
once, with no added delay; when they pile up (a burst, a slow server) they share round trips
and use one connection of the pool. A window was not used: it would delay every poll to save
round trips only under load, when the in-flight round trip already gathers the next batch.
`coalescing_counters("redis")` counts polls served and round trips sent.
The client is built from parts, never from a URL,
so no library message can carry the password; each poll is bounded by POLL_TIMEOUT and the
sockets by CONNECT_TIMEOUT / COMMAND_TIMEOUT. I/O (`RedisStreamsScaler._fetch`) is kept apart
from interpretation (`sample_from_snapshot`, pure).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ssl
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Self

import redis.asyncio
import redis.exceptions
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import BlockingConnectionPool, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from autoscale.errors import ConfigError, ScalerQueryError, ScalerUnavailableError
from autoscale.scalers import registry, tls
from autoscale.scalers.base import MetricSample, MetricType
from autoscale.scalers.connections import (
    Lease,
    SharedClients,
    coalescing_counters,
    secret_digest,
)
from autoscale.scalers.params import AUTH, ENV, METADATA, parse_params
from autoscale.scalers.params import param as _param

__all__ = [
    "COMMAND_TIMEOUT",
    "CONNECT_TIMEOUT",
    "POLL_TIMEOUT",
    "GroupInfo",
    "Mode",
    "RedisEndpoint",
    "RedisStreamsConfig",
    "RedisStreamsScaler",
    "StreamSnapshot",
    "entries_count",
    "sample_from_snapshot",
]

CONNECT_TIMEOUT: Final = 3.0  # seconds to open a TCP (and TLS) connection
COMMAND_TIMEOUT: Final = 3.0  # seconds to wait for one reply
POLL_TIMEOUT: Final = 5.0  # seconds for a whole poll, waiting for a pooled connection included
MAX_CONNECTIONS: Final = 4  # per shared client; polls beyond that wait for a free connection
CLIENT_NAME: Final = "autoscale"  # shown by CLIENT LIST


class Mode(enum.Enum):
    """What the trigger counts; the value is the parameter holding its target."""

    PENDING_ENTRIES = "pendingEntriesCount"
    STREAM_LENGTH = "streamLength"
    LAG = "lagCount"


def _address(raw: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port)."""
    host, colon, port = raw.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("write an IPv6 address in brackets: [::1]:6379")
    if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("expected host:port")
    return host, int(port)


def _pem(raw: str) -> str:
    if "-----BEGIN " not in raw:
        raise ValueError("expected PEM text")
    return raw


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisStreamsConfig:
    """A redis-streams trigger's parameters; secrets stay out of repr()."""

    # Where: `address`, or `host` and `port` (KEDA's lookup orders).
    address: tuple[str, int] | None = _param(
        "address", sources=(METADATA, AUTH, ENV), default=None, converter=_address
    )
    host: str | None = _param("host", sources=(METADATA, ENV, AUTH), default=None)
    port: int | None = _param("port", sources=(METADATA, ENV, AUTH), default=None)
    database_index: int = _param("databaseIndex", default=0)
    # What.
    stream: str = _param("stream")
    consumer_group: str | None = _param("consumerGroup", default=None)
    pending_entries_count: int = _param("pendingEntriesCount", default=5)
    stream_length: int = _param("streamLength", default=5)
    lag_count: int | None = _param("lagCount", default=None)
    activation_lag_count: int = _param("activationLagCount", default=0)
    # Who.
    username: str | None = _param("username", sources=(METADATA, ENV, AUTH), default=None)
    password: str | None = _param("password", sources=(ENV, AUTH), default=None, secret=True)
    # TLS: `enableTLS: "true"` in metadata or `tls: enable` in auth params, not both.
    enable_tls: bool | None = _param("enableTLS", default=None)
    tls: str | None = _param("tls", sources=(AUTH,), default=None, choices=("enable", "disable"))
    unsafe_ssl: bool = _param("unsafeSsl", default=False)
    # PEM text from auth params. The CA and certificate are not secret, only long.
    ca: str | None = _param("ca", sources=(AUTH,), default=None, secret=True, converter=_pem)
    cert: str | None = _param(
        "cert", sources=(AUTH,), aliases=("Cert",), default=None, secret=True, converter=_pem
    )
    key: str | None = _param("key", sources=(AUTH,), default=None, secret=True, converter=_pem)
    key_password: str | None = _param("keyPassword", sources=(AUTH,), default=None, secret=True)

    @property
    def mode(self) -> Mode:
        """KEDA's choice: no group -> length; group and lagCount != 0 -> lag; else pending."""
        if not self.consumer_group:
            return Mode.STREAM_LENGTH
        if self.lag_count:
            return Mode.LAG
        return Mode.PENDING_ENTRIES

    @property
    def target(self) -> int:
        """The target value of the mode in use."""
        match self.mode:
            case Mode.STREAM_LENGTH:
                return self.stream_length
            case Mode.LAG:
                assert self.lag_count is not None  # the mode says so
                return self.lag_count
            case Mode.PENDING_ENTRIES:
                return self.pending_entries_count

    @property
    def host_port(self) -> tuple[str, int]:
        """The server: `address` if set, else `host` and `port` (validate() ensures one)."""
        if self.address is not None:
            return self.address
        if self.host is None or self.port is None:
            raise ValueError("no address")  # unreachable after validate()
        return self.host, self.port

    @property
    def use_tls(self) -> bool:
        return bool(self.enable_tls) or self.tls == "enable"

    def validate(self) -> None:
        """Rules across fields; every problem is reported at once."""
        problems = []
        if self.address is None:
            if self.host is None and self.port is None:
                problems.append('missing parameter "address" (host:port), or "host" and "port"')
            elif self.port is None:
                problems.append('parameter "host" needs "port" too')
            elif self.host is None:
                problems.append('parameter "port" needs "host" too')
        if self.address is None and self.port is not None and not 1 <= self.port <= 65535:
            problems.append('parameter "port" must be between 1 and 65535')
        if self.database_index < 0:
            problems.append('parameter "databaseIndex" must not be negative')
        if self.target <= 0:
            problems.append(f'parameter "{self.mode.value}" must be greater than 0')
        if self.enable_tls is not None and self.tls is not None:
            problems.append(
                'TLS is set twice, by "enableTLS" in metadata and "tls" in auth params; keep one'
            )
        if (self.cert is None) != (self.key is None):
            given, missing = ("cert", "key") if self.key is None else ("key", "cert")
            problems.append(f'auth param "{given}" needs "{missing}" too')
        if problems:
            raise ConfigError("; ".join(problems))
        if self.use_tls:
            problem = _check_tls_material(self)
            if problem:
                raise ConfigError(problem)


# ---------------------------------------------------------------------------------------------
# Interpretation (pure)


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupInfo:
    """One row of XINFO GROUPS, as far as scaling cares."""

    name: bytes
    lag: int | None  # None: Redis reported NULL (or, with has_lag False, no field at all)
    has_lag: bool = True  # False: the server predates Redis 7


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamSnapshot:
    """What one poll read, uninterpreted; which fields are set depends on the mode."""

    length: int | None = None  # XLEN (a missing stream reads as 0)
    pending: int | None = None  # XPENDING summary count
    no_group: bool = False  # XPENDING answered NOGROUP: no such stream, or no such group
    groups: tuple[GroupInfo, ...] | None = None  # XINFO GROUPS; None: no such stream


def entries_count(snapshot: StreamSnapshot, config: RedisStreamsConfig) -> int:
    """The number the trigger scales on, from a snapshot read in `config.mode`.

    Raises ScalerQueryError where the source answered but the answer cannot be scaled on.
    """
    match config.mode:
        case Mode.STREAM_LENGTH:
            return _read(snapshot.length, "XLEN")
        case Mode.PENDING_ENTRIES:
            if snapshot.no_group:
                raise ScalerQueryError(
                    f'stream "{config.stream}" or its consumer group "{config.consumer_group}" '
                    "does not exist (NOGROUP)"
                )
            return _read(snapshot.pending, "XPENDING")
        case Mode.LAG:
            if snapshot.groups is None:
                return 0  # no stream yet: nothing to do
            wanted = (config.consumer_group or "").encode()
            for group in snapshot.groups:
                if group.name != wanted:
                    continue
                if not group.has_lag:
                    raise ScalerQueryError(
                        '"lagCount" needs Redis 7 or later: XINFO GROUPS reports no lag'
                    )
                if group.lag is None:  # Redis cannot count: every entry is an upper bound
                    return _read(snapshot.length, "XLEN")
                return group.lag
            return _read(snapshot.length, "XLEN")  # no group yet: every entry waits for it


def _read(value: int | None, command: str) -> int:
    if value is None:
        raise ValueError(f"the snapshot lacks the {command} reply this mode needs")
    return value


def sample_from_snapshot(
    snapshot: StreamSnapshot,
    config: RedisStreamsConfig,
    *,
    name: str,
    metric_type: MetricType = MetricType.AVERAGE_VALUE,
) -> MetricSample:
    """The trigger's sample: the mode's count against its target and activationLagCount."""
    return MetricSample(
        name=name,
        value=float(entries_count(snapshot, config)),
        target=float(config.target),
        activation_target=float(config.activation_lag_count),
        metric_type=metric_type,
    )


def ignored_parameters(
    config: RedisStreamsConfig, metadata: Mapping[str, str], auth_params: Mapping[str, str]
) -> list[str]:
    """Warnings for parameters the configuration makes useless (KEDA ignores them silently)."""
    notes = []
    mode = config.mode
    for key in ("pendingEntriesCount", "lagCount"):
        if mode is Mode.STREAM_LENGTH and key in metadata:
            notes.append(
                f'parameter "{key}" is ignored without "consumerGroup": '
                "the trigger scales on the stream length"
            )
    if mode is not Mode.STREAM_LENGTH and "streamLength" in metadata:
        notes.append('parameter "streamLength" is ignored when "consumerGroup" is set')
    if mode is Mode.LAG and "pendingEntriesCount" in metadata:
        notes.append('parameter "pendingEntriesCount" is ignored when "lagCount" is set')
    if mode is Mode.PENDING_ENTRIES and config.lag_count == 0:
        notes.append('parameter "lagCount" is 0, which means unset: the trigger scales on pending')
    if config.address is not None and (config.host is not None or config.port is not None):
        notes.append('parameters "host" and "port" are ignored when "address" is set')
    if not config.use_tls:
        unused = [k for k in ("ca", "cert", "Cert", "key", "keyPassword") if k in auth_params]
        unused += ["unsafeSsl"] if "unsafeSsl" in metadata else []
        if unused:
            listed = ", ".join(f'"{k}"' for k in unused)
            notes.append(f"TLS is off: {listed} ignored")
    if config.activation_lag_count < 0:
        notes.append('parameter "activationLagCount" is negative: the trigger is always active')
    return notes


# ---------------------------------------------------------------------------------------------
# Connections


@dataclass(frozen=True, slots=True)
class RedisEndpoint:
    """The key of a shared client: equal endpoints share one. Digests, never secrets."""

    host: str
    port: int
    db: int
    username: str | None
    password_digest: str | None
    tls: bool = False
    unsafe_ssl: bool = False
    tls_digest: str | None = None  # of ca, cert, key and keyPassword together

    @classmethod
    def of(cls, config: RedisStreamsConfig) -> RedisEndpoint:
        host, port = config.host_port
        material = None
        if config.use_tls:
            parts = (config.ca, config.cert, config.key, config.key_password)
            material = secret_digest("\0".join(p or "" for p in parts))
        return cls(
            host=host,
            port=port,
            db=config.database_index,
            username=config.username,
            password_digest=secret_digest(config.password),
            tls=config.use_tls,
            unsafe_ssl=config.use_tls and config.unsafe_ssl,
            tls_digest=material,
        )

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "rediss" if self.tls else "redis"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{host}:{self.port}/{self.db}"


class _PreparedTLSConnection(SSLConnection):
    """An SSLConnection using an SSLContext built once per client (with the client key loaded
    from memory), instead of loading certificate files on every connect."""

    def __init__(self, *, tls_context: ssl.SSLContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ssl_context.context = tls_context


def _tls_context(config: RedisStreamsConfig, *, system_roots: bool = True) -> ssl.SSLContext:
    """KEDA's TLS client settings: system roots plus `ca`; `unsafeSsl` skips verification."""
    return tls.config_context(config, system_roots=system_roots)


def _check_tls_material(config: RedisStreamsConfig) -> str | None:
    """Why `ca`, `cert`, `key` and `keyPassword` cannot be used, or None; never their text."""
    fields = tls.material_fields(config.cert)
    return tls.material_problem(lambda: _tls_context(config, system_roots=False), fields)


async def _open_client(config: RedisStreamsConfig) -> SharedRedis:
    """A client with its own bounded pool; no connection is made until the first command."""
    host, port = config.host_port
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "db": config.database_index,
        "username": config.username,
        "password": config.password,
        "client_name": CLIENT_NAME,
        # RESP2: every server KEDA supports answers it (HELLO, for RESP3, needs Redis 6).
        "protocol": 2,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": COMMAND_TIMEOUT,
        # One immediate retry renews a connection the server closed while it sat in the pool.
        "retry": Retry(NoBackoff(), 1),
        "max_connections": MAX_CONNECTIONS,
        "timeout": POLL_TIMEOUT,  # waiting for a free pooled connection
    }
    if config.use_tls:
        options["connection_class"] = _PreparedTLSConnection
        options["tls_context"] = _tls_context(config)
    return SharedRedis(redis.asyncio.Redis.from_pool(BlockingConnectionPool(**options)))


async def _close_client(shared: SharedRedis) -> None:
    try:
        await shared.pipeline.aclose()
    finally:
        await shared.client.aclose()


# ---------------------------------------------------------------------------------------------
# Auto-pipelining

Command = Callable[[Pipeline], object]  # queues one command on a pipeline, e.g. p.xlen(key)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a reply's exception as seen: its poll may have timed out already."""
    if not future.cancelled():
        future.exception()


class AutoPipeline:
    """Sends the commands of concurrent polls on one client as pipelined round trips.

    A poll queues its commands and waits. While no round trip is in flight, the queue is sent
    at the next turn of the event loop (polls started in the same turn share it); while one is,
    everything queued meanwhile goes in the next, sent as soon as it returns. So a quiet source
    gets one round trip per poll, with no added delay, and a busy one one round trip per
    reply's time however many polls wait: at most one connection of the pool in use.

    Pipelines are not transactions (MULTI/EXEC would block the server for the whole batch and
    fail it as a whole): each command gets its own reply or its own error, so a missing stream
    fails only the poll that asked for it. An error of the round trip itself (the connection
    broke, a socket timeout) fails every poll in it, as it would have failed each of them.
    """

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._client = client
        self._queue: list[tuple[tuple[Command, ...], asyncio.Future[list[Any]]]] = []
        self._sender: asyncio.Task[None] | None = None
        self._trip: (
            tuple[list[tuple[tuple[Command, ...], asyncio.Future[list[Any]]]], asyncio.Future[Any]]
            | None
        ) = None
        self._closed = False
        self._counters = coalescing_counters("redis")

    async def execute(self, *commands: Command) -> list[Any]:
        """The replies to `commands`, in order: each a value or the error Redis answered it
        with. Raises what broke the round trip, if anything did."""
        if self._closed:
            raise redis.exceptions.ConnectionError("the shared client was closed")
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[list[Any]] = loop.create_future()
        reply.add_done_callback(_retrieve)
        reply.add_done_callback(self._gave_up)
        self._queue.append((commands, reply))
        self._counters.reads += 1
        if self._sender is None:
            self._sender = loop.create_task(self._send())
        return await reply

    def _gave_up(self, _: asyncio.Future[list[Any]]) -> None:
        """When every poll of the round trip in flight is done (they timed out: the operator
        cancels a poll at its timeout), cancel the round trip too. redis-py then drops its
        connection at once, as it would for a lone command: a silent server is not held any
        longer than the polls that wanted it, and the polls queued behind go out on a new one."""
        if self._trip is not None and all(reply.done() for _, reply in self._trip[0]):
            self._trip[1].cancel()

    async def aclose(self) -> None:
        """Stop sending; polls still waiting get a ConnectionError."""
        self._closed = True
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        self._fail(self._queue, redis.exceptions.ConnectionError("the shared client was closed"))
        self._queue = []

    async def _send(self) -> None:
        batch: list[tuple[tuple[Command, ...], asyncio.Future[list[Any]]]] = []
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                batch = [(commands, reply) for commands, reply in batch if not reply.done()]
                if not batch:
                    continue
                pipe = self._client.pipeline(transaction=False)
                for commands, _ in batch:
                    for command in commands:
                        command(pipe)
                self._counters.round_trips += 1
                trip = asyncio.ensure_future(pipe.execute(raise_on_error=False))
                self._trip = (batch, trip)
                try:
                    async with asyncio.timeout(POLL_TIMEOUT):
                        replies = await trip
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if not trip.cancelled() or (task is not None and task.cancelling()):
                        raise
                    continue  # every poll of the batch gave up (see _gave_up)
                except Exception as exc:
                    self._fail(batch, exc)
                    continue
                finally:
                    self._trip = None
                start = 0
                for commands, reply in batch:
                    if not reply.done():
                        reply.set_result(list(replies[start : start + len(commands)]))
                    start += len(commands)
                batch = []
        except asyncio.CancelledError:
            self._fail(batch, redis.exceptions.ConnectionError("the shared client was closed"))
            raise
        finally:
            if self._sender is asyncio.current_task():
                self._sender = None

    @staticmethod
    def _fail(
        batch: list[tuple[tuple[Command, ...], asyncio.Future[list[Any]]]], exc: BaseException
    ) -> None:
        for _, reply in batch:
            if not reply.done():
                reply.set_exception(exc)


@dataclass(slots=True, eq=False)
class SharedRedis:
    """What one shared lease holds: the client (its bounded pool) and its auto-pipeline."""

    client: redis.asyncio.Redis
    pipeline: AutoPipeline = field(init=False)

    def __post_init__(self) -> None:
        self.pipeline = AutoPipeline(self.client)


# ---------------------------------------------------------------------------------------------
# The scaler


class RedisStreamsScaler:
    """One redis-streams trigger; see the module docstring."""

    type_name: ClassVar[str] = "redis-streams"
    aliases: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        config: RedisStreamsConfig,
        *,
        trigger_index: int,
        trigger_name: str | None = None,
        connections: SharedClients,
        metric_type: MetricType = MetricType.AVERAGE_VALUE,
        timeout: float = POLL_TIMEOUT,
    ) -> None:
        self.config = config
        self.metric_name = registry.metric_name(trigger_index, f"redis-streams-{config.stream}")
        self.metric_type = metric_type
        self.endpoint = RedisEndpoint.of(config)
        self.label = registry.trigger_label(
            index=trigger_index, name=trigger_name, type_name=self.type_name
        )
        self._connections = connections
        self._timeout = timeout
        self._lease: Lease[SharedRedis] | None = None
        self._leasing = asyncio.Lock()

    @classmethod
    def from_trigger(
        cls,
        *,
        trigger_index: int,
        trigger_name: str | None,
        metadata: Mapping[str, str],
        auth_params: Mapping[str, str],
        resolved_env: Mapping[str, str],
        connections: SharedClients,
        metric_type: MetricType = MetricType.AVERAGE_VALUE,
        warnings: list[str] | None = None,
    ) -> Self:
        """Read the trigger (no network I/O); ConfigError names every bad field."""
        label = registry.trigger_label(
            index=trigger_index, name=trigger_name, type_name=cls.type_name
        )
        config = parse_params(
            RedisStreamsConfig,
            metadata=metadata,
            auth_params=auth_params,
            resolved_env=resolved_env,
            trigger_label=label,
            warnings=warnings,
        )
        if warnings is not None:
            notes = ignored_parameters(config, metadata, auth_params)
            warnings.extend(f"{label}: {note}" for note in notes)
        return cls(
            config,
            trigger_index=trigger_index,
            trigger_name=trigger_name,
            connections=connections,
            metric_type=metric_type,
        )

    def __repr__(self) -> str:
        return f"<RedisStreamsScaler {self.metric_name} {self.config.mode.name} {self.endpoint}>"

    async def sample(self) -> MetricSample:
        """One poll: ScalerUnavailableError if Redis cannot be reached in time,
        ScalerQueryError if it answers with something that cannot be scaled on."""
        with self._translate_errors():
            async with asyncio.timeout(self._timeout):
                client = await self._client()
                snapshot = await self._fetch(client)
        with self._translate_errors():
            return sample_from_snapshot(
                snapshot, self.config, name=self.metric_name, metric_type=self.metric_type
            )

    async def aclose(self) -> None:
        """Release the shared client (closed if this was its last user); idempotent."""
        lease, self._lease = self._lease, None
        if lease is not None:
            await lease.release()

    async def _client(self) -> SharedRedis:
        async with self._leasing:
            if self._lease is None:
                config = self.config
                self._lease = await self._connections.acquire(
                    self.endpoint, lambda: _open_client(config), _close_client
                )
            return self._lease.client

    async def _fetch(self, shared: SharedRedis) -> StreamSnapshot:
        """Read what the mode needs: one or two commands, sent in the shared auto-pipeline."""
        config = self.config
        stream = config.stream
        match config.mode:
            case Mode.STREAM_LENGTH:
                (length,) = await shared.pipeline.execute(lambda p: p.xlen(stream))
                if isinstance(length, Exception):
                    raise length
                return StreamSnapshot(length=int(length))
            case Mode.PENDING_ENTRIES:
                group = config.consumer_group
                assert group is not None  # the mode says so
                (summary,) = await shared.pipeline.execute(lambda p: p.xpending(stream, group))
                if isinstance(summary, redis.exceptions.ResponseError) and str(summary).startswith(
                    "NOGROUP"
                ):
                    return StreamSnapshot(no_group=True)
                if isinstance(summary, Exception):
                    raise summary
                return StreamSnapshot(pending=int(summary["pending"]))
            case Mode.LAG:
                groups, length = await shared.pipeline.execute(
                    lambda p: p.xinfo_groups(stream), lambda p: p.xlen(stream)
                )
                if isinstance(length, Exception):
                    raise length
                if isinstance(groups, redis.exceptions.ResponseError):
                    if "no such key" not in str(groups).lower():
                        raise groups
                    return StreamSnapshot(length=int(length), groups=None)
                if isinstance(groups, Exception):
                    raise groups
                return StreamSnapshot(length=int(length), groups=_groups(groups))

    @contextlib.contextmanager
    def _translate_errors(self) -> Iterator[None]:
        """Library exceptions become ours, with the password (if any) scrubbed from the text."""
        where = f"{self.label}: {self.endpoint}"
        try:
            yield
        except (ScalerQueryError, ScalerUnavailableError) as exc:
            raise type(exc)(f"{where}: {self._scrub(str(exc))}") from None
        except redis.exceptions.AuthenticationError as exc:
            raise ScalerQueryError(
                f"{where}: authentication failed: {self._scrub(str(exc))}"
            ) from exc
        except redis.exceptions.NoPermissionError as exc:
            raise ScalerQueryError(f"{where}: not permitted: {self._scrub(str(exc))}") from exc
        except TimeoutError as exc:  # asyncio.timeout, or a socket timeout
            raise ScalerUnavailableError(f"{where}: no answer within {self._timeout:g}s") from exc
        except redis.exceptions.ResponseError as exc:
            raise ScalerQueryError(f"{where}: {self._scrub(str(exc))}") from exc
        except (redis.exceptions.RedisError, OSError) as exc:
            reason = self._scrub(str(exc)) or type(exc).__name__
            raise ScalerUnavailableError(f"{where}: unavailable: {reason}") from exc

    def _scrub(self, text: str) -> str:
        for secret in (self.config.password, self.config.key_password):
            if secret:
                text = text.replace(secret, "***")
        return text


def _groups(reply: list[dict[str, Any]]) -> tuple[GroupInfo, ...]:
    rows = []
    for row in reply:
        name = row.get("name", b"")
        lag = row.get("lag")
        rows.append(
            GroupInfo(
                name=name if isinstance(name, bytes) else str(name).encode(),
                lag=None if lag is None else int(lag),
                has_lag="lag" in row,
            )
        )
    return tuple(rows)
