"""redis-streams without a server: parameters, mode selection, the snapshot->sample function,
secrets kept out of text, error translation, and the shared-client pool it leases from."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from typing import Any

import pytest
import redis.exceptions
from cryptography.hazmat.primitives import serialization

from autoscale.errors import ConfigError, ScalerQueryError, ScalerUnavailableError
from autoscale.scalers import redis_streams
from autoscale.scalers.base import MetricSample, MetricType
from autoscale.scalers.connections import SharedClients, secret_digest
from autoscale.scalers.redis_streams import (
    GroupInfo,
    Mode,
    RedisStreamsConfig,
    RedisStreamsScaler,
    StreamSnapshot,
    entries_count,
    sample_from_snapshot,
)
from tests.testbed.pki import TinyCA

LABEL = "trigger[0] (redis-streams)"
BASE = {"address": "redis:6379", "stream": "jobs"}
PASSWORD = "pa55-Wörd-never-shown"


def scaler(
    metadata: dict[str, str],
    auth: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    warnings: list[str] | None = None,
    *,
    index: int = 0,
    name: str | None = None,
) -> RedisStreamsScaler:
    return RedisStreamsScaler.from_trigger(
        trigger_index=index,
        trigger_name=name,
        metadata=metadata,
        auth_params=auth or {},
        resolved_env=env or {},
        connections=SharedClients(),
        warnings=warnings,
    )


def config(
    metadata: dict[str, str], auth: dict[str, str] | None = None, env: dict[str, str] | None = None
) -> RedisStreamsConfig:
    return scaler(metadata, auth, env).config


def error(
    metadata: dict[str, str], auth: dict[str, str] | None = None, env: dict[str, str] | None = None
) -> str:
    with pytest.raises(ConfigError) as info:
        scaler(metadata, auth, env)
    message = str(info.value)
    assert message.startswith(f"{LABEL}: ")
    return message.removeprefix(f"{LABEL}: ")


def warnings_of(
    metadata: dict[str, str], auth: dict[str, str] | None = None, env: dict[str, str] | None = None
) -> list[str]:
    out: list[str] = []
    scaler(metadata, auth, env, out)
    assert all(w.startswith(f"{LABEL}: ") for w in out)
    return [w.removeprefix(f"{LABEL}: ") for w in out]


# ---------------------------------------------------------------------------------------------
# Parameters and modes


@pytest.mark.parametrize(
    ("metadata", "mode", "target"),
    [
        pytest.param({}, Mode.STREAM_LENGTH, 5, id="no-group-stream-length-default"),
        pytest.param({"streamLength": "50"}, Mode.STREAM_LENGTH, 50, id="stream-length"),
        pytest.param({"consumerGroup": "g"}, Mode.PENDING_ENTRIES, 5, id="group-pending-default"),
        pytest.param(
            {"consumerGroup": "g", "pendingEntriesCount": "10"},
            Mode.PENDING_ENTRIES,
            10,
            id="pending",
        ),
        pytest.param({"consumerGroup": "g", "lagCount": "7"}, Mode.LAG, 7, id="lag"),
        pytest.param(
            {"consumerGroup": "g", "lagCount": "7", "pendingEntriesCount": "3"},
            Mode.LAG,
            7,
            id="lag-wins-over-pending",
        ),
        pytest.param(
            {"consumerGroup": "g", "lagCount": "0", "pendingEntriesCount": "3"},
            Mode.PENDING_ENTRIES,
            3,
            id="lag-zero-means-unset",
        ),
        pytest.param({"lagCount": "7"}, Mode.STREAM_LENGTH, 5, id="lag-without-group-ignored"),
        pytest.param(
            {"pendingEntriesCount": "9"}, Mode.STREAM_LENGTH, 5, id="pending-without-group-ignored"
        ),
        pytest.param(
            {"consumerGroup": "g", "streamLength": "9"},
            Mode.PENDING_ENTRIES,
            5,
            id="length-with-group-ignored",
        ),
    ],
)
def test_mode_and_target_as_keda_picks_them(
    metadata: dict[str, str], mode: Mode, target: int
) -> None:
    """No group: length; group + non-zero lagCount: lag; group otherwise: pending entries."""
    parsed = config({**BASE, **metadata})
    assert parsed.mode is mode
    assert parsed.target == target


@pytest.mark.parametrize(
    ("metadata", "auth", "env", "attr", "expected"),
    [
        pytest.param({}, {}, {}, "host_port", ("redis", 6379), id="address"),
        pytest.param({"address": "[::1]:7000"}, {}, {}, "host_port", ("::1", 7000), id="ipv6"),
        pytest.param(
            {"address": "", "host": "h", "port": "6380"},
            {},
            {},
            "host_port",
            ("h", 6380),
            id="host-port",
        ),
        pytest.param(
            {"address": "", "addressFromEnv": "A"},
            {},
            {"A": "e:1"},
            "host_port",
            ("e", 1),
            id="address-from-env",
        ),
        pytest.param(
            {"address": ""}, {"address": "a:2"}, {}, "host_port", ("a", 2), id="address-from-auth"
        ),
        pytest.param(
            {"address": "", "hostFromEnv": "H", "portFromEnv": "P"},
            {},
            {"H": "h", "P": "3"},
            "host_port",
            ("h", 3),
            id="host-port-from-env",
        ),
        pytest.param(
            {"address": ""},
            {"host": "h", "port": "4"},
            {},
            "host_port",
            ("h", 4),
            id="host-port-from-auth",
        ),
        pytest.param(
            {"host": "ignored", "port": "1"},
            {},
            {},
            "host_port",
            ("redis", 6379),
            id="address-wins",
        ),
        pytest.param({}, {}, {}, "database_index", 0, id="db-default"),
        pytest.param({"databaseIndex": "3"}, {}, {}, "database_index", 3, id="db"),
        pytest.param({}, {}, {}, "activation_lag_count", 0, id="activation-default"),
        pytest.param(
            {"activationLagCount": "4"}, {}, {}, "activation_lag_count", 4, id="activation"
        ),
        pytest.param({"username": "u"}, {}, {}, "username", "u", id="username-metadata"),
        pytest.param(
            {"usernameFromEnv": "U"}, {}, {"U": "eu"}, "username", "eu", id="username-env"
        ),
        pytest.param({}, {"username": "au"}, {}, "username", "au", id="username-auth"),
        pytest.param({}, {"password": PASSWORD}, {}, "password", PASSWORD, id="password-auth"),
        pytest.param(
            {"passwordFromEnv": "P"},
            {"password": "x"},
            {"P": PASSWORD},
            "password",
            PASSWORD,
            id="password-env-before-auth",
        ),
        pytest.param(
            {"password": PASSWORD}, {}, {}, "password", None, id="password-metadata-ignored"
        ),
        pytest.param({}, {}, {}, "use_tls", False, id="tls-default-off"),
        pytest.param({"enableTLS": "true"}, {}, {}, "use_tls", True, id="enable-tls"),
        pytest.param({"enableTLS": "false"}, {}, {}, "use_tls", False, id="enable-tls-false"),
        pytest.param({}, {"tls": "enable"}, {}, "use_tls", True, id="tls-auth-enable"),
        pytest.param({}, {"tls": "disable"}, {}, "use_tls", False, id="tls-auth-disable"),
        pytest.param({"unsafeSsl": "true"}, {}, {}, "unsafe_ssl", True, id="unsafe-ssl"),
    ],
)
def test_parameters(
    metadata: dict[str, str],
    auth: dict[str, str],
    env: dict[str, str],
    attr: str,
    expected: object,
) -> None:
    """Each parameter, from each source KEDA reads it from."""
    assert getattr(config({**BASE, **metadata}, auth, env), attr) == expected


@pytest.mark.parametrize(
    ("metadata", "auth", "message"),
    [
        pytest.param(
            {"stream": ""},
            {},
            'missing required parameter "stream" (looked in metadata)',
            id="missing-stream",
        ),
        pytest.param(
            {"address": ""},
            {},
            'missing parameter "address" (host:port), or "host" and "port"',
            id="missing-address",
        ),
        pytest.param(
            {"address": "", "host": "h"},
            {},
            'parameter "host" needs "port" too',
            id="host-without-port",
        ),
        pytest.param(
            {"address": "", "port": "1"},
            {},
            'parameter "port" needs "host" too',
            id="port-without-host",
        ),
        pytest.param(
            {"address": "redis"},
            {},
            'parameter "address" value "redis" is invalid: expected host:port',
            id="address-without-port",
        ),
        pytest.param(
            {"address": "redis:0"},
            {},
            'value "redis:0" is invalid: expected host:port',
            id="address-port-zero",
        ),
        pytest.param(
            {"address": "::1:6379"}, {}, "write an IPv6 address in brackets", id="address-ipv6-bare"
        ),
        pytest.param(
            {"address": ""},
            {"address": "nope"},
            'parameter "address" is invalid (value not shown)',
            id="auth-address-hidden",
        ),
        pytest.param(
            {"address": "", "host": "h", "port": "70000"},
            {},
            'parameter "port" must be between 1 and 65535',
            id="port-range",
        ),
        pytest.param(
            {"address": "", "host": "h", "port": "http"},
            {},
            'parameter "port" value "http" is not an integer',
            id="port-word",
        ),
        pytest.param(
            {"consumerGroup": "g", "pendingEntriesCount": "five"},
            {},
            'parameter "pendingEntriesCount" value "five" is not an integer',
            id="pending-word",
        ),
        pytest.param(
            {"consumerGroup": "g", "pendingEntriesCount": "0"},
            {},
            'parameter "pendingEntriesCount" must be greater than 0',
            id="pending-zero",
        ),
        pytest.param(
            {"streamLength": "-1"},
            {},
            'parameter "streamLength" must be greater than 0',
            id="length-negative",
        ),
        pytest.param(
            {"consumerGroup": "g", "lagCount": "-2"},
            {},
            'parameter "lagCount" must be greater than 0',
            id="lag-negative",
        ),
        pytest.param(
            {"lagCount": "x"}, {}, 'parameter "lagCount" value "x" is not an integer', id="lag-word"
        ),
        pytest.param(
            {"activationLagCount": "1.5"},
            {},
            'parameter "activationLagCount" value "1.5" is not an integer',
            id="activation-float",
        ),
        pytest.param(
            {"databaseIndex": "-1"},
            {},
            'parameter "databaseIndex" must not be negative',
            id="db-negative",
        ),
        pytest.param(
            {"databaseIndex": "junk"},
            {},
            'parameter "databaseIndex" value "junk" is not an integer',
            id="db-word",
        ),
        pytest.param(
            {"enableTLS": "no"},
            {},
            'parameter "enableTLS" value "no" is not a boolean (true or false)',
            id="enable-tls-word",
        ),
        pytest.param(
            {"unsafeSsl": "yes"},
            {},
            'parameter "unsafeSsl" value "yes" is not a boolean',
            id="unsafe-word",
        ),
        pytest.param(
            {},
            {"tls": "on"},
            'parameter "tls" must be one of "enable", "disable" (value not shown)',
            id="tls-auth-word",
        ),
        pytest.param(
            {"enableTLS": "true"},
            {"tls": "enable"},
            'TLS is set twice, by "enableTLS" in metadata and "tls" in auth params; keep one',
            id="tls-twice",
        ),
        pytest.param(
            {"enableTLS": "true"},
            {"cert": "-----BEGIN CERTIFICATE-----"},
            'auth param "cert" needs "key" too',
            id="cert-without-key",
        ),
        pytest.param(
            {},
            {"key": "-----BEGIN PRIVATE KEY-----"},
            'auth param "key" needs "cert" too',
            id="key-without-cert",
        ),
        pytest.param(
            {}, {"ca": "not pem"}, 'parameter "ca" is invalid (value not shown)', id="ca-not-pem"
        ),
        pytest.param(
            {"enableTLS": "true"},
            {"ca": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
            'auth param "ca" cannot be loaded as TLS material',
            id="ca-bad-pem",
        ),
    ],
)
def test_errors_name_the_field(
    metadata: dict[str, str], auth: dict[str, str], message: str
) -> None:
    """Each bad parameter gives a ConfigError with a fixed wording, prefixed by the trigger."""
    assert message in error({**BASE, **metadata}, auth)


def test_every_error_is_reported_at_once() -> None:
    """Field errors are collected into one message."""
    message = error({"address": "redis", "consumerGroup": "g", "pendingEntriesCount": "x"})
    assert message == (
        'parameter "address" value "redis" is invalid: expected host:port; '
        'missing required parameter "stream" (looked in metadata); '
        'parameter "pendingEntriesCount" value "x" is not an integer'
    )


def test_error_names_trigger_by_index_and_name() -> None:
    """The label carries the index and the trigger's name."""
    with pytest.raises(ConfigError, match=r'^trigger\[3\] "orders" \(redis-streams\): missing'):
        scaler({"address": "r:1"}, index=3, name="orders")


@pytest.mark.parametrize(
    ("metadata", "auth", "expected"),
    [
        pytest.param(
            {"lagCount": "3"},
            {},
            [
                'parameter "lagCount" is ignored without "consumerGroup": '
                "the trigger scales on the stream length"
            ],
            id="lag-without-group",
        ),
        pytest.param(
            {"pendingEntriesCount": "3"},
            {},
            [
                'parameter "pendingEntriesCount" is ignored without "consumerGroup": '
                "the trigger scales on the stream length"
            ],
            id="pending-without-group",
        ),
        pytest.param(
            {"consumerGroup": "g", "streamLength": "3"},
            {},
            ['parameter "streamLength" is ignored when "consumerGroup" is set'],
            id="length-with-group",
        ),
        pytest.param(
            {"consumerGroup": "g", "lagCount": "2", "pendingEntriesCount": "3"},
            {},
            ['parameter "pendingEntriesCount" is ignored when "lagCount" is set'],
            id="pending-in-lag-mode",
        ),
        pytest.param(
            {"consumerGroup": "g", "lagCount": "0"},
            {},
            ['parameter "lagCount" is 0, which means unset: the trigger scales on pending'],
            id="lag-zero",
        ),
        pytest.param(
            {"host": "h", "port": "1"},
            {},
            ['parameters "host" and "port" are ignored when "address" is set'],
            id="host-port",
        ),
        pytest.param(
            {"unsafeSsl": "true"},
            {"ca": "-----BEGIN x", "keyPassword": "k"},
            ['TLS is off: "ca", "keyPassword", "unsafeSsl" ignored'],
            id="tls-off",
        ),
        pytest.param(
            {"activationLagCount": "-1"},
            {},
            ['parameter "activationLagCount" is negative: the trigger is always active'],
            id="activation-negative",
        ),
        pytest.param(
            {"password": PASSWORD},
            {},
            [
                'parameter "password" is ignored in metadata; it is read from env via '
                '"passwordFromEnv", auth params'
            ],
            id="plaintext-password-metadata",
        ),
        pytest.param(
            {"passwordFromEnv": "UNSET"},
            {},
            ['env var "UNSET" named by "passwordFromEnv" is not set'],
            id="password-env-unset",
        ),
        pytest.param(
            {"addresses": "r:1"},
            {},
            ['unknown parameter "addresses" (did you mean "address"?)'],
            id="unknown",
        ),
        pytest.param({}, {}, [], id="none"),
    ],
)
def test_warnings(metadata: dict[str, str], auth: dict[str, str], expected: list[str]) -> None:
    """What KEDA silently ignores is accepted, with a warning saying so."""
    assert warnings_of({**BASE, **metadata}, auth) == expected


def test_metric_name_is_kedas() -> None:
    """s{index}-redis-streams-{stream}, normalised as KEDA does."""
    assert scaler({**BASE, "stream": "orders.v1/eu:1%"}, index=2).metric_name == (
        "s2-redis-streams-orders-v1-eu-1-"
    )


# ---------------------------------------------------------------------------------------------
# Secrets


def test_secrets_stay_out_of_reprs_and_keys() -> None:
    """Password and key password appear in no repr, str or client key."""
    s = scaler(
        {**BASE, "enableTLS": "true", "unsafeSsl": "true"},
        {"password": PASSWORD, "keyPassword": "key-" + PASSWORD},
    )
    texts = [repr(s), repr(s.config), repr(s.endpoint), str(s.endpoint)]
    assert s.config.password == PASSWORD
    for text in texts:
        assert PASSWORD not in text
    assert s.endpoint.password_digest == secret_digest(PASSWORD)
    assert s.endpoint.password_digest != hashlib.sha256(PASSWORD.encode()).hexdigest()
    assert str(s.endpoint) == "rediss://redis:6379/0"


def test_secret_values_from_auth_are_never_quoted() -> None:
    """A bad value from auth params or env is named, never shown."""
    message = error({**BASE, "portFromEnv": "P", "address": "", "host": "h"}, env={"P": PASSWORD})
    assert 'parameter "port" is not an integer (value not shown)' in message
    assert PASSWORD not in message
    message = error({**BASE, "enableTLS": "true"}, {"ca": f"-----BEGIN {PASSWORD}"})
    assert PASSWORD not in message


def test_endpoints_share_exactly_when_everything_matches() -> None:
    """Equal address, db, user, password and TLS material: one key; any difference: another."""
    one = scaler(BASE, {"password": PASSWORD}).endpoint
    assert one == scaler({**BASE, "stream": "other"}, {"password": PASSWORD}).endpoint
    assert one == scaler({**BASE, "consumerGroup": "g"}, {"password": PASSWORD}).endpoint
    differing = [
        scaler(BASE, {"password": PASSWORD + "!"}),
        scaler(BASE),
        scaler({**BASE, "databaseIndex": "1"}, {"password": PASSWORD}),
        scaler({**BASE, "username": "u"}, {"password": PASSWORD}),
        scaler({**BASE, "address": "redis:6380"}, {"password": PASSWORD}),
        scaler({**BASE, "enableTLS": "true"}, {"password": PASSWORD}),
        scaler({**BASE, "enableTLS": "true", "unsafeSsl": "true"}, {"password": PASSWORD}),
    ]
    keys = {one, *(s.endpoint for s in differing)}
    assert len(keys) == 1 + len(differing)


# ---------------------------------------------------------------------------------------------
# Snapshot -> sample (pure)

PENDING = config({**BASE, "consumerGroup": "g"})
LENGTH = config(BASE)
LAG = config({**BASE, "consumerGroup": "g", "lagCount": "2"})


@pytest.mark.parametrize(
    ("cfg", "snapshot", "expected"),
    [
        pytest.param(LENGTH, StreamSnapshot(length=7), 7, id="length"),
        pytest.param(LENGTH, StreamSnapshot(length=0), 0, id="length-missing-stream"),
        pytest.param(PENDING, StreamSnapshot(pending=3), 3, id="pending"),
        pytest.param(PENDING, StreamSnapshot(pending=0), 0, id="pending-zero"),
        pytest.param(
            LAG, StreamSnapshot(length=9, groups=(GroupInfo(name=b"g", lag=4),)), 4, id="lag"
        ),
        pytest.param(
            LAG, StreamSnapshot(length=9, groups=(GroupInfo(name=b"g", lag=0),)), 0, id="lag-zero"
        ),
        pytest.param(
            LAG,
            StreamSnapshot(
                length=9, groups=(GroupInfo(name=b"other", lag=1), GroupInfo(name=b"g", lag=2))
            ),
            2,
            id="lag-other-groups-ignored",
        ),
        pytest.param(
            LAG,
            StreamSnapshot(length=9, groups=(GroupInfo(name=b"g", lag=None),)),
            9,
            id="lag-null-falls-back-to-length",
        ),
        pytest.param(
            LAG,
            StreamSnapshot(length=9, groups=(GroupInfo(name=b"other", lag=1),)),
            9,
            id="lag-missing-group-counts-every-entry",
        ),
        pytest.param(LAG, StreamSnapshot(length=9, groups=()), 9, id="lag-no-groups"),
        pytest.param(LAG, StreamSnapshot(length=0, groups=None), 0, id="lag-missing-stream"),
    ],
)
def test_entries_count(cfg: RedisStreamsConfig, snapshot: StreamSnapshot, expected: int) -> None:
    """Each mode reads its number from the snapshot; missing keys follow KEDA."""
    assert entries_count(snapshot, cfg) == expected


@pytest.mark.parametrize(
    ("cfg", "snapshot", "message"),
    [
        pytest.param(
            PENDING,
            StreamSnapshot(no_group=True),
            'stream "jobs" or its consumer group "g" does not exist (NOGROUP)',
            id="pending-nogroup",
        ),
        pytest.param(
            LAG,
            StreamSnapshot(length=1, groups=(GroupInfo(name=b"g", lag=None, has_lag=False),)),
            '"lagCount" needs Redis 7 or later: XINFO GROUPS reports no lag',
            id="redis-6",
        ),
    ],
)
def test_entries_count_refuses_what_cannot_be_scaled_on(
    cfg: RedisStreamsConfig, snapshot: StreamSnapshot, message: str
) -> None:
    """A missing group in pending mode, or a server without lag, is a ScalerQueryError."""
    with pytest.raises(ScalerQueryError) as info:
        entries_count(snapshot, cfg)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("cfg", "snapshot"),
    [
        pytest.param(LENGTH, StreamSnapshot(pending=1), id="length-without-xlen"),
        pytest.param(PENDING, StreamSnapshot(length=1), id="pending-without-xpending"),
        pytest.param(LAG, StreamSnapshot(groups=()), id="lag-without-xlen"),
    ],
)
def test_a_snapshot_of_the_wrong_mode_is_a_bug(
    cfg: RedisStreamsConfig, snapshot: StreamSnapshot
) -> None:
    """A snapshot lacking the reply its mode needs is a programming error, not a poll error."""
    with pytest.raises(ValueError, match="the snapshot lacks"):
        entries_count(snapshot, cfg)


def test_sample_carries_target_activation_and_type() -> None:
    """Value, the mode's target, activationLagCount and the trigger's metric type."""
    cfg = config({**BASE, "consumerGroup": "g", "lagCount": "20", "activationLagCount": "3"})
    snapshot = StreamSnapshot(length=50, groups=(GroupInfo(name=b"g", lag=42),))
    sample = sample_from_snapshot(snapshot, cfg, name="s1-x", metric_type=MetricType.VALUE)
    assert sample == MetricSample(
        name="s1-x", value=42.0, target=20.0, activation_target=3.0, metric_type=MetricType.VALUE
    )


# ---------------------------------------------------------------------------------------------
# Error translation at the boundary


@pytest.mark.parametrize(
    ("raised", "kind", "text"),
    [
        pytest.param(
            redis.exceptions.ConnectionError(f"Error 111 connecting. {PASSWORD}"),
            ScalerUnavailableError,
            "unavailable: Error 111 connecting. ***",
            id="connection",
        ),
        pytest.param(
            redis.exceptions.TimeoutError("Timeout reading"),
            ScalerUnavailableError,
            "unavailable: Timeout reading",
            id="redis-timeout",
        ),
        pytest.param(
            TimeoutError(), ScalerUnavailableError, "no answer within 5s", id="poll-timeout"
        ),
        pytest.param(
            ConnectionResetError(104, "reset"),
            ScalerUnavailableError,
            "unavailable: [Errno 104] reset",
            id="os-error",
        ),
        pytest.param(
            redis.exceptions.BusyLoadingError("loading"),
            ScalerUnavailableError,
            "unavailable: loading",
            id="loading",
        ),
        pytest.param(
            redis.exceptions.AuthenticationError("invalid username-password pair"),
            ScalerQueryError,
            "authentication failed: invalid username-password pair",
            id="auth",
        ),
        pytest.param(
            redis.exceptions.NoPermissionError("no permissions to run 'xlen'"),
            ScalerQueryError,
            "not permitted: no permissions to run 'xlen'",
            id="acl",
        ),
        pytest.param(
            redis.exceptions.ResponseError("WRONGTYPE Operation against a key"),
            ScalerQueryError,
            "WRONGTYPE Operation against a key",
            id="wrongtype",
        ),
        pytest.param(
            ScalerQueryError("from the pure function"),
            ScalerQueryError,
            "from the pure function",
            id="own-error-gets-context",
        ),
    ],
)
def test_library_errors_become_ours(raised: Exception, kind: type[Exception], text: str) -> None:
    """Connection trouble is transient, answers we cannot use are not; the message names the
    trigger and server, and the password is scrubbed from whatever the library said."""
    s = scaler(BASE, {"password": PASSWORD})
    with pytest.raises(kind) as info, s._translate_errors():
        raise raised
    assert type(info.value) is kind
    assert str(info.value) == f"{LABEL}: redis://redis:6379/0: {text}"
    assert PASSWORD not in str(info.value)


# ---------------------------------------------------------------------------------------------
# TLS material


@pytest.fixture(scope="module")
def tls_material() -> dict[str, str]:
    ca = TinyCA("unit-ca")
    pair = ca.issue("client", client=True)
    key = serialization.load_pem_private_key(pair.key_pem, password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"key-" + PASSWORD.encode()),
    )
    return {
        "ca": ca.cert_pem.decode(),
        "cert": pair.cert_pem.decode(),
        "key": pair.key_pem.decode(),
        "encrypted_key": encrypted.decode(),
    }


def test_tls_material_loads(tls_material: dict[str, str]) -> None:
    """ca, cert and key (plain, or encrypted with keyPassword) build a TLS client context."""
    plain = {k: tls_material[k] for k in ("ca", "cert", "key")}
    encrypted = {
        "ca": tls_material["ca"],
        "Cert": tls_material["cert"],  # KEDA's other spelling
        "key": tls_material["encrypted_key"],
        "keyPassword": "key-" + PASSWORD,
    }
    for auth in (plain, encrypted):
        cfg = config({**BASE, "enableTLS": "true"}, auth)
        context = redis_streams._tls_context(cfg)
        assert context.verify_mode is ssl.CERT_REQUIRED
        assert context.check_hostname is True
        assert context.minimum_version is ssl.TLSVersion.TLSv1_2


def test_unsafe_ssl_skips_verification() -> None:
    """unsafeSsl: no chain or hostname check, as KEDA's InsecureSkipVerify."""
    context = redis_streams._tls_context(config({**BASE, "enableTLS": "true", "unsafeSsl": "1"}))
    assert context.verify_mode is ssl.CERT_NONE
    assert context.check_hostname is False


@pytest.mark.parametrize(
    "auth",
    [
        pytest.param({"keyPassword": "wrong"}, id="wrong-key-password"),
        pytest.param({}, id="missing-key-password"),  # must not prompt on a terminal
    ],
)
def test_bad_key_password_is_a_config_error(
    tls_material: dict[str, str], auth: dict[str, str]
) -> None:
    """An encrypted key that does not open is reported at build time, naming the fields only."""
    auth = {"cert": tls_material["cert"], "key": tls_material["encrypted_key"], **auth}
    message = error({**BASE, "tls": ""}, {**auth, "tls": "enable"})
    assert message.startswith(
        'auth param "ca", "cert", "key" or "keyPassword" cannot be loaded as TLS material'
    )
    assert "wrong" not in message
    assert "PRIVATE KEY" not in message


def test_mismatched_cert_and_key(tls_material: dict[str, str]) -> None:
    """A key that does not belong to the certificate is refused."""
    other = TinyCA("other").issue("x").key_pem.decode()
    message = error({**BASE, "enableTLS": "true"}, {"cert": tls_material["cert"], "key": other})
    assert "cannot be loaded as TLS material" in message


# ---------------------------------------------------------------------------------------------
# SharedClients: the pool the scaler leases from


class FakeClient:
    def __init__(self, n: int) -> None:
        self.n = n
        self.closed = False


class Opener:
    """Counts opens and closes; optionally slow or failing."""

    def __init__(self, *, fail: int = 0, delay: float = 0.0) -> None:
        self.opened: list[FakeClient] = []
        self.fail = fail
        self.delay = delay

    async def open(self) -> FakeClient:
        await asyncio.sleep(self.delay)
        if self.fail:
            self.fail -= 1
            raise ConnectionRefusedError("no")
        client = FakeClient(len(self.opened))
        self.opened.append(client)
        return client

    @staticmethod
    async def close(client: FakeClient) -> None:
        client.closed = True


async def test_one_client_per_key_closed_by_the_last_release() -> None:
    """Leases of one key share one client; it closes when the last lease goes, not before."""
    pool, opener = SharedClients(), Opener()
    a = await pool.acquire("k", opener.open, opener.close)
    b = await pool.acquire("k", opener.open, opener.close)
    c = await pool.acquire("other", opener.open, opener.close)
    assert a.client is b.client is opener.opened[0]
    assert c.client is opener.opened[1]
    assert (len(pool), pool.leases("k"), pool.leases("other")) == (2, 2, 1)
    await a.release()
    await a.release()  # idempotent: does not take b's share
    assert pool.leases("k") == 1
    assert not opener.opened[0].closed
    await b.release()
    assert opener.opened[0].closed
    assert (len(pool), pool.leases("k")) == (1, 0)
    with pytest.raises(RuntimeError, match="released"):
        _ = a.client
    again = await pool.acquire("k", opener.open, opener.close)
    assert again.client is opener.opened[2]  # a fresh client after the old one closed


async def test_concurrent_first_acquires_open_once() -> None:
    """Ten scalers polling at once for a new endpoint: one open."""
    pool, opener = SharedClients(), Opener(delay=0.01)
    leases = await asyncio.gather(
        *(pool.acquire("k", opener.open, opener.close) for _ in range(10))
    )
    assert len(opener.opened) == 1
    assert {id(lease.client) for lease in leases} == {id(opener.opened[0])}
    assert pool.leases("k") == 10


async def test_failed_open_keeps_nothing_and_is_retried() -> None:
    """An open that raises propagates; the next acquire opens again."""
    pool, opener = SharedClients(), Opener(fail=1)
    with pytest.raises(ConnectionRefusedError):
        await pool.acquire("k", opener.open, opener.close)
    assert len(pool) == 0
    lease = await pool.acquire("k", opener.open, opener.close)
    assert lease.client is opener.opened[0]


async def test_waiters_retry_after_a_failed_open() -> None:
    """Those waiting on a failed open try again themselves."""
    pool, opener = SharedClients(), Opener(fail=1, delay=0.01)
    results = await asyncio.gather(
        *(pool.acquire("k", opener.open, opener.close) for _ in range(3)), return_exceptions=True
    )
    assert sum(isinstance(r, ConnectionRefusedError) for r in results) == 1
    assert len(opener.opened) == 1
    assert pool.leases("k") == 2


async def test_aclose_closes_everything() -> None:
    """Shutdown closes leased clients too; later releases and acquires behave."""
    pool, opener = SharedClients(), Opener()
    lease = await pool.acquire("k", opener.open, opener.close)
    await pool.aclose()
    assert opener.opened[0].closed
    assert pool.closed
    await lease.release()  # no error
    with pytest.raises(RuntimeError, match="closed"):
        await pool.acquire("k", opener.open, opener.close)


async def test_close_errors_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """A client that fails to close does not break the scaler releasing it."""

    async def broken_close(client: Any) -> None:
        raise OSError(f"close failed {PASSWORD}")

    pool, opener = SharedClients(), Opener()
    lease = await pool.acquire("k", opener.open, broken_close)
    await lease.release()
    assert len(pool) == 0
    assert "closing shared client 'k' failed: OSError" in caplog.text
    assert PASSWORD not in caplog.text


def test_secret_digest() -> None:
    """Keyed per process: stable within it, unlike a plain hash, None for None."""
    assert secret_digest(None) is None
    assert secret_digest(PASSWORD) == secret_digest(PASSWORD.encode())
    assert secret_digest(PASSWORD) != secret_digest(PASSWORD + "x")
    assert PASSWORD not in str(secret_digest(PASSWORD))


async def test_scaler_aclose_is_idempotent_and_leases_lazily() -> None:
    """Building leases nothing; aclose() before any poll, or twice, is fine."""
    s = scaler(BASE)
    assert len(s._connections) == 0
    await s.aclose()
    await s.aclose()
