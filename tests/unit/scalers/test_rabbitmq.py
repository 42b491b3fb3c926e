"""rabbitmq without a broker: parameters and KEDA's rules, host URLs, metric names, the
snapshot->sample function of every mode, secrets kept out of text, and error translation."""

from __future__ import annotations

import hashlib
import math
import ssl
import urllib.parse
from datetime import timedelta
from typing import Any

import aiohttp
import aiormq.exceptions
import pytest
from cryptography.hazmat.primitives import serialization

from autoscale.errors import ConfigError, ScalerQueryError, ScalerUnavailableError
from autoscale.scalers import rabbitmq
from autoscale.scalers.base import MetricSample, MetricType
from autoscale.scalers.connections import SharedClients, secret_digest
from autoscale.scalers.rabbitmq import (
    BrokerEndpoint,
    HostURL,
    ManagementEndpoint,
    Mode,
    Operation,
    Protocol,
    QueueSnapshot,
    QueueStats,
    RabbitMQConfig,
    RabbitMQScaler,
    Reading,
    parse_host,
    queue_reading,
    sample_from_snapshot,
    stats_from_json,
)
from tests.testbed.pki import TinyCA

LABEL = "trigger[0] (rabbitmq)"
PASSWORD = "pa55:Wörd@/never-shown"
QUOTED = urllib.parse.quote(PASSWORD, safe="")  # as it must be written inside a URL
AMQP = "amqp://user:secret@rabbit:5672/vhost"
HTTP = "http://user:secret@rabbit:15672/vhost"
BASE = {"queueName": "jobs"}


def scaler(
    metadata: dict[str, str],
    auth: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    warnings: list[str] | None = None,
    *,
    index: int = 0,
    name: str | None = None,
) -> RabbitMQScaler:
    return RabbitMQScaler.from_trigger(
        trigger_index=index,
        trigger_name=name,
        metadata=metadata,
        auth_params=auth or {},
        resolved_env=env or {},
        connections=SharedClients(),
        warnings=warnings,
    )


def amqp(metadata: dict[str, str] | None = None, auth: dict[str, str] | None = None) -> Any:
    """A trigger with an AMQP host from auth params (the usual place: it holds credentials)."""
    return {**BASE, **(metadata or {})}, {"host": AMQP, **(auth or {})}


def http(metadata: dict[str, str] | None = None, auth: dict[str, str] | None = None) -> Any:
    return {**BASE, **(metadata or {})}, {"host": HTTP, **(auth or {})}


def config(
    metadata: dict[str, str], auth: dict[str, str] | None = None, env: dict[str, str] | None = None
) -> RabbitMQConfig:
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
# Modes and targets


@pytest.mark.parametrize(
    ("trigger", "mode", "target"),
    [
        pytest.param(amqp(), Mode.QUEUE_LENGTH, 20.0, id="nothing-set-queue-length-20"),
        pytest.param(amqp({"queueLength": "5"}), Mode.QUEUE_LENGTH, 5.0, id="deprecated"),
        pytest.param(
            amqp({"mode": "QueueLength", "value": "7.5"}), Mode.QUEUE_LENGTH, 7.5, id="length"
        ),
        pytest.param(
            http({"mode": "MessageRate", "value": "100"}), Mode.MESSAGE_RATE, 100.0, id="rate"
        ),
        pytest.param(
            http({"mode": "DeliverGetRate", "value": "3"}), Mode.DELIVER_GET_RATE, 3.0, id="dg"
        ),
        pytest.param(
            http({"mode": "PublishedToDeliveredRatio", "value": "1.1"}),
            Mode.PUBLISHED_TO_DELIVERED_RATIO,
            1.1,
            id="ratio",
        ),
        pytest.param(
            http({"mode": "ExpectedQueueConsumptionTime", "value": "30"}),
            Mode.EXPECTED_QUEUE_CONSUMPTION_TIME,
            30.0,
            id="eta",
        ),
        pytest.param(amqp({"value": "0"}), Mode.QUEUE_LENGTH, 20.0, id="value-0-means-unset"),
        pytest.param(amqp({"queueLength": "0"}), Mode.QUEUE_LENGTH, 20.0, id="length-0-unset"),
        pytest.param(
            amqp({"queueLength": "0", "mode": "QueueLength", "value": "3"}),
            Mode.QUEUE_LENGTH,
            3.0,
            id="length-0-does-not-conflict",
        ),
        pytest.param(
            amqp({"queueLength": "4", "value": "0"}),
            Mode.QUEUE_LENGTH,
            4.0,
            id="value-0-does-not-conflict",
        ),
    ],
)
def test_mode_and_target_as_keda_picks_them(
    trigger: tuple[dict[str, str], dict[str, str]], mode: Mode, target: float
) -> None:
    """mode + value; else the deprecated queueLength; else QueueLength 20. A 0 is unset."""
    parsed = config(*trigger)
    assert parsed.mode_in_use is mode
    assert parsed.target == target


# ---------------------------------------------------------------------------------------------
# Parameters, from where KEDA reads them


@pytest.mark.parametrize(
    ("metadata", "auth", "env", "attr", "expected"),
    [
        pytest.param({"host": AMQP}, {}, {}, "protocol_in_use", Protocol.AMQP, id="host-metadata"),
        pytest.param({}, {"host": HTTP}, {}, "protocol_in_use", Protocol.HTTP, id="host-auth"),
        pytest.param(
            {"hostFromEnv": "H"}, {}, {"H": HTTP}, "protocol_in_use", Protocol.HTTP, id="host-env"
        ),
        pytest.param(
            {"host": "amqp://m:1/a"}, {"host": HTTP}, {}, "vhost", "a", id="host-metadata-first"
        ),
        pytest.param(
            {"hostFromEnv": "H"},
            {"host": AMQP},
            {"H": HTTP},
            "vhost",
            "vhost",
            id="auth-before-env",
        ),
        pytest.param({}, {"host": AMQP}, {}, "protocol", Protocol.AUTO, id="protocol-default"),
        pytest.param(
            {"protocol": "amqp"}, {"host": AMQP}, {}, "protocol", Protocol.AMQP, id="protocol"
        ),
        pytest.param(
            {}, {"host": HTTP, "protocol": "http"}, {}, "protocol", Protocol.HTTP, id="proto-auth"
        ),
        pytest.param({}, {"host": AMQP}, {}, "vhost", "vhost", id="vhost-from-url"),
        pytest.param({"vhostName": "other"}, {"host": AMQP}, {}, "vhost", "other", id="vhost-name"),
        pytest.param(
            {}, {"host": HTTP, "vhostName": "v2"}, {}, "vhost", "v2", id="vhost-name-auth"
        ),
        pytest.param(
            {}, {"host": AMQP}, {}, "credentials", ("user", "secret"), id="credentials-from-url"
        ),
        pytest.param(
            {},
            {"host": AMQP, "username": "u2", "password": PASSWORD},
            {},
            "credentials",
            ("u2", PASSWORD),
            id="auth-credentials-replace-url-ones",
        ),
        pytest.param(
            {"usernameFromEnv": "U", "passwordFromEnv": "P"},
            {"host": AMQP},
            {"U": "eu", "P": PASSWORD},
            "credentials",
            ("eu", PASSWORD),
            id="credentials-from-env",
        ),
        pytest.param(
            {"password": PASSWORD},
            {"host": AMQP},
            {},
            "password",
            None,
            id="password-metadata-ignored",
        ),
        pytest.param({}, {"host": HTTP}, {}, "request_timeout", timedelta(seconds=3), id="t-3s"),
        pytest.param(
            {"timeout": "1500"},
            {"host": HTTP},
            {},
            "request_timeout",
            timedelta(milliseconds=1500),
            id="timeout-ms",
        ),
        pytest.param(
            {"timeout": "0"}, {"host": HTTP}, {}, "request_timeout", timedelta(seconds=3), id="t-0"
        ),
        pytest.param({}, {"host": HTTP}, {}, "operation", Operation.SUM, id="operation-default"),
        pytest.param(
            {"operation": "avg"}, {"host": HTTP}, {}, "operation", Operation.AVG, id="operation"
        ),
        pytest.param({}, {"host": HTTP}, {}, "page_size", 100, id="page-size-default"),
        pytest.param({"pageSize": "7"}, {"host": HTTP}, {}, "page_size", 7, id="page-size"),
        pytest.param({}, {"host": HTTP}, {}, "use_regex", False, id="regex-default"),
        pytest.param({"useRegex": "true"}, {"host": HTTP}, {}, "use_regex", True, id="regex"),
        pytest.param(
            {"excludeUnacknowledged": "true"},
            {"host": HTTP},
            {},
            "exclude_unacknowledged",
            True,
            id="exclude-unacked",
        ),
        pytest.param({}, {"host": HTTP}, {}, "activation_value", 0.0, id="activation-default"),
        pytest.param(
            {"activationValue": "2.5"}, {"host": HTTP}, {}, "activation_value", 2.5, id="act"
        ),
        pytest.param({}, {"host": HTTP}, {}, "tls", "disable", id="tls-default"),
        pytest.param({}, {"host": HTTP, "tls": "enable"}, {}, "tls", "enable", id="tls"),
        pytest.param({"unsafeSsl": "true"}, {"host": HTTP}, {}, "unsafe_ssl", True, id="unsafe"),
    ],
)
def test_parameters(
    metadata: dict[str, str],
    auth: dict[str, str],
    env: dict[str, str],
    attr: str,
    expected: object,
) -> None:
    """Each parameter, from each source KEDA reads it from, in KEDA's order."""
    assert getattr(config({**BASE, **metadata}, auth, env), attr) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(
            "amqp://rabbit",
            HostURL(scheme="amqp", host="rabbit", port=5672, path=""),
            id="amqp-default-port",
        ),
        pytest.param(
            "amqps://rabbit/",
            HostURL(scheme="amqps", host="rabbit", port=5671, path="/"),
            id="amqps-default-port",
        ),
        pytest.param(
            "HTTP://Rabbit:15672/%2F",
            HostURL(scheme="http", host="rabbit", port=15672, path="/%2F"),
            id="case",
        ),
        pytest.param(
            "https://[::1]/x",
            HostURL(scheme="https", host="::1", port=443, path="/x"),
            id="ipv6-https-default-port",
        ),
        pytest.param(
            "amqp://u%40x:p%3Aw%2F@h:1/v?heartbeat=5",
            HostURL(
                scheme="amqp",
                host="h",
                port=1,
                path="/v",
                username="u@x",
                password="p:w/",
                query=(("heartbeat", "5"),),
            ),
            id="escaped-credentials",
        ),
    ],
)
def test_parse_host(raw: str, expected: HostURL) -> None:
    """Scheme, host, default port by scheme, and URL-decoded credentials."""
    assert parse_host(raw) == expected


@pytest.mark.parametrize(
    ("host", "vhost", "prefix"),
    [
        pytest.param("amqp://h:5672", "/", None, id="amqp-no-path-root"),
        pytest.param("amqp://h:5672/", "/", None, id="amqp-slash-root"),
        pytest.param("amqp://h:5672/%2F", "/", None, id="amqp-encoded-root"),
        pytest.param("amqp://h:5672/orders", "orders", None, id="amqp-vhost"),
        pytest.param("amqp://h:5672/a%20b", "a b", None, id="amqp-escaped"),
        pytest.param("http://h:15672", "/", "", id="http-no-path-root"),
        pytest.param("http://h:15672/", "/", "", id="http-slash-root"),
        pytest.param("http://h:15672/%2F", "/", "", id="http-encoded-root"),
        pytest.param("http://h:15672/orders", "orders", "", id="http-vhost"),
        pytest.param("http://h/rabbit/orders", "orders", "/rabbit", id="http-prefix-vhost"),
        pytest.param("http://h/a/b/", "/", "/a/b", id="http-prefix-root"),
    ],
)
def test_vhost_and_prefix_from_the_url(host: str, vhost: str, prefix: str | None) -> None:
    """AMQP: the path after the first "/"; HTTP: the last segment, what precedes is a prefix."""
    parsed = config(BASE, {"host": host})
    assert parsed.vhost == vhost
    if prefix is not None:
        endpoint = ManagementEndpoint.of(parsed)
        assert endpoint.prefix == prefix
        url = endpoint.url("/api/queues/%2F/q")
        assert (url.host, url.port) == ("h", parsed.url.port)
        assert url.raw_path == f"{prefix}/api/queues/%2F/q"


# ---------------------------------------------------------------------------------------------
# KEDA's rules, with our wording


@pytest.mark.parametrize(
    ("metadata", "auth", "message"),
    [
        pytest.param(
            {"queueName": ""},
            {"host": AMQP},
            'missing required parameter "queueName" (looked in metadata)',
            id="missing-queue",
        ),
        pytest.param(
            {},
            {},
            'missing required parameter "host" (looked in metadata, auth params, env via '
            '"hostFromEnv")',
            id="missing-host",
        ),
        pytest.param(
            {"hostFromEnv": "UNSET"},
            {},
            'missing required parameter "host" (looked in metadata, auth params, env via '
            '"hostFromEnv")',
            id="host-env-unset",
        ),
        pytest.param(
            {},
            {"host": "rabbit:5672"},
            'parameter "host" is not a URL: write amqp://host:5672/vhost or '
            "http://host:15672/vhost",
            id="host-not-url",
        ),
        pytest.param(
            {},
            {"host": "ftp://rabbit/"},
            'parameter "host" has the scheme "ftp"; use amqp, amqps, http or https',
            id="host-unknown-scheme",
        ),
        pytest.param(
            {},
            {"host": "amqp://:5672/"},
            'parameter "host" has no host name',
            id="host-no-hostname",
        ),
        pytest.param(
            {},
            {"host": "amqp://rabbit:port/"},
            'parameter "host" has an invalid port',
            id="host-bad-port",
        ),
        pytest.param(
            {"protocol": "http"},
            {"host": AMQP},
            'protocol "http" needs a host URL starting with http(s)://, not amqp://',
            id="protocol-http-amqp-url",
        ),
        pytest.param(
            {"protocol": "amqp"},
            {"host": "https://rabbit/"},
            'protocol "amqp" needs a host URL starting with amqp(s)://, not https://',
            id="protocol-amqp-https-url",
        ),
        pytest.param(
            {"protocol": "mqtt"},
            {"host": AMQP},
            'parameter "protocol" value "mqtt" must be one of "auto", "amqp", "http"',
            id="protocol-unknown",
        ),
        pytest.param(
            {},
            {"host": AMQP, "protocol": "mqtt"},
            'parameter "protocol" must be one of "auto", "amqp", "http" (value not shown)',
            id="protocol-unknown-auth",
        ),
        pytest.param(
            {"mode": "Bytes", "value": "1"},
            {"host": HTTP},
            'parameter "mode" value "Bytes" must be one of "QueueLength", "MessageRate", '
            '"DeliverGetRate", "PublishedToDeliveredRatio", "ExpectedQueueConsumptionTime"',
            id="mode-unknown",
        ),
        pytest.param(
            {"mode": "QueueLength"},
            {"host": AMQP},
            'mode "QueueLength" needs parameter "value" too',
            id="mode-without-value",
        ),
        pytest.param(
            {"mode": "QueueLength", "value": "0"},
            {"host": AMQP},
            'mode "QueueLength" needs parameter "value" too',
            id="mode-value-0",
        ),
        pytest.param(
            {"value": "5"},
            {"host": AMQP},
            'parameter "value" needs "mode" too',
            id="value-without-mode",
        ),
        pytest.param(
            {"queueLength": "5", "mode": "QueueLength", "value": "5"},
            {"host": AMQP},
            'parameter "queueLength" is deprecated and cannot be combined with "mode" or '
            '"value": use "mode" and "value" alone',
            id="queue-length-and-mode",
        ),
        pytest.param(
            {"queueLength": "5", "value": "5"},
            {"host": AMQP},
            'parameter "queueLength" is deprecated and cannot be combined with "mode" or '
            '"value": use "mode" and "value" alone',
            id="queue-length-and-value",
        ),
        pytest.param(
            {"mode": "QueueLength", "value": "-1"},
            {"host": AMQP},
            'parameter "value" must be greater than 0',
            id="value-negative",
        ),
        pytest.param(
            {"queueLength": "-3"},
            {"host": AMQP},
            'parameter "queueLength" must be greater than 0',
            id="queue-length-negative",
        ),
        pytest.param(
            {"mode": "QueueLength", "value": "many"},
            {"host": AMQP},
            'parameter "value" value "many" is not a number',
            id="value-word",
        ),
        pytest.param(
            {"activationValue": "x"},
            {"host": AMQP},
            'parameter "activationValue" value "x" is not a number',
            id="activation-word",
        ),
        pytest.param(
            {"mode": "MessageRate", "value": "1"},
            {"host": AMQP},
            'mode "MessageRate" needs the management API (protocol http): AMQP reports no rates',
            id="rate-over-amqp",
        ),
        pytest.param(
            {"mode": "ExpectedQueueConsumptionTime", "value": "1"},
            {"host": AMQP},
            'mode "ExpectedQueueConsumptionTime" needs the management API (protocol http): '
            "AMQP reports no rates",
            id="eta-over-amqp",
        ),
        pytest.param(
            {"useRegex": "true"},
            {"host": AMQP},
            '"useRegex: true" needs the management API (protocol http)',
            id="regex-over-amqp",
        ),
        pytest.param(
            {"excludeUnacknowledged": "true"},
            {"host": AMQP},
            '"excludeUnacknowledged: true" needs the management API (protocol http): AMQP '
            "counts ready messages only",
            id="exclude-over-amqp",
        ),
        pytest.param(
            {"timeout": "1000"},
            {"host": AMQP},
            'parameter "timeout" applies to the management API only (protocol http)',
            id="timeout-over-amqp",
        ),
        pytest.param(
            {"timeout": "-5"},
            {"host": HTTP},
            'parameter "timeout" value "-5" is not a duration (a number of milliseconds)',
            id="timeout-negative",
        ),
        pytest.param(
            {"useRegex": "true", "pageSize": "0"},
            {"host": HTTP},
            'parameter "pageSize" must be at least 1',
            id="page-size-0",
        ),
        pytest.param(
            {"useRegex": "true", "operation": "median"},
            {"host": HTTP},
            'parameter "operation" value "median" must be one of "sum", "max", "avg"',
            id="operation-unknown",
        ),
        pytest.param(
            {"useRegex": "yes"},
            {"host": HTTP},
            'parameter "useRegex" value "yes" is not a boolean (true or false)',
            id="regex-word",
        ),
        pytest.param(
            {},
            {"host": HTTP, "username": "u"},
            'parameter "username" needs "password" too',
            id="username-alone",
        ),
        pytest.param(
            {},
            {"host": HTTP, "password": PASSWORD},
            'parameter "password" needs "username" too',
            id="password-alone",
        ),
        pytest.param(
            {},
            {"host": HTTP, "tls": "on"},
            'parameter "tls" must be one of "enable", "disable" (value not shown)',
            id="tls-word",
        ),
        pytest.param(
            {},
            {"host": HTTP, "tls": "enable", "cert": "-----BEGIN CERTIFICATE-----"},
            'auth param "cert" needs "key" too',
            id="cert-without-key",
        ),
        pytest.param(
            {},
            {"host": HTTP, "key": "-----BEGIN PRIVATE KEY-----"},
            'auth param "key" needs "cert" too',
            id="key-without-cert",
        ),
        pytest.param(
            {},
            {"host": HTTP, "ca": "not pem"},
            'parameter "ca" is invalid (value not shown)',
            id="ca-not-pem",
        ),
        pytest.param(
            {},
            {
                "host": "https://rabbit/",
                "tls": "enable",
                "ca": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            },
            'auth param "ca" cannot be loaded as TLS material',
            id="ca-bad-pem",
        ),
    ],
)
def test_errors_name_the_field(
    metadata: dict[str, str], auth: dict[str, str], message: str
) -> None:
    """Each of KEDA's rules (and ours) gives a ConfigError with a fixed wording."""
    got = error({**BASE, **metadata}, auth)
    if message.startswith('auth param "ca" cannot'):
        assert got.startswith(message)
    else:
        assert got == message


def test_every_error_is_reported_at_once() -> None:
    """Field errors come in one message; rules across fields follow once the fields parse."""
    message = error({"pageSize": "x", "mode": "Bytes"}, {"host": "ftp://h/"})
    assert message == (
        'missing required parameter "queueName" (looked in metadata); '
        'parameter "mode" value "Bytes" must be one of "QueueLength", "MessageRate", '
        '"DeliverGetRate", "PublishedToDeliveredRatio", "ExpectedQueueConsumptionTime"; '
        'parameter "pageSize" value "x" is not an integer'
    )
    message = error(
        {"queueName": "q", "useRegex": "true", "mode": "MessageRate", "value": "1"},
        {"host": AMQP, "username": "u"},
    )
    assert message == (
        'parameter "username" needs "password" too; '
        'mode "MessageRate" needs the management API (protocol http): AMQP reports no rates; '
        '"useRegex: true" needs the management API (protocol http)'
    )


def test_the_host_is_never_quoted() -> None:
    """Even from metadata, a host that does not parse is named, not shown: it may hold a
    password."""
    for metadata, auth in (({"host": f"ftp://u:{PASSWORD}@h/"}, {}), ({}, {"host": "x" * 3})):
        message = error({**BASE, **metadata}, auth)
        assert PASSWORD not in message
        assert "xxx" not in message


def test_error_names_trigger_by_index_and_name() -> None:
    """The label carries the index and the trigger's name."""
    with pytest.raises(ConfigError, match=r'^trigger\[3\] "orders" \(rabbitmq\): missing'):
        scaler({"host": AMQP}, index=3, name="orders")


# ---------------------------------------------------------------------------------------------
# Warnings


@pytest.mark.parametrize(
    ("metadata", "auth", "expected"),
    [
        pytest.param({}, {"host": HTTP}, [], id="none"),
        pytest.param(
            {"operation": "max", "pageSize": "5"},
            {"host": HTTP},
            ['"operation", "pageSize" ignored without "useRegex: true"'],
            id="regex-options-without-regex",
        ),
        pytest.param(
            {"queueLength": "4"},
            {"host": AMQP},
            ['parameter "queueLength" is deprecated: use "mode: QueueLength" and "value"'],
            id="queue-length-deprecated",
        ),
        pytest.param(
            {"value": "0"},
            {"host": AMQP},
            ['parameter "value" is 0, which means unset (target 20)'],
            id="value-0",
        ),
        pytest.param(
            {"timeout": "0"},
            {"host": HTTP},
            ['parameter "timeout" is 0, which means the default (3000 ms)'],
            id="timeout-0",
        ),
        pytest.param(
            {"activationValue": "-1"},
            {"host": HTTP},
            ['parameter "activationValue" is negative: the trigger is always active'],
            id="activation-negative",
        ),
        pytest.param(
            {},
            {"host": HTTP, "ca": "-----BEGIN x", "keyPassword": "k"},
            ['auth param "tls" is not "enable": "ca", "keyPassword" ignored'],
            id="tls-material-without-tls",
        ),
        pytest.param(
            {},
            {"host": AMQP, "tls": "enable"},
            [
                'auth param "tls" is "enable" but the host URL is amqp://, which is not '
                "encrypted: use amqps://"
            ],
            id="tls-enable-plain-scheme",
        ),
        pytest.param(
            {"unsafeSsl": "true"},
            {"host": HTTP},
            ['parameter "unsafeSsl" is ignored: the host URL is http://'],
            id="unsafe-ssl-plain-scheme",
        ),
        pytest.param(
            {"host": HTTP},
            {},
            [
                'the "host" URL in plain metadata carries a password that anyone who can read '
                'the ScaledObject can see: use "hostFromEnv" or a TriggerAuthentication'
            ],
            id="password-in-plain-metadata",
        ),
        pytest.param({"host": "http://rabbit:15672/"}, {}, [], id="host-metadata-no-password"),
        pytest.param(
            {},
            {"host": AMQP + "?heartbeat=5&auth_mechanism=plain"},
            ['query parameters of the host URL are ignored: "heartbeat"'],
            id="query-ignored",
        ),
        pytest.param(
            {"password": "x"},
            {"host": AMQP},
            [
                'parameter "password" is ignored in metadata; it is read from auth params, '
                'env via "passwordFromEnv"'
            ],
            id="password-in-metadata",
        ),
        pytest.param(
            {"passwordFromEnv": "P"},
            {"host": HTTP},
            ['env var "P" named by "passwordFromEnv" is not set'],
            id="password-env-unset",
        ),
        pytest.param(
            {"queueNmae": "x"},
            {"host": AMQP},
            ['unknown parameter "queueNmae" (did you mean "queueName"?)'],
            id="unknown",
        ),
    ],
)
def test_warnings(metadata: dict[str, str], auth: dict[str, str], expected: list[str]) -> None:
    """What KEDA silently ignores is accepted, with a warning saying so."""
    assert warnings_of({**BASE, **metadata}, auth) == expected


# ---------------------------------------------------------------------------------------------
# Metric names


@pytest.mark.parametrize(
    ("queue", "index", "expected"),
    [
        pytest.param("orders", 0, "s0-rabbitmq-orders", id="plain"),
        pytest.param("orders.v1", 2, "s2-rabbitmq-orders-v1", id="dot"),
        pytest.param("a b", 0, "s0-rabbitmq-a+b", id="space-plus"),
        pytest.param("eu/orders", 0, "s0-rabbitmq-eu-2Forders", id="slash-escaped"),
        pytest.param("^orders-.*$", 1, "s1-rabbitmq--5Eorders---2A-24", id="regex"),
        pytest.param("a:b~c_d", 0, "s0-rabbitmq-a-3Ab~c_d", id="colon-tilde-underscore"),
        pytest.param("ü", 0, "s0-rabbitmq--C3-BC", id="utf8"),
    ],
)
def test_metric_name_is_kedas(queue: str, index: int, expected: str) -> None:
    """s{index}-rabbitmq-{QueryEscape(queueName)}, then "/", ".", ":", "%" made "-"."""
    assert scaler({"queueName": queue}, {"host": HTTP}, index=index).metric_name == expected


# ---------------------------------------------------------------------------------------------
# Secrets and shared-client keys


def test_secrets_stay_out_of_reprs_and_keys() -> None:
    """The host URL's password, the password and the key password appear in no repr, str or
    client key."""
    host = f"amqps://user:{QUOTED}@rabbit/v"
    for auth in (
        {"host": host, "keyPassword": "key-" + PASSWORD},
        {"host": host.replace("amqps", "https"), "username": "u", "password": PASSWORD},
    ):
        s = scaler(BASE, auth)
        texts = [repr(s), repr(s.config), repr(s.endpoint), str(s.endpoint), repr(s.config.url)]
        for text in texts:
            assert PASSWORD not in text
            assert "pa55" not in text
        assert s.endpoint.password_digest == secret_digest(PASSWORD)
        assert s.endpoint.password_digest != hashlib.sha256(PASSWORD.encode()).hexdigest()
    assert str(scaler(BASE, {"host": host}).endpoint) == "amqps://user@rabbit:5671/v"


def test_endpoints_share_exactly_when_everything_matches() -> None:
    """Same broker, vhost, credentials and TLS: one key whatever the queue or mode; any
    difference: another key. Management endpoints ignore the vhost (one session serves all)."""
    one = scaler(*amqp()).endpoint
    assert isinstance(one, BrokerEndpoint)
    assert one == scaler({"queueName": "other"}, {"host": AMQP}).endpoint
    assert one == scaler({**BASE, "queueLength": "3"}, {"host": AMQP}).endpoint
    same_in_params = {"host": "amqp://rabbit/vhost", "username": "user", "password": "secret"}
    assert one == scaler(BASE, same_in_params).endpoint
    differing = [
        scaler(BASE, {"host": AMQP.replace("secret", "other")}),
        scaler(BASE, {"host": AMQP.replace("user:", "admin:")}),
        scaler(BASE, {"host": AMQP.replace("/vhost", "/v2")}),
        scaler({**BASE, "vhostName": "v3"}, {"host": AMQP}),
        scaler(BASE, {"host": AMQP.replace("5672", "5673")}),
        scaler(BASE, {"host": AMQP.replace("amqp:", "amqps:")}),
        scaler({**BASE, "unsafeSsl": "true"}, {"host": AMQP.replace("amqp:", "amqps:")}),
    ]
    keys = {one, *(s.endpoint for s in differing)}
    assert len(keys) == 1 + len(differing)

    web = scaler(*http()).endpoint
    assert isinstance(web, ManagementEndpoint)
    assert web == scaler(BASE, {"host": HTTP.replace("/vhost", "/other")}).endpoint
    assert web == scaler({**BASE, "vhostName": "x", "useRegex": "true"}, {"host": HTTP}).endpoint
    assert web != scaler(BASE, {"host": HTTP.replace("secret", "other")}).endpoint
    assert web != scaler(BASE, {"host": "http://user:secret@rabbit:15672/proxy/vhost"}).endpoint


def test_amqp_connection_url_is_built_from_parts() -> None:
    """Credentials (URL-decoded, or the auth params), vhost, heartbeat; nothing else of the
    user's URL reaches the client."""
    cfg = config(
        {**BASE, "vhostName": "a/b"},
        {"host": f"amqp://x%40y:{QUOTED}@h/v?x=1"},
    )
    url = rabbitmq._amqp_url(cfg)
    assert (url.user, url.password, url.host, url.port) == ("x@y", PASSWORD, "h", 5672)
    assert url.path == "/a/b"
    assert dict(url.query) == {"heartbeat": "10"}
    cfg = config(BASE, {"host": "amqp://h", "username": "u", "password": PASSWORD})
    assert (rabbitmq._amqp_url(cfg).user, rabbitmq._amqp_url(cfg).password) == ("u", PASSWORD)


# ---------------------------------------------------------------------------------------------
# Management API JSON -> QueueStats (pure)


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        pytest.param(
            {"name": "q"},
            QueueStats(name="q", messages=None, ready=None),
            id="no-statistics-yet",
        ),
        pytest.param(
            {"name": "q", "messages": 7, "messages_ready": 5},
            QueueStats(name="q", messages=7, ready=5, publish_rate=0.0, deliver_get_rate=0.0),
            id="no-traffic-no-message-stats",
        ),
        pytest.param(
            {
                "name": "q",
                "messages": 7,
                "messages_ready": 5,
                "message_stats": {
                    "publish": 10,
                    "publish_details": {"rate": 2.5},
                    "deliver_get": 3,
                    "deliver_get_details": {"rate": 1},
                },
            },
            QueueStats(name="q", messages=7, ready=5, publish_rate=2.5, deliver_get_rate=1.0),
            id="rates",
        ),
        pytest.param(
            {"name": "q", "messages": 1, "message_stats": {"publish": 10, "deliver_get": 4}},
            QueueStats(name="q", messages=1, publish_rate=None, deliver_get_rate=None),
            id="counters-without-rates",
        ),
    ],
)
def test_stats_from_json(item: dict[str, Any], expected: QueueStats) -> None:
    """Counts and rates; a missing number stays None, a missing kind of traffic is rate 0."""
    assert stats_from_json(item) == expected


@pytest.mark.parametrize(
    ("item", "message"),
    [
        pytest.param([], "unexpected answer from the management API: not a queue object", id="l"),
        pytest.param({"messages": 1}, "not a queue object", id="no-name"),
        pytest.param({"name": "q", "messages": "7"}, 'unexpected "messages"', id="str-count"),
        pytest.param({"name": "q", "messages_ready": -1}, 'unexpected "messages_ready"', id="neg"),
        pytest.param({"name": "q", "messages": True}, 'unexpected "messages"', id="bool"),
        pytest.param({"name": "q", "message_stats": []}, 'unexpected "message_stats"', id="ms"),
        pytest.param(
            {"name": "q", "message_stats": {"publish_details": {"rate": "x"}}},
            'unexpected "message_stats.publish_details" for queue "q"',
            id="rate-word",
        ),
        pytest.param(
            {"name": "q", "message_stats": {"deliver_get_details": {}}},
            'unexpected "message_stats.deliver_get_details"',
            id="rate-missing",
        ),
    ],
)
def test_stats_from_json_refuses_what_is_not_a_queue(item: object, message: str) -> None:
    """Anything else is a ScalerQueryError, never a silent 0."""
    with pytest.raises(ScalerQueryError, match=message):
        stats_from_json(item)


# ---------------------------------------------------------------------------------------------
# Snapshot -> reading (pure): every mode, every operation


def q(
    name: str = "q",
    messages: int | None = 0,
    ready: int | None = 0,
    publish: float | None = 0.0,
    deliver: float | None = 0.0,
) -> QueueStats:
    return QueueStats(
        name=name, messages=messages, ready=ready, publish_rate=publish, deliver_get_rate=deliver
    )


def snap(*queues: QueueStats) -> QueueSnapshot:
    return QueueSnapshot(queues=queues)


def cfg_http(**metadata: str) -> RabbitMQConfig:
    return config({**BASE, **metadata}, {"host": HTTP})


LENGTH = cfg_http()
LENGTH_READY = cfg_http(excludeUnacknowledged="true")
LENGTH_AMQP = config(BASE, {"host": AMQP})
RATE = cfg_http(mode="MessageRate", value="10", activationValue="2")
DELIVER = cfg_http(mode="DeliverGetRate", value="10", activationValue="2")
RATIO = cfg_http(mode="PublishedToDeliveredRatio", value="1.2", activationValue="0.5")
ETA = cfg_http(mode="ExpectedQueueConsumptionTime", value="30", activationValue="3")


@pytest.mark.parametrize(
    ("cfg", "snapshot", "expected"),
    [
        pytest.param(LENGTH, snap(q(messages=10, ready=6)), Reading(10), id="length-with-unacked"),
        pytest.param(LENGTH_READY, snap(q(messages=10, ready=6)), Reading(6), id="length-ready"),
        pytest.param(LENGTH_AMQP, snap(q(messages=None, ready=6)), Reading(6), id="length-amqp"),
        pytest.param(RATE, snap(q(messages=0, publish=4.5)), Reading(4.5), id="rate"),
        pytest.param(RATE, snap(q(messages=2, publish=0)), Reading(0.0), id="rate-idle-small"),
        pytest.param(
            RATE,
            snap(q(messages=3, publish=0)),
            Reading(0.0, forced_active=True),
            id="rate-backlog-activates",
        ),
        pytest.param(DELIVER, snap(q(messages=50, deliver=7.0)), Reading(7.0), id="deliver"),
        pytest.param(RATIO, snap(q(publish=0, deliver=0)), Reading(0.0), id="ratio-idle"),
        pytest.param(RATIO, snap(q(publish=0, deliver=3)), Reading(0.0), id="ratio-no-publish"),
        pytest.param(RATIO, snap(q(publish=6, deliver=4)), Reading(1.5), id="ratio"),
        pytest.param(
            RATIO,
            snap(q(publish=6, deliver=0)),
            Reading(0.5, forced_active=True),
            id="ratio-nothing-delivered",
        ),
        pytest.param(ETA, snap(q(messages=0, publish=5, deliver=0)), Reading(0.0), id="eta-empty"),
        pytest.param(
            ETA,
            snap(q(messages=9, publish=0, deliver=0)),
            Reading(3.0, forced_active=True),
            id="eta-nothing-delivered",
        ),
        pytest.param(
            ETA, snap(q(messages=20, publish=6, deliver=4)), Reading(5.5), id="eta"
        ),  # (6-4)/4 + 20/4
        pytest.param(
            cfg_http(useRegex="true"),
            snap(),
            Reading(0.0),
            id="regex-no-match-is-zero",
        ),
    ],
)
def test_queue_reading(cfg: RabbitMQConfig, snapshot: QueueSnapshot, expected: Reading) -> None:
    """Each mode's formula (KEDA's), including where KEDA forces activity."""
    assert queue_reading(snapshot, cfg) == expected


THREE = snap(
    q("a", messages=1, ready=1, publish=1.0, deliver=0.5),
    q("b", messages=2, ready=0, publish=2.0, deliver=0.0),
    q("c", messages=4, ready=3, publish=6.0, deliver=1.0),
)


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        pytest.param({"operation": "sum"}, 7.0, id="sum"),
        pytest.param({"operation": "max"}, 4.0, id="max"),
        pytest.param({"operation": "avg"}, 7 / 3, id="avg-is-a-true-average"),
        pytest.param({"operation": "sum", "excludeUnacknowledged": "true"}, 4.0, id="sum-ready"),
        pytest.param({"operation": "max", "excludeUnacknowledged": "true"}, 3.0, id="max-ready"),
        pytest.param({"operation": "avg", "mode": "MessageRate", "value": "1"}, 3.0, id="avg-rate"),
        pytest.param(
            {"operation": "max", "mode": "DeliverGetRate", "value": "1"}, 1.0, id="max-deliver"
        ),
        pytest.param(
            {"operation": "sum", "mode": "PublishedToDeliveredRatio", "value": "1"},
            9.0 / 1.5,
            id="ratio-of-sums",
        ),
        pytest.param(
            {"operation": "sum", "mode": "ExpectedQueueConsumptionTime", "value": "1"},
            (9.0 - 1.5) / 1.5 + 7 / 1.5,
            id="eta-of-sums",
        ),
    ],
)
def test_operations_combine_matched_queues(metadata: dict[str, str], expected: float) -> None:
    """Counts and rates are combined by `operation` first, then the mode's formula applies."""
    cfg = cfg_http(useRegex="true", queueName="^.$", **metadata)
    assert queue_reading(THREE, cfg).value == pytest.approx(expected)


def test_avg_does_not_round_a_waiting_message_away() -> None:
    """KEDA's integer average of counts 0 and 1 is 0 (scale to zero); ours is 0.5 (active)."""
    cfg = cfg_http(useRegex="true", operation="avg")
    sample = sample_from_snapshot(snap(q("a", messages=0), q("b", messages=1)), cfg, name="m")
    assert sample.value == 0.5
    assert sample.value > sample.activation_target


@pytest.mark.parametrize(
    ("cfg", "snapshot", "kind", "message"),
    [
        pytest.param(
            LENGTH,
            snap(q(messages=None)),
            ScalerUnavailableError,
            'the management API has no statistics for queue "q" yet (a queue created a moment '
            "ago, or statistics collection is disabled)",
            id="no-statistics",
        ),
        pytest.param(
            LENGTH_READY,
            snap(q(ready=None)),
            ScalerUnavailableError,
            'no statistics for queue "q" yet',
            id="no-ready-count",
        ),
        pytest.param(
            RATE,
            snap(q(publish=None)),
            ScalerQueryError,
            'the management API counts publish messages of queue "q" but reports no rate '
            "(does the broker compute message rates?)",
            id="no-rates",
        ),
        pytest.param(
            ETA,
            snap(q(messages=1, deliver=None)),
            ScalerQueryError,
            'counts deliver/get messages of queue "q" but reports no rate',
            id="no-deliver-rates",
        ),
        pytest.param(
            cfg_http(useRegex="true"),
            snap(q("a", messages=1), q("b", messages=None)),
            ScalerUnavailableError,
            'queue "b"',
            id="one-of-many-without-statistics",
        ),
    ],
)
def test_unreadable_numbers_are_errors_never_zero(
    cfg: RabbitMQConfig, snapshot: QueueSnapshot, kind: type[Exception], message: str
) -> None:
    """A count or rate the server did not report is not read as 0 (KEDA reads 0)."""
    with pytest.raises(kind) as info:
        queue_reading(snapshot, cfg)
    assert message in str(info.value)


def test_sample_carries_target_activation_and_type() -> None:
    """Value, the target, activationValue and the trigger's metric type."""
    cfg = cfg_http(mode="QueueLength", value="15", activationValue="4")
    sample = sample_from_snapshot(
        snap(q(messages=42)), cfg, name="s1-x", metric_type=MetricType.VALUE
    )
    assert sample == MetricSample(
        name="s1-x", value=42.0, target=15.0, activation_target=4.0, metric_type=MetricType.VALUE
    )


def test_forced_activity_is_an_activation_target_of_minus_infinity() -> None:
    """MessageRate with a backlog but no publishing is active, as in KEDA: value 0 > -inf."""
    sample = sample_from_snapshot(snap(q(messages=5, publish=0.0)), RATE, name="m")
    assert (sample.value, sample.target) == (0.0, 10.0)
    assert sample.activation_target == -math.inf
    assert sample.value > sample.activation_target
    idle = sample_from_snapshot(snap(q(messages=1, publish=1.0)), RATE, name="m")
    assert (idle.activation_target, idle.value > idle.activation_target) == (2.0, False)


# ---------------------------------------------------------------------------------------------
# Error translation at the boundary

AMQP_WHERE = f"{LABEL}: amqp://user@rabbit:5672/vhost"
HTTP_WHERE = f"{LABEL}: http://user@rabbit:15672"


@pytest.mark.parametrize(
    ("host", "raised", "kind", "text"),
    [
        pytest.param(
            AMQP,
            aiormq.exceptions.AMQPConnectionError(111, "Connect call failed"),
            ScalerUnavailableError,
            f"{AMQP_WHERE}: unavailable: 111 Connect call failed",
            id="amqp-refused",
        ),
        pytest.param(
            AMQP,
            aiormq.exceptions.ProbableAuthenticationError("ACCESS_REFUSED - Login was refused"),
            ScalerQueryError,
            f"{AMQP_WHERE}: authentication failed: ACCESS_REFUSED - Login was refused",
            id="amqp-login-refused",
        ),
        pytest.param(
            AMQP,
            aiormq.exceptions.ChannelNotFoundEntity("NOT_FOUND - no queue 'jobs'"),
            ScalerQueryError,
            f'{AMQP_WHERE}: no queue "jobs" in vhost "vhost" (NOT_FOUND - no queue \'jobs\')',
            id="amqp-no-queue",
        ),
        pytest.param(
            AMQP,
            aiormq.exceptions.ChannelAccessRefused("ACCESS_REFUSED - no access"),
            ScalerQueryError,
            f"{AMQP_WHERE}: ACCESS_REFUSED - no access",
            id="amqp-channel-refused",
        ),
        pytest.param(
            AMQP,
            aiormq.exceptions.ConnectionClosed(530, "NOT_ALLOWED - vhost x not found"),
            ScalerQueryError,
            f"{AMQP_WHERE}: not allowed: 530 NOT_ALLOWED - vhost x not found",
            id="amqp-530",
        ),
        pytest.param(
            AMQP,
            aiormq.exceptions.ConnectionClosed(320, "CONNECTION_FORCED - shutdown"),
            ScalerUnavailableError,
            f"{AMQP_WHERE}: unavailable: 320 CONNECTION_FORCED - shutdown",
            id="amqp-broker-shutdown",
        ),
        pytest.param(
            AMQP,
            aiormq.exceptions.InvalidFrameError(
                "Expected one of ['Connection.OpenOk'], got <Connection.Close object at 0x1>"
            ),
            ScalerQueryError,
            f'{AMQP_WHERE}: the broker refused to open vhost "vhost": it does not exist, or the '
            "user may not access it",
            id="amqp-vhost-refused",
        ),
        pytest.param(
            AMQP,
            ConnectionResetError(104, f"reset amqp://user:{PASSWORD}@rabbit"),
            ScalerUnavailableError,
            f"{AMQP_WHERE}: unavailable: 104 reset amqp://***@rabbit",
            id="os-error-scrubbed",
        ),
        pytest.param(
            AMQP,
            TimeoutError(),
            ScalerUnavailableError,
            f"{AMQP_WHERE}: no answer within 5s",
            id="amqp-timeout",
        ),
        pytest.param(
            HTTP,
            TimeoutError(),
            ScalerUnavailableError,
            f"{HTTP_WHERE}: no answer within 3s per request, 5s per poll",
            id="http-timeout",
        ),
        pytest.param(
            HTTP,
            aiohttp.ClientConnectionError("Cannot connect to host rabbit:15672"),
            ScalerUnavailableError,
            f"{HTTP_WHERE}: unavailable: Cannot connect to host rabbit:15672",
            id="http-refused",
        ),
        pytest.param(
            HTTP,
            ScalerQueryError("from the pure function"),
            ScalerQueryError,
            f"{HTTP_WHERE}: from the pure function",
            id="own-error-gets-context",
        ),
    ],
)
def test_library_errors_become_ours(
    host: str, raised: Exception, kind: type[Exception], text: str
) -> None:
    """Connection trouble is transient; answers we cannot use are not; the message names the
    trigger and endpoint, and secrets are scrubbed from whatever the library said."""
    s = scaler(BASE, {"host": host.replace("secret", QUOTED)})
    with pytest.raises(kind) as info, s._translate_errors():
        raise raised
    assert type(info.value) is kind
    assert str(info.value) == text
    assert PASSWORD not in str(info.value)


@pytest.mark.parametrize(
    ("metadata", "status", "reason", "kind", "text"),
    [
        pytest.param(
            {},
            401,
            "Login failed",
            ScalerQueryError,
            "authentication failed: HTTP 401: Login failed",
            id="401",
        ),
        pytest.param(
            {}, 403, "Access refused.", ScalerQueryError, "not permitted: HTTP 403", id="403"
        ),
        pytest.param(
            {},
            404,
            "Not Found",
            ScalerQueryError,
            'no queue "jobs" in vhost "vhost" (or no such vhost; HTTP 404: Not Found)',
            id="404-queue",
        ),
        pytest.param(
            {"useRegex": "true"},
            404,
            "Not Found",
            ScalerQueryError,
            'no vhost "vhost" (HTTP 404: Not Found)',
            id="404-regex-vhost",
        ),
        pytest.param(
            {"useRegex": "true"},
            400,
            "Pagination parameters are invalid",
            ScalerQueryError,
            "the management API refused the query (HTTP 400: Pagination parameters are invalid); "
            'is "queueName" a valid regular expression?',
            id="400-regex",
        ),
        pytest.param(
            {}, 503, "", ScalerUnavailableError, "unavailable: HTTP 503", id="503-transient"
        ),
        pytest.param(
            {}, 429, "slow down", ScalerUnavailableError, "unavailable: HTTP 429", id="429"
        ),
        pytest.param({}, 405, "", ScalerQueryError, "HTTP 405", id="other-4xx"),
    ],
)
def test_http_statuses_become_ours(
    metadata: dict[str, str], status: int, reason: str, kind: type[Exception], text: str
) -> None:
    """Refusals and missing queues are query errors; server trouble is transient."""
    s = scaler({**BASE, **metadata}, {"host": HTTP})
    with pytest.raises(kind) as info, s._translate_errors():
        raise rabbitmq._HTTPStatusError(status, reason)
    assert type(info.value) is kind
    assert str(info.value).startswith(f"{HTTP_WHERE}: {text}")


def test_basic_auth_header_and_error_bodies_never_leak() -> None:
    """A reply echoing the Authorization token or the password is scrubbed."""
    s = scaler(BASE, {"host": "http://rabbit/", "username": "u", "password": PASSWORD})
    token = rabbitmq._basic_auth("u", PASSWORD)
    assert token is not None
    assert token == "Basic dTpwYTU1OlfDtnJkQC9uZXZlci1zaG93bg=="
    with pytest.raises(ScalerQueryError) as info, s._translate_errors():
        raise rabbitmq._HTTPStatusError(400, f"bad {token} {PASSWORD}")
    assert PASSWORD not in str(info.value)
    assert token.removeprefix("Basic ") not in str(info.value)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(b'{"error":"Object Not Found","reason":"Not Found"}', "Not Found", id="json"),
        pytest.param(b'{"error":"not_authorised"}', "not_authorised", id="error-only"),
        pytest.param(b"<html>bad gateway</html>", "<html>bad gateway</html>", id="text"),
        pytest.param(b"x" * 1000, "x" * 300, id="cut"),
    ],
)
def test_error_reason_from_body(body: bytes, reason: str) -> None:
    """The management API's reason, short."""
    assert rabbitmq._reason(body) == reason


# ---------------------------------------------------------------------------------------------
# TLS and SASL EXTERNAL


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
    """ca, cert and key (plain, or encrypted with keyPassword) build a verifying context."""
    plain = {k: tls_material[k] for k in ("ca", "cert", "key")}
    encrypted = {
        "ca": tls_material["ca"],
        "cert": tls_material["cert"],
        "key": tls_material["encrypted_key"],
        "keyPassword": "key-" + PASSWORD,
    }
    for auth in (plain, encrypted):
        cfg = config(BASE, {"host": "amqps://rabbit/", "tls": "enable", **auth})
        context = rabbitmq._tls_context(cfg)
        assert context.verify_mode is ssl.CERT_REQUIRED
        assert context.check_hostname is True
        assert context.minimum_version is ssl.TLSVersion.TLSv1_2


def test_unsafe_ssl_skips_verification_on_any_tls_connection() -> None:
    """unsafeSsl, with or without `tls: enable` (KEDA ignores it for amqps:// without)."""
    for auth in ({}, {"tls": "enable"}):
        for host in ("amqps://rabbit/", "https://rabbit/"):
            cfg = config({**BASE, "unsafeSsl": "true"}, {"host": host, **auth})
            context = rabbitmq._tls_context(cfg)
            assert (context.verify_mode, context.check_hostname) == (ssl.CERT_NONE, False)


def test_bad_key_password_is_a_config_error(tls_material: dict[str, str]) -> None:
    """An encrypted key that does not open is reported when the trigger is read."""
    auth = {
        "host": "amqps://rabbit/",
        "tls": "enable",
        "cert": tls_material["cert"],
        "key": tls_material["encrypted_key"],
        "keyPassword": "wrong",
    }
    message = error(BASE, auth)
    assert message.startswith(
        'auth param "ca", "cert", "key" or "keyPassword" cannot be loaded as TLS material'
    )
    assert "wrong" not in message
    assert "PRIVATE KEY" not in message


@pytest.mark.parametrize(
    ("host", "auth", "external"),
    [
        pytest.param("amqps://rabbit/", {"tls": "enable"}, True, id="cert-no-credentials"),
        pytest.param("amqps://u:p@rabbit/", {"tls": "enable"}, False, id="url-credentials"),
        pytest.param(
            "amqps://rabbit/",
            {"tls": "enable", "username": "u", "password": "p"},
            False,
            id="auth-credentials",
        ),
        pytest.param("amqps://rabbit/", {}, False, id="tls-not-enabled"),
        pytest.param(
            "amqps://u:p@rabbit/?auth_mechanism=EXTERNAL", {}, True, id="asked-in-the-url"
        ),
    ],
)
def test_sasl_external_when_the_certificate_is_the_identity(
    tls_material: dict[str, str], host: str, auth: dict[str, str], external: bool
) -> None:
    """KEDA 2.20: TLS with a client certificate and no credentials logs in with EXTERNAL."""
    material = {k: tls_material[k] for k in ("ca", "cert", "key")}
    s = scaler(BASE, {"host": host, **material, **auth})
    assert isinstance(s.endpoint, BrokerEndpoint)
    assert s.endpoint.external is external
    url = rabbitmq._amqp_url(s.config)
    assert (url.query.get("auth") == "external") is external
    if external:
        assert (url.user, url.password, s.endpoint.username) == (None, None, None)


async def test_building_does_no_io_and_aclose_is_idempotent() -> None:
    """A scaler for an unresolvable host builds, and closing an unused one is harmless."""
    s = scaler(BASE, {"host": "amqp://no-such-host.invalid/"})
    await s.aclose()
    await s.aclose()
