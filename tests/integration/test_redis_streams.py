"""redis-streams against real Redis 7 servers: the bench's, plus a few this module starts itself
(one it stops and restarts, one speaking TLS with client certificates).

Each mode is checked on real streams and consumer groups, then what a missing stream or group
gives, that scalers on one server share one connection, that an unreachable or silent server is
a ScalerUnavailableError within the poll timeout, and that passwords never reach any text.
"""

from __future__ import annotations

import asyncio
import socket
import time
import traceback
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from autoscale.errors import ScalerError, ScalerQueryError, ScalerUnavailableError
from autoscale.scalers.base import MetricSample
from autoscale.scalers.connections import SharedClients
from autoscale.scalers.redis_streams import POLL_TIMEOUT, RedisStreamsScaler
from tests.testbed import versions
from tests.testbed.pki import TinyCA
from tests.testbed.procs import LOOPBACK, ManagedProcess, free_port, port_open, wait_until
from tests.testbed.services import Redis

pytestmark = pytest.mark.testbed

PASSWORD = "s3cret-Pässword-for-the-test"


@pytest.fixture
async def connections() -> AsyncIterator[SharedClients]:
    pool = SharedClients()
    yield pool
    await pool.aclose()


@pytest.fixture
async def admin(redis_server: Redis) -> AsyncIterator[aioredis.Redis]:
    """A plain client of the bench's Redis, as the default (administrator) user."""
    client = aioredis.Redis(host=LOOPBACK, port=redis_server.port)
    yield client
    await client.aclose()


@pytest.fixture
async def stream(admin: aioredis.Redis, unique_name: str) -> AsyncIterator[str]:
    """This test's stream name; the key is deleted afterwards."""
    yield unique_name
    await admin.delete(unique_name)


@pytest.fixture
async def acl_user(admin: aioredis.Redis, unique_name: str) -> AsyncIterator[str]:
    """A Redis ACL user of this test's own, with PASSWORD and every right; removed afterwards."""
    await admin.execute_command("ACL", "SETUSER", unique_name, "on", f">{PASSWORD}", "~*", "+@all")
    yield unique_name
    await admin.execute_command("ACL", "DELUSER", unique_name)


def make(
    port: int,
    connections: SharedClients,
    metadata: dict[str, str],
    auth: dict[str, str] | None = None,
    *,
    index: int = 0,
    timeout: float = POLL_TIMEOUT,
) -> RedisStreamsScaler:
    built = RedisStreamsScaler.from_trigger(
        trigger_index=index,
        trigger_name=None,
        metadata={"address": f"{LOOPBACK}:{port}", **metadata},
        auth_params=auth or {},
        resolved_env={},
        connections=connections,
    )
    if timeout == POLL_TIMEOUT:
        return built
    return RedisStreamsScaler(
        built.config, trigger_index=index, connections=connections, timeout=timeout
    )


async def fill(
    admin: aioredis.Redis, stream: str, entries: int, *, group: str | None = None, read: int = 0
) -> None:
    """`entries` entries; with `group`, a group from the start that has read `read` of them."""
    for i in range(entries):
        await admin.xadd(stream, {"job": str(i)})
    if group is not None:
        await admin.xgroup_create(stream, group, id="0")
        if read:
            await admin.xreadgroup(group, "worker-1", {stream: ">"}, count=read)


async def sample_once(scaler: RedisStreamsScaler) -> MetricSample:
    try:
        return await scaler.sample()
    finally:
        await scaler.aclose()


async def connections_of(admin: aioredis.Redis, user: str) -> int:
    return sum(1 for c in await admin.client_list() if c.get("user") == user)


async def eventually(check: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# The three modes on real streams


async def test_pending_entries_are_delivered_but_unacknowledged(
    redis_server: Redis, connections: SharedClients, admin: aioredis.Redis, stream: str
) -> None:
    """XPENDING mode: 4 read, 1 acknowledged -> 3, against pendingEntriesCount."""
    await fill(admin, stream, 10, group="workers", read=4)
    [first] = await admin.xpending_range(stream, "workers", min="-", max="+", count=1)
    await admin.xack(stream, "workers", first["message_id"])
    scaler = make(
        redis_server.port,
        connections,
        {"stream": stream, "consumerGroup": "workers", "pendingEntriesCount": "2"},
        index=1,
    )
    sample = await sample_once(scaler)
    assert sample == MetricSample(name=f"s1-redis-streams-{stream}", value=3.0, target=2.0)


async def test_lag_counts_entries_not_yet_delivered(
    redis_server: Redis, connections: SharedClients, admin: aioredis.Redis, stream: str
) -> None:
    """lagCount mode: 10 entries, 4 delivered -> lag 6 (pending ones do not count)."""
    await fill(admin, stream, 10, group="workers", read=4)
    metadata = {"stream": stream, "consumerGroup": "workers", "lagCount": "3"}
    sample = await sample_once(make(redis_server.port, connections, metadata))
    assert (sample.value, sample.target) == (6.0, 3.0)


async def test_stream_length_without_a_group(
    redis_server: Redis, connections: SharedClients, admin: aioredis.Redis, stream: str
) -> None:
    """XLEN mode: every entry, read or not, against streamLength (default 5)."""
    await fill(admin, stream, 10, group="workers", read=10)
    sample = await sample_once(make(redis_server.port, connections, {"stream": stream}))
    assert (sample.value, sample.target) == (10.0, 5.0)


async def test_activation_threshold(
    redis_server: Redis, connections: SharedClients, admin: aioredis.Redis, stream: str
) -> None:
    """Active only when the value exceeds activationLagCount."""
    await fill(admin, stream, 10, group="workers", read=4)
    metadata = {"stream": stream, "consumerGroup": "workers", "activationLagCount": "4"}
    scaler = make(redis_server.port, connections, metadata)
    try:
        first = await scaler.sample()
        assert (first.value, first.activation_target) == (4.0, 4.0)
        assert not first.value > first.activation_target
        await admin.xreadgroup("workers", "worker-1", {stream: ">"}, count=1)
        second = await scaler.sample()
        assert second.value == 5.0
        assert second.value > second.activation_target
    finally:
        await scaler.aclose()


# ---------------------------------------------------------------------------------------------
# Missing keys and groups, and keys of another type


async def test_missing_stream_is_zero_in_length_and_lag_modes(
    redis_server: Redis, connections: SharedClients, stream: str
) -> None:
    """No stream yet: nothing to do (KEDA: XLEN reads 0; lag mode returns 0)."""
    for metadata in ({}, {"consumerGroup": "g", "lagCount": "1"}):
        scaler = make(redis_server.port, connections, {"stream": stream, **metadata})
        assert (await sample_once(scaler)).value == 0.0


async def test_missing_group_in_lag_mode_counts_every_entry(
    redis_server: Redis, connections: SharedClients, admin: aioredis.Redis, stream: str
) -> None:
    """The workers that would create the group may be at zero: all 3 entries wait (KEDA)."""
    await fill(admin, stream, 3)
    metadata = {"stream": stream, "consumerGroup": "not-yet", "lagCount": "1"}
    assert (await sample_once(make(redis_server.port, connections, metadata))).value == 3.0


async def test_missing_group_or_stream_in_pending_mode_is_a_query_error(
    redis_server: Redis, connections: SharedClients, admin: aioredis.Redis, stream: str
) -> None:
    """NOGROUP is not silently 0: a misspelt group must not scale the workload to zero."""
    for setup in (False, True):
        if setup:
            await fill(admin, stream, 3, group="real")
        scaler = make(redis_server.port, connections, {"stream": stream, "consumerGroup": "typo"})
        with pytest.raises(ScalerQueryError) as info:
            await sample_once(scaler)
        assert str(info.value) == (
            f"trigger[0] (redis-streams): redis://{LOOPBACK}:{redis_server.port}/0: "
            f'stream "{stream}" or its consumer group "typo" does not exist (NOGROUP)'
        )
        assert not info.value.transient


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param({}, id="length"),
        pytest.param({"consumerGroup": "g"}, id="pending"),
        pytest.param({"consumerGroup": "g", "lagCount": "1"}, id="lag"),
    ],
)
async def test_key_of_another_type_is_a_query_error(
    redis_server: Redis,
    connections: SharedClients,
    admin: aioredis.Redis,
    stream: str,
    metadata: dict[str, str],
) -> None:
    """A string where the stream should be: WRONGTYPE, in every mode."""
    await admin.set(stream, "not a stream")
    with pytest.raises(ScalerQueryError, match="WRONGTYPE"):
        await sample_once(make(redis_server.port, connections, {"stream": stream, **metadata}))


async def test_null_lag_falls_back_to_stream_length(
    redis_server: Redis, connections: SharedClients, admin: aioredis.Redis, stream: str
) -> None:
    """A deletion inside the group's unread range makes Redis report lag NULL; the trigger then
    counts the stream's entries, an upper bound, rather than guessing low."""
    for entry_id in ("1-0", "2-0", "3-0"):
        await admin.xadd(stream, {"job": entry_id}, id=entry_id)
    await admin.xgroup_create(stream, "workers", id="0")
    await admin.xdel(stream, "2-0")
    [info] = await admin.xinfo_groups(stream)
    assert info["lag"] is None  # the situation is real, not simulated
    metadata = {"stream": stream, "consumerGroup": "workers", "lagCount": "1"}
    assert (await sample_once(make(redis_server.port, connections, metadata))).value == 2.0


# ---------------------------------------------------------------------------------------------
# One connection for every scaler of a server


async def test_scalers_of_one_server_share_one_connection(
    redis_server: Redis,
    connections: SharedClients,
    admin: aioredis.Redis,
    stream: str,
    acl_user: str,
) -> None:
    """Three triggers (three modes, two streams) on one server and user: one client, one TCP
    connection. It is closed when the last scaler is closed, not before. Another SharedClients
    (another operator process) has its own."""
    await fill(admin, stream, 5, group="workers", read=2)
    auth = {"username": acl_user, "password": PASSWORD}
    scalers = [
        make(redis_server.port, connections, {"stream": stream}, auth, index=0),
        make(redis_server.port, connections, {"stream": stream, "consumerGroup": "workers"}, auth),
        make(
            redis_server.port,
            connections,
            {"stream": stream + "-b", "lagCount": "1", "consumerGroup": "x"},
            auth,
        ),
    ]
    values = [(await s.sample()).value for s in scalers]
    assert values == [5.0, 2.0, 0.0]
    assert len(connections) == 1
    assert connections.leases(scalers[0].endpoint) == 3
    assert await connections_of(admin, acl_user) == 1

    elsewhere = SharedClients()
    other = make(redis_server.port, elsewhere, {"stream": stream}, auth)
    await other.sample()
    assert await connections_of(admin, acl_user) == 2
    await other.aclose()
    assert len(elsewhere) == 0

    for scaler in scalers[:2]:
        await scaler.aclose()
    await scalers[2].sample()  # still served by the same, still open, connection
    assert await connections_of(admin, acl_user) == 1
    await scalers[2].aclose()
    assert len(connections) == 0

    async def none_left() -> bool:
        return await connections_of(admin, acl_user) == 0

    await eventually(none_left)


# ---------------------------------------------------------------------------------------------
# Unreachable, silent, stopped


async def test_unreachable_redis_is_unavailable_within_the_timeout(
    connections: SharedClients,
) -> None:
    """Nobody listens on the port: ScalerUnavailableError (transient), quickly."""
    port = free_port()
    scaler = make(port, connections, {"stream": "s"})
    started = time.monotonic()
    with pytest.raises(ScalerUnavailableError) as info:
        await sample_once(scaler)
    assert time.monotonic() - started < POLL_TIMEOUT
    assert info.value.transient
    assert str(info.value).startswith(
        f"trigger[0] (redis-streams): redis://{LOOPBACK}:{port}/0: unavailable: "
    )


async def test_silent_server_times_out(connections: SharedClients) -> None:
    """A server that accepts connections but never answers: the poll timeout bounds it."""
    with socket.create_server((LOOPBACK, 0)) as silent:
        port = silent.getsockname()[1]
        scaler = make(port, connections, {"stream": "s"}, timeout=0.5)
        started = time.monotonic()
        with pytest.raises(ScalerUnavailableError) as info:
            await sample_once(scaler)
        elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 2.0
    assert str(info.value).endswith(": no answer within 0.5s")


def start_redis(port: int, workdir: Path, *extra: str) -> ManagedProcess:
    """A redis-server of this module's own (the bench's is shared by every test)."""
    workdir.mkdir(parents=True, exist_ok=True)
    process = ManagedProcess(
        "redis-server",
        [
            versions.DEBIAN["redis"][0],
            "--bind",
            LOOPBACK,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--port",
            str(port),
            *extra,
        ],
        log_path=workdir / "redis.log",
    )
    wait_until(process, lambda: port_open(extra_port(extra) or port), timeout=30, what="listening")
    return process


def extra_port(extra: tuple[str, ...]) -> int | None:
    return int(extra[extra.index("--tls-port") + 1]) if "--tls-port" in extra else None


async def test_stopped_redis_is_unavailable_and_recovers(
    redis_server: Redis, connections: SharedClients, tmp_path: Path
) -> None:
    """A server that goes away under an open pooled connection: ScalerUnavailableError within
    the timeout; when it is back, the same scaler reads again without being rebuilt."""
    port = free_port()
    process = start_redis(port, tmp_path / "first")
    scaler = make(port, connections, {"stream": "s"})
    try:
        assert (await scaler.sample()).value == 0.0
        process.stop()
        started = time.monotonic()
        with pytest.raises(ScalerUnavailableError):
            await scaler.sample()
        assert time.monotonic() - started < POLL_TIMEOUT
        process = start_redis(port, tmp_path / "second")
        assert (await scaler.sample()).value == 0.0
    finally:
        await scaler.aclose()
        process.stop()


# ---------------------------------------------------------------------------------------------
# Passwords


def all_text(exc: BaseException) -> str:
    """Everything an exception can put in a log: messages and reprs of the whole chain."""
    return "".join(traceback.format_exception(exc)) + repr(exc) + repr(exc.__cause__)


async def test_password_authentication_and_no_password_in_any_text(
    redis_server: Redis,
    connections: SharedClients,
    admin: aioredis.Redis,
    stream: str,
    acl_user: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The right password reads; a wrong one is a non-transient ScalerQueryError; neither
    password appears in any exception, repr or log line."""
    caplog.set_level("DEBUG")
    await fill(admin, stream, 2)
    good = make(
        redis_server.port,
        connections,
        {"stream": stream},
        {"username": acl_user, "password": PASSWORD},
    )
    try:
        assert (await good.sample()).value == 2.0
        pool_repr = repr(connections._entries[good.endpoint].client.client.connection_pool)
        assert PASSWORD not in pool_repr
    finally:
        await good.aclose()

    wrong_password = PASSWORD + "-wrong"
    bad = make(
        redis_server.port,
        connections,
        {"stream": stream},
        {"username": acl_user, "password": wrong_password},
    )
    with pytest.raises(ScalerError) as info:
        await sample_once(bad)
    assert isinstance(info.value, ScalerQueryError)
    assert not info.value.transient
    assert "authentication failed" in str(info.value)
    text = all_text(info.value) + repr(bad) + repr(bad.config) + caplog.text
    assert PASSWORD not in text  # neither the right one nor (a prefix of it) the wrong one


async def test_acl_without_rights_is_a_query_error(
    redis_server: Redis,
    connections: SharedClients,
    admin: aioredis.Redis,
    unique_name: str,
) -> None:
    """A user that may not run XLEN: ScalerQueryError, "not permitted"."""
    user = unique_name + "-ping-only"
    await admin.execute_command("ACL", "SETUSER", user, "on", f">{PASSWORD}", "~*", "+ping")
    try:
        scaler = make(
            redis_server.port,
            connections,
            {"stream": "s"},
            {"username": user, "password": PASSWORD},
        )
        with pytest.raises(ScalerQueryError, match="not permitted") as info:
            await sample_once(scaler)
        assert PASSWORD not in all_text(info.value)
    finally:
        await admin.execute_command("ACL", "DELUSER", user)


# ---------------------------------------------------------------------------------------------
# TLS, with client certificates


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A TLS-only redis-server that requires a client certificate from its CA."""
    workdir = tmp_path_factory.mktemp("tls-redis")
    ca = TinyCA("redis-test-ca")
    ca_file, _ = ca.write(workdir, "ca")
    cert_file, key_file = ca.issue(LOOPBACK, hosts=(LOOPBACK,), server=True).write(workdir, "srv")
    client = ca.issue("scaler", client=True)
    port = free_port()
    process = start_redis(
        0,
        workdir,
        "--tls-port",
        str(port),
        "--tls-cert-file",
        str(cert_file),
        "--tls-key-file",
        str(key_file),
        "--tls-ca-cert-file",
        str(ca_file),
        "--tls-auth-clients",
        "yes",
    )
    try:
        yield {
            "port": port,
            "ca": ca.cert_pem.decode(),
            "cert": client.cert_pem.decode(),
            "key": client.key_pem.decode(),
        }
    finally:
        process.stop()


async def test_tls_with_ca_and_client_certificate(
    tls_redis: dict[str, Any], connections: SharedClients
) -> None:
    """enableTLS in metadata or tls: enable in auth params, with ca, cert and key."""
    material = {k: tls_redis[k] for k in ("ca", "cert", "key")}
    for metadata, auth in (({"enableTLS": "true"}, {}), ({}, {"tls": "enable"})):
        scaler = make(
            tls_redis["port"], connections, {"stream": "s", **metadata}, {**material, **auth}
        )
        assert (await sample_once(scaler)).value == 0.0


async def test_tls_unsafe_ssl_skips_server_verification(
    tls_redis: dict[str, Any], connections: SharedClients
) -> None:
    """unsafeSsl: no CA needed to trust the server (the client certificate is still sent)."""
    scaler = make(
        tls_redis["port"],
        connections,
        {"stream": "s", "enableTLS": "true", "unsafeSsl": "true"},
        {"cert": tls_redis["cert"], "key": tls_redis["key"]},
    )
    assert (await sample_once(scaler)).value == 0.0


@pytest.mark.parametrize(
    ("keys", "reason"),
    [
        pytest.param(("cert", "key"), "CERTIFICATE_VERIFY_FAILED", id="server-not-trusted"),
        # TLS 1.3 lets the server refuse the missing certificate after the handshake: the
        # client then sees the alert or, depending on timing, the reset that follows it.
        pytest.param(
            ("ca",), "CERTIFICATE_REQUIRED|Connection reset by peer", id="no-client-certificate"
        ),
    ],
)
async def test_tls_failures_are_unavailable(
    tls_redis: dict[str, Any], connections: SharedClients, keys: tuple[str, ...], reason: str
) -> None:
    """An untrusted server or a refused client: ScalerUnavailableError, no hang."""
    auth = {k: tls_redis[k] for k in keys}
    scaler = make(tls_redis["port"], connections, {"stream": "s", "enableTLS": "true"}, auth)
    with pytest.raises(ScalerUnavailableError, match=reason):
        await sample_once(scaler)
