"""kafka without a broker: parameters and KEDA's rules between them, the lag maths (a pure
function, table-tested), the sample it becomes, client construction for every TLS and SASL
setting, the OAuth client-credentials token provider (against a real aiohttp token endpoint on
loopback), secrets kept out of every text, and error translation at the boundary."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiokafka.errors
import pytest
from aiohttp import web
from aiokafka import AIOKafkaClient
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscale.errors import ConfigError, ScalerQueryError, ScalerUnavailableError
from autoscale.scalers import kafka
from autoscale.scalers.base import MetricSample, MetricType
from autoscale.scalers.connections import SharedClients, secret_digest
from autoscale.scalers.kafka import (
    ClientCredentialsTokenProvider,
    KafkaConfig,
    KafkaScaler,
    LagReport,
    OAuthTokenError,
    OffsetsSnapshot,
    Partition,
    PartitionOffsets,
    even_partition_factor,
    lag_from_offsets,
    parse_partition_ids,
    sample_from_report,
)
from tests.testbed.pki import TinyCA

LABEL = "trigger[0] (kafka)"
BASE = {
    "bootstrapServers": "kafka-0:9092,kafka-1:9092",
    "consumerGroup": "workers",
    "topic": "orders",
}
PASSWORD = "pa55-Wörd-never-shown"


def scaler(
    metadata: Mapping[str, str],
    auth: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    warnings: list[str] | None = None,
    *,
    index: int = 0,
    name: str | None = None,
) -> KafkaScaler:
    return KafkaScaler.from_trigger(
        trigger_index=index,
        trigger_name=name,
        metadata=metadata,
        auth_params=auth or {},
        resolved_env=env or {},
        connections=SharedClients(),
        warnings=warnings,
    )


def config(
    metadata: Mapping[str, str],
    auth: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> KafkaConfig:
    return scaler(metadata, auth, env).config


def error(
    metadata: Mapping[str, str],
    auth: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    with pytest.raises(ConfigError) as info:
        scaler(metadata, auth, env)
    message = str(info.value)
    assert message.startswith(f"{LABEL}: ")
    return message.removeprefix(f"{LABEL}: ")


def warnings_of(
    metadata: Mapping[str, str],
    auth: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    out: list[str] = []
    scaler(metadata, auth, env, out)
    assert all(w.startswith(f"{LABEL}: ") for w in out)
    return [w.removeprefix(f"{LABEL}: ") for w in out]


SASL_AUTH = {"sasl": "scram_sha512", "username": "alice", "password": PASSWORD}
OAUTH_AUTH = {
    "sasl": "oauthbearer",
    "username": "client-id",
    "password": PASSWORD,
    "oauthTokenEndpointUri": "https://idp.example/token",
}


# ---------------------------------------------------------------------------------------------
# Parameters


def test_defaults_are_kedas() -> None:
    """Only bootstrapServers and consumerGroup are required; everything else has KEDA's default."""
    parsed = config({"bootstrapServers": "k:9092", "consumerGroup": "g"})
    assert parsed == KafkaConfig(bootstrap_servers=("k:9092",), consumer_group="g")
    assert (parsed.topic, parsed.partition_limitation) == (None, None)
    assert (parsed.lag_threshold, parsed.activation_lag_threshold) == (10, 0)
    assert parsed.offset_reset_policy == "latest"
    assert not any(
        (
            parsed.allow_idle_consumers,
            parsed.exclude_persistent_lag,
            parsed.scale_to_zero_on_invalid_offset,
            parsed.limit_to_partitions_with_lag,
            parsed.ensure_even_distribution_of_partitions,
            parsed.use_tls,
            parsed.unsafe_ssl,
        )
    )
    assert (parsed.sasl_mode, parsed.security_protocol) == ("none", "PLAINTEXT")


@pytest.mark.parametrize(
    ("metadata", "auth", "env", "attr", "expected"),
    [
        pytest.param(
            {}, {}, {}, "bootstrap_servers", ("kafka-0:9092", "kafka-1:9092"), id="servers"
        ),
        pytest.param(
            {"bootstrapServers": " a:1 , ,[::1]:2 "},
            {},
            {},
            "bootstrap_servers",
            ("a:1", "[::1]:2"),
            id="servers-spaces-blanks-ipv6",
        ),
        pytest.param(
            {"bootstrapServers": "", "bootstrapServersFromEnv": "B"},
            {},
            {"B": "e:9093"},
            "bootstrap_servers",
            ("e:9093",),
            id="servers-from-env",
        ),
        pytest.param(
            {"consumerGroup": "", "consumerGroupFromEnv": "G"},
            {},
            {"G": "eg"},
            "consumer_group",
            "eg",
            id="group-from-env",
        ),
        pytest.param(
            {"topic": "", "topicFromEnv": "T"}, {}, {"T": "et"}, "topic", "et", id="topic-from-env"
        ),
        pytest.param({"topic": ""}, {}, {}, "topic", None, id="no-topic"),
        pytest.param({"lagThreshold": "50"}, {}, {}, "lag_threshold", 50, id="lag-threshold"),
        pytest.param(
            {"activationLagThreshold": "3"}, {}, {}, "activation_lag_threshold", 3, id="activation"
        ),
        pytest.param(
            {"offsetResetPolicy": "earliest"},
            {},
            {},
            "offset_reset_policy",
            "earliest",
            id="earliest",
        ),
        pytest.param(
            {"allowIdleConsumers": "true"}, {}, {}, "allow_idle_consumers", True, id="idle"
        ),
        pytest.param(
            {"excludePersistentLag": "1"}, {}, {}, "exclude_persistent_lag", True, id="persistent"
        ),
        pytest.param(
            {"scaleToZeroOnInvalidOffset": "True"},
            {},
            {},
            "scale_to_zero_on_invalid_offset",
            True,
            id="scale-to-zero",
        ),
        pytest.param(
            {"limitToPartitionsWithLag": "true"},
            {},
            {},
            "limit_to_partitions_with_lag",
            True,
            id="limit-to-lag",
        ),
        pytest.param(
            {"ensureEvenDistributionOfPartitions": "true"},
            {},
            {},
            "ensure_even_distribution_of_partitions",
            True,
            id="even",
        ),
        pytest.param(
            {"partitionLimitation": "1,2,10-12,31"},
            {},
            {},
            "partition_limitation",
            (1, 2, 10, 11, 12, 31),
            id="partition-limitation",
        ),
        pytest.param({"tls": "enable"}, {}, {}, "use_tls", True, id="tls-metadata"),
        pytest.param({}, {"tls": "enable"}, {}, "use_tls", True, id="tls-auth"),
        pytest.param(
            {"tls": "disable"}, {"tls": "enable"}, {}, "use_tls", False, id="tls-metadata-wins"
        ),
        pytest.param({"unsafeSsl": "true"}, {}, {}, "unsafe_ssl", True, id="unsafe-ssl"),
        pytest.param(
            {"sasl": "plaintext"}, SASL_AUTH, {}, "sasl_mode", "plaintext", id="sasl-metadata-wins"
        ),
        pytest.param({}, SASL_AUTH, {}, "sasl_mode", "scram_sha512", id="sasl-auth"),
        pytest.param({}, {"sasl": "none"}, {}, "sasl_mode", "none", id="sasl-none"),
        pytest.param({}, SASL_AUTH, {}, "password", PASSWORD, id="password-auth"),
        pytest.param(
            {"password": PASSWORD}, {}, {}, "password", None, id="password-metadata-ignored"
        ),
        pytest.param(
            {}, {**OAUTH_AUTH, "scopes": "a, b,,c"}, {}, "scopes", ("a", "b", "c"), id="scopes"
        ),
        pytest.param(
            {},
            {**OAUTH_AUTH, "oauthExtensions": "logicalCluster=lkc-1, identityPoolId=pool-2"},
            {},
            "oauth_extensions",
            (("logicalCluster", "lkc-1"), ("identityPoolId", "pool-2")),
            id="extensions",
        ),
        pytest.param(
            {"saslTokenProvider": "bearer"},
            OAUTH_AUTH,
            {},
            "sasl_token_provider",
            "bearer",
            id="token-provider",
        ),
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
    ("tls", "sasl", "protocol"),
    [
        pytest.param("disable", "none", "PLAINTEXT", id="plaintext"),
        pytest.param("enable", "none", "SSL", id="ssl"),
        pytest.param("disable", "scram_sha256", "SASL_PLAINTEXT", id="sasl-plaintext"),
        pytest.param("enable", "plaintext", "SASL_SSL", id="sasl-ssl"),
    ],
)
def test_security_protocol(tls: str, sasl: str, protocol: str) -> None:
    """tls and sasl together pick Kafka's listener type."""
    auth = {"username": "u", "password": "p"}
    assert config({**BASE, "tls": tls, "sasl": sasl}, auth).security_protocol == protocol


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("0", (0,), id="one"),
        pytest.param("3,1,2", (1, 2, 3), id="sorted"),
        pytest.param("1,2,10-12,31", (1, 2, 10, 11, 12, 31), id="kedas-example"),
        pytest.param("5-5", (5,), id="range-of-one"),
        pytest.param(" 1 , 2 - 3 ,", (1, 2, 3), id="spaces"),
        pytest.param("1-3,2", (1, 2, 3), id="overlap"),
    ],
)
def test_parse_partition_ids(raw: str, expected: tuple[int, ...]) -> None:
    """Ids and inclusive ranges, as KEDA's partitionLimitation."""
    assert parse_partition_ids(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param("x", '"x" is not a partition id or a range of them (like 10-12)', id="word"),
        pytest.param("-1", '"-1" is not a partition id', id="negative"),
        pytest.param("1-", '"1-" is not a partition id', id="open-range"),
        pytest.param("1-2-3", '"1-2-3" is not a partition id', id="double-range"),
        pytest.param("9-3", 'the range "9-3" is reversed', id="reversed"),
        pytest.param(",", "no partition ids", id="empty"),
        pytest.param("0-9999999999", "more than 100000 partition ids", id="huge-range"),
        pytest.param("0-60000,70000-110000", "more than 100000", id="ranges-add-up"),
    ],
)
def test_parse_partition_ids_errors(raw: str, message: str) -> None:
    """Anything else is refused with the offending item named."""
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        parse_partition_ids(raw)


@pytest.mark.parametrize(
    ("metadata", "auth", "message"),
    [
        pytest.param(
            {"bootstrapServers": ""},
            {},
            'missing required parameter "bootstrapServers" (looked in metadata, env via '
            '"bootstrapServersFromEnv")',
            id="missing-servers",
        ),
        pytest.param(
            {"consumerGroup": ""},
            {},
            'missing required parameter "consumerGroup" (looked in metadata, env via '
            '"consumerGroupFromEnv")',
            id="missing-group",
        ),
        pytest.param(
            {"bootstrapServers": "kafka"},
            {},
            'parameter "bootstrapServers" value "kafka" is invalid: "kafka" is not host:port',
            id="server-without-port",
        ),
        pytest.param(
            {"bootstrapServers": "k:1,k:99999"},
            {},
            'parameter "bootstrapServers" value "k:1,k:99999" is invalid: "k:99999" is not '
            "host:port",
            id="server-port-range",
        ),
        pytest.param(
            {"bootstrapServers": "::1:9092"},
            {},
            "write an IPv6 address in brackets: [::1]:9092",
            id="ipv6-bare",
        ),
        pytest.param(
            {"bootstrapServers": " , "},
            {},
            'parameter "bootstrapServers" value "," is invalid: expected host:port[,host:port...]',
            id="servers-only-commas",
        ),
        pytest.param(
            {"lagThreshold": "ten"},
            {},
            'parameter "lagThreshold" value "ten" is not an integer',
            id="threshold-word",
        ),
        pytest.param(
            {"lagThreshold": "0"},
            {},
            'parameter "lagThreshold" must be greater than 0',
            id="threshold-zero",
        ),
        pytest.param(
            {"lagThreshold": "-5"},
            {},
            'parameter "lagThreshold" must be greater than 0',
            id="threshold-negative",
        ),
        pytest.param(
            {"activationLagThreshold": "-1"},
            {},
            'parameter "activationLagThreshold" must not be negative',
            id="activation-negative",
        ),
        pytest.param(
            {"activationLagThreshold": "0.5"},
            {},
            'parameter "activationLagThreshold" value "0.5" is not an integer',
            id="activation-float",
        ),
        pytest.param(
            {"offsetResetPolicy": "newest"},
            {},
            'parameter "offsetResetPolicy" value "newest" must be one of "latest", "earliest"',
            id="policy",
        ),
        pytest.param(
            {"allowIdleConsumers": "yes"},
            {},
            'parameter "allowIdleConsumers" value "yes" is not a boolean (true or false)',
            id="bool-word",
        ),
        pytest.param(
            {"partitionLimitation": "1,x"},
            {},
            'parameter "partitionLimitation" value "1,x" is invalid: "x" is not a partition id '
            "or a range of them (like 10-12)",
            id="limitation-word",
        ),
        pytest.param(
            {"partitionLimitation": "12-10"},
            {},
            'parameter "partitionLimitation" value "12-10" is invalid: the range "12-10" is '
            "reversed",
            id="limitation-reversed",
        ),
        pytest.param(
            {"allowIdleConsumers": "true", "limitToPartitionsWithLag": "true"},
            {},
            'parameters "allowIdleConsumers" and "limitToPartitionsWithLag" cannot both be true',
            id="idle-and-limit",
        ),
        pytest.param(
            {"limitToPartitionsWithLag": "true", "ensureEvenDistributionOfPartitions": "true"},
            {},
            'parameters "limitToPartitionsWithLag" and "ensureEvenDistributionOfPartitions" '
            "cannot both be true",
            id="limit-and-even",
        ),
        pytest.param(
            {"topic": "", "limitToPartitionsWithLag": "true"},
            {},
            'parameter "limitToPartitionsWithLag" needs "topic"',
            id="limit-without-topic",
        ),
        pytest.param(
            {"topic": "", "ensureEvenDistributionOfPartitions": "true"},
            {},
            'parameter "ensureEvenDistributionOfPartitions" needs "topic"',
            id="even-without-topic",
        ),
        pytest.param(
            {"tls": "on"},
            {},
            'parameter "tls" value "on" must be one of "enable", "disable"',
            id="tls-word",
        ),
        pytest.param(
            {},
            {"tls": "on"},
            'parameter "tls" must be one of "enable", "disable" (value not shown)',
            id="tls-auth-word-hidden",
        ),
        pytest.param(
            {"unsafeSsl": "maybe"},
            {},
            'parameter "unsafeSsl" value "maybe" is not a boolean',
            id="unsafe-word",
        ),
        pytest.param(
            {"tls": "enable"},
            {"cert": "-----BEGIN CERTIFICATE-----"},
            'auth param "cert" needs "key" too',
            id="cert-without-key",
        ),
        pytest.param(
            {"tls": "enable"},
            {"key": "-----BEGIN PRIVATE KEY-----"},
            'auth param "key" needs "cert" too',
            id="key-without-cert",
        ),
        pytest.param(
            {}, {"ca": "not pem"}, 'parameter "ca" is invalid (value not shown)', id="ca-not-pem"
        ),
        pytest.param(
            {"tls": "enable"},
            {"ca": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
            'auth param "ca" cannot be loaded as TLS material',
            id="ca-bad-pem",
        ),
        pytest.param(
            {"sasl": "kerberos"},
            {},
            'parameter "sasl" value "kerberos" must be one of "none", "plaintext", '
            '"scram_sha256", "scram_sha512", "oauthbearer", "gssapi"',
            id="sasl-word",
        ),
        pytest.param(
            {"sasl": "plaintext"},
            {},
            'sasl "plaintext" needs auth param "username"; '
            'sasl "plaintext" needs auth param "password"',
            id="plain-without-credentials",
        ),
        pytest.param(
            {},
            {"sasl": "scram_sha256", "username": "u"},
            'sasl "scram_sha256" needs auth param "password"',
            id="scram-without-password",
        ),
        pytest.param(
            {},
            {"sasl": "oauthbearer", "username": "u", "password": "p"},
            'sasl "oauthbearer" needs auth param "oauthTokenEndpointUri"',
            id="oauth-without-endpoint",
        ),
        pytest.param(
            {},
            {**OAUTH_AUTH, "oauthTokenEndpointUri": "idp.example/token"},
            'auth param "oauthTokenEndpointUri" must be an http(s) URL',
            id="oauth-endpoint-not-url",
        ),
        pytest.param(
            {},
            {**OAUTH_AUTH, "oauthExtensions": f"a={PASSWORD}=x"},
            'parameter "oauthExtensions" is invalid (value not shown)',
            id="oauth-extensions-hidden",
        ),
        pytest.param(
            {"saslTokenProvider": "aws_msk_iam", "awsRegion": "eu-west-1", "tls": "enable"},
            {"sasl": "oauthbearer"},
            'saslTokenProvider "aws_msk_iam" is not supported; use "bearer"',
            id="msk-iam-unsupported",
        ),
        pytest.param(
            {"sasl": "gssapi"},
            {"username": "u", "password": "p", "realm": "R", "kerberosConfig": "x"},
            'sasl "gssapi" is not supported: aiokafka takes Kerberos from a process-wide setup, '
            "not from a trigger",
            id="gssapi-unsupported",
        ),
        pytest.param(
            {"saslTokenProvider": "iam"},
            OAUTH_AUTH,
            'parameter "saslTokenProvider" value "iam" must be one of "bearer", "aws_msk_iam"',
            id="token-provider-word",
        ),
    ],
)
def test_errors_name_the_field(
    metadata: dict[str, str], auth: dict[str, str], message: str
) -> None:
    """Each bad parameter gives a ConfigError with a fixed wording, prefixed by the trigger."""
    assert message in error({**BASE, **metadata}, auth)


def test_every_error_is_reported_at_once() -> None:
    """Field errors are collected into one message; cross-field rules come after them."""
    assert error({"bootstrapServers": "k", "lagThreshold": "x"}) == (
        'parameter "bootstrapServers" value "k" is invalid: "k" is not host:port; '
        'missing required parameter "consumerGroup" (looked in metadata, env via '
        '"consumerGroupFromEnv"); '
        'parameter "lagThreshold" value "x" is not an integer'
    )
    assert error(
        {**BASE, "topic": "", "lagThreshold": "0", "limitToPartitionsWithLag": "true"},
        {"sasl": "plaintext"},
    ) == (
        'parameter "lagThreshold" must be greater than 0; '
        'parameter "limitToPartitionsWithLag" needs "topic"; '
        'sasl "plaintext" needs auth param "username"; '
        'sasl "plaintext" needs auth param "password"'
    )


def test_error_names_trigger_by_index_and_name() -> None:
    """The label carries the index and the trigger's name."""
    with pytest.raises(ConfigError, match=r'^trigger\[3\] "orders" \(kafka\): missing'):
        scaler({"bootstrapServers": "k:1"}, index=3, name="orders")


@pytest.mark.parametrize(
    ("metadata", "auth", "expected"),
    [
        pytest.param({}, {}, [], id="none"),
        pytest.param(
            {"topic": "", "partitionLimitation": "1"},
            {},
            ['parameter "partitionLimitation" is ignored without "topic"'],
            id="limitation-without-topic",
        ),
        pytest.param(
            {"tls": "enable"},
            {"tls": "disable"},
            ['parameter "tls" is set in metadata and in auth params; the metadata value is used'],
            id="tls-twice",
        ),
        pytest.param(
            {"sasl": "scram_sha512"},
            SASL_AUTH,
            ['parameter "sasl" is set in metadata and in auth params; the metadata value is used'],
            id="sasl-twice",
        ),
        pytest.param(
            {"version": "2.8.0"},
            {},
            ['parameter "version" is ignored: the protocol version is negotiated with the brokers'],
            id="version",
        ),
        pytest.param(
            {"fullMetadata": "false"},
            {},
            [
                'parameter "fullMetadata" is ignored: polls ask for the metadata of their own '
                "topics only"
            ],
            id="full-metadata",
        ),
        pytest.param(
            {"awsRegion": "eu-west-1"},
            {},
            ['parameter "awsRegion" is ignored: AWS MSK IAM is not supported'],
            id="aws-region",
        ),
        pytest.param(
            {"unsafeSsl": "true"},
            {"ca": "-----BEGIN x", "keyPassword": "k"},
            ['TLS is off: "ca", "keyPassword", "unsafeSsl" ignored'],
            id="tls-off",
        ),
        pytest.param(
            {},
            {"username": "u", "password": PASSWORD},
            ['SASL is off: "username", "password" ignored'],
            id="sasl-off",
        ),
        pytest.param(
            {"saslTokenProvider": "bearer"},
            {**SASL_AUTH, "scopes": "a"},
            ['"scopes", "saslTokenProvider" ignored: they apply to sasl "oauthbearer" only'],
            id="oauth-params-without-oauth",
        ),
        pytest.param(
            {},
            {**SASL_AUTH, "sasl": "plaintext"},
            ['sasl "plaintext" without TLS sends the password unencrypted; set "tls: enable"'],
            id="plain-without-tls",
        ),
        pytest.param(
            {},
            OAUTH_AUTH,
            ['sasl "oauthbearer" without TLS sends the OAuth token unencrypted; set "tls: enable"'],
            id="oauth-without-tls",
        ),
        pytest.param(
            {"tls": "enable"}, {**SASL_AUTH, "sasl": "plaintext"}, [], id="plain-with-tls"
        ),
        pytest.param(
            {"password": PASSWORD},
            {},
            ['parameter "password" is ignored in metadata; it is read from auth params'],
            id="plaintext-password-in-metadata",
        ),
        pytest.param(
            {"lagTreshold": "5"},
            {},
            ['unknown parameter "lagTreshold" (did you mean "lagThreshold"?)'],
            id="unknown",
        ),
    ],
)
def test_warnings(metadata: dict[str, str], auth: dict[str, str], expected: list[str]) -> None:
    """What KEDA silently ignores is accepted, with a warning saying so."""
    assert warnings_of({**BASE, **metadata}, auth) == expected


@pytest.mark.parametrize(
    ("metadata", "index", "name"),
    [
        pytest.param({}, 0, "s0-kafka-orders", id="topic"),
        pytest.param({"topic": "orders.v1/eu:1%"}, 2, "s2-kafka-orders-v1-eu-1-", id="normalised"),
        pytest.param({"topic": ""}, 1, "s1-kafka-workers-topics", id="no-topic"),
        pytest.param(
            {"topic": "", "consumerGroup": "app.workers"},
            0,
            "s0-kafka-app-workers-topics",
            id="dots",
        ),
    ],
)
def test_metric_name_is_kedas(metadata: dict[str, str], index: int, name: str) -> None:
    """s{index}-kafka-{topic}, or s{index}-kafka-{group}-topics without a topic."""
    assert scaler({**BASE, **metadata}, index=index).metric_name == name


# ---------------------------------------------------------------------------------------------
# Lag maths (pure)

T = "orders"


def snap(*rows: tuple[int, int, int | None] | tuple[int, int, int | None, int]) -> OffsetsSnapshot:
    """Partitions of topic T: (partition, end, committed[, start])."""
    partitions = {}
    for row in rows:
        start = row[3] if len(row) == 4 else None
        partitions[Partition(T, row[0])] = PartitionOffsets(
            end=row[1], committed=row[2], start=start
        )
    return OffsetsSnapshot(partitions)


def cfg(**metadata: str) -> KafkaConfig:
    return config({**BASE, **metadata})


@dataclass(frozen=True)
class Expect:
    value: int
    lag_with_persistent: int
    cap: int | None
    active: bool
    with_lag: int = 0
    partitions: int = 3
    extra: dict[str, Any] = field(default_factory=dict)


@pytest.mark.parametrize(
    ("metadata", "snapshot", "expected"),
    [
        pytest.param(
            {}, snap((0, 10, 4), (1, 5, 5), (2, 3, 0)), Expect(9, 9, 3, True, 2), id="sum"
        ),
        pytest.param(
            {}, snap((0, 10, 10), (1, 5, 5), (2, 0, 0)), Expect(0, 0, 3, False, 0), id="caught-up"
        ),
        pytest.param(
            {},
            snap((0, 10, 12), (1, 5, 5), (2, 3, 1)),
            Expect(2, 2, 3, True, 1),
            id="negative-lag-is-0",
        ),
        # No committed offset: KEDA's three answers.
        pytest.param(
            {},
            snap((0, 10, None), (1, 5, 5), (2, 3, 3)),
            Expect(1, 1, 3, True, 1),
            id="latest-invalid-is-1",
        ),
        pytest.param(
            {"scaleToZeroOnInvalidOffset": "true"},
            snap((0, 10, None), (1, 5, 5), (2, 3, 3)),
            Expect(0, 0, 3, False, 0),
            id="latest-invalid-scale-to-zero",
        ),
        pytest.param(
            {"offsetResetPolicy": "earliest"},
            snap((0, 10, None, 0), (1, 5, 5), (2, 3, None, 1)),
            Expect(12, 12, 3, True, 2),
            id="earliest-invalid-end-minus-start",
        ),
        pytest.param(
            {"offsetResetPolicy": "earliest"},
            snap((0, 10, None, 10), (1, 5, 5), (2, 3, 3)),
            Expect(0, 0, 3, False, 0),
            id="earliest-invalid-all-retention-deleted",
        ),
        pytest.param(
            {"offsetResetPolicy": "earliest", "scaleToZeroOnInvalidOffset": "true"},
            snap((0, 10, None), (1, 5, 5), (2, 3, 3)),
            Expect(0, 0, 3, False, 0),
            id="earliest-invalid-scale-to-zero",
        ),
        # Activation.
        pytest.param(
            {"activationLagThreshold": "9"},
            snap((0, 10, 4), (1, 5, 5), (2, 3, 0)),
            Expect(9, 9, 3, False, 2),
            id="activation-not-above",
        ),
        pytest.param(
            {"activationLagThreshold": "8"},
            snap((0, 10, 4), (1, 5, 5), (2, 3, 0)),
            Expect(9, 9, 3, True, 2),
            id="activation-above",
        ),
        # Caps.
        pytest.param(
            {"allowIdleConsumers": "true"},
            snap((0, 100, 0), (1, 100, 0), (2, 100, 0)),
            Expect(300, 300, None, True, 3),
            id="idle-consumers-no-cap",
        ),
        pytest.param(
            {"limitToPartitionsWithLag": "true"},
            snap((0, 100, 0), (1, 5, 5), (2, 3, 3)),
            Expect(100, 100, 1, True, 1),
            id="cap-partitions-with-lag",
        ),
        pytest.param(
            {"limitToPartitionsWithLag": "true"},
            snap((0, 5, 5), (1, 5, 5), (2, 3, 3)),
            Expect(0, 0, 0, False, 0),
            id="cap-no-partitions-with-lag",
        ),
        pytest.param(
            {"limitToPartitionsWithLag": "true"},
            snap((0, 10, None), (1, 5, 5), (2, 3, 3)),
            Expect(1, 1, 1, True, 1),
            id="cap-invalid-offset-counts-as-lag",
        ),
        # Even distribution: 3 partitions -> 1 or 3 replicas.
        pytest.param(
            {"ensureEvenDistributionOfPartitions": "true"},
            snap((0, 5, 0), (1, 5, 0), (2, 5, 0)),
            Expect(30, 15, 3, True, 3),
            id="even-15-on-3-partitions-is-3x10",
        ),
        pytest.param(
            {"ensureEvenDistributionOfPartitions": "true"},
            snap((0, 4, 0), (1, 3, 0), (2, 3, 0)),
            Expect(10, 10, 3, True, 3),
            id="even-10-is-1x10",
        ),
        pytest.param(
            {"ensureEvenDistributionOfPartitions": "true"},
            snap((0, 0, 0), (1, 0, 0), (2, 0, 0)),
            Expect(0, 0, 3, False, 0),
            id="even-0-stays-0",
        ),
        pytest.param(
            {"ensureEvenDistributionOfPartitions": "true", "allowIdleConsumers": "true"},
            snap((0, 500, 0), (1, 0, 0), (2, 0, 0)),
            Expect(30, 500, 3, True, 1),
            id="even-caps-even-with-idle-consumers",
        ),
        pytest.param({}, OffsetsSnapshot(), Expect(0, 0, 0, False, 0, partitions=0), id="nothing"),
    ],
)
def test_lag_from_offsets(
    metadata: dict[str, str], snapshot: OffsetsSnapshot, expected: Expect
) -> None:
    """Per-partition lag, KEDA's invalid-offset policies, activation and the replica caps."""
    report = lag_from_offsets(snapshot, cfg(**metadata))
    assert (
        report.value,
        report.lag_with_persistent,
        report.replica_cap,
        report.active,
        report.partitions_with_lag,
        report.partitions,
    ) == (
        expected.value,
        expected.lag_with_persistent,
        expected.cap,
        expected.active,
        expected.with_lag,
        expected.partitions,
    )


def test_per_partition_lag_and_committed_offsets_are_reported() -> None:
    """The report names each partition's scaling lag, and remembers only real commits."""
    report = lag_from_offsets(snap((0, 10, 4), (1, 5, None), (2, 3, 3)), cfg())
    assert report.per_partition == {Partition(T, 0): 6, Partition(T, 1): 1, Partition(T, 2): 0}
    assert report.committed == {Partition(T, 0): 4, Partition(T, 2): 3}


def test_earliest_needs_the_start_offset() -> None:
    """A snapshot lacking the start offset the policy needs is a programming error."""
    with pytest.raises(ValueError, match="lacks the start offset of"):
        lag_from_offsets(snap((0, 10, None)), cfg(offsetResetPolicy="earliest"))


def test_persistent_lag_is_excluded_from_scaling_but_keeps_activity() -> None:
    """excludePersistentLag: a partition whose committed offset did not move since the previous
    poll adds nothing to the value, but its lag still activates; once it moves, it counts."""
    config_ = cfg(excludePersistentLag="true", activationLagThreshold="5")
    first = lag_from_offsets(snap((0, 10, 4), (1, 20, 10), (2, 3, None)), config_)
    assert (first.value, first.lag_with_persistent) == (17, 17)  # no previous poll: all counts
    stuck = lag_from_offsets(snap((0, 12, 4), (1, 20, 15), (2, 3, None)), config_, first.committed)
    assert stuck.per_partition == {Partition(T, 0): 0, Partition(T, 1): 5, Partition(T, 2): 1}
    assert (stuck.value, stuck.lag_with_persistent, stuck.active) == (6, 14, True)
    assert stuck.partitions_with_lag == 2
    moved = lag_from_offsets(snap((0, 12, 5), (1, 20, 15), (2, 3, None)), config_, stuck.committed)
    assert moved.per_partition == {Partition(T, 0): 7, Partition(T, 1): 0, Partition(T, 2): 1}
    assert (moved.value, moved.lag_with_persistent) == (8, 13)


def test_persistent_lag_alone_keeps_the_trigger_active_at_value_zero() -> None:
    """Every partition stuck: value 0, yet active (so a stuck workload is not scaled to zero)."""
    config_ = cfg(excludePersistentLag="true")
    previous = {Partition(T, 0): 4}
    report = lag_from_offsets(snap((0, 10, 4)), config_, previous)
    assert (report.value, report.lag_with_persistent, report.active) == (0, 6, True)


def test_previous_offsets_are_ignored_without_exclude_persistent_lag() -> None:
    """The default counts a stuck partition like any other (KEDA)."""
    report = lag_from_offsets(snap((0, 10, 4)), cfg(), {Partition(T, 0): 4})
    assert report.value == 6


@pytest.mark.parametrize(
    ("lag", "partitions", "threshold", "factor"),
    [
        # KEDA's documented example: 10 partitions, lagThreshold 10.
        *(pytest.param(lag, 10, 10, 1, id=f"10p-lag{lag}") for lag in (0, 1, 10)),
        *(pytest.param(lag, 10, 10, 2, id=f"10p-lag{lag}") for lag in (11, 20)),
        *(pytest.param(lag, 10, 10, 5, id=f"10p-lag{lag}") for lag in (21, 50)),
        *(pytest.param(lag, 10, 10, 10, id=f"10p-lag{lag}") for lag in (51, 100, 10_000)),
        pytest.param(7, 7, 1, 7, id="prime"),
        pytest.param(25, 12, 5, 6, id="12-partitions"),
        pytest.param(5, 0, 10, 0, id="no-partitions"),
    ],
)
def test_even_partition_factor(lag: int, partitions: int, threshold: int, factor: int) -> None:
    """The smallest divisor of the partition count whose replicas take the lag."""
    assert even_partition_factor(lag, partitions, threshold) == factor


# ---------------------------------------------------------------------------------------------
# Report -> sample


def report(value: int, with_persistent: int, active: bool, cap: int | None = 3) -> LagReport:
    return LagReport(
        lag=value,
        lag_with_persistent=with_persistent,
        value=value,
        partitions=3,
        partitions_with_lag=0,
        replica_cap=cap,
        active=active,
        committed={},
        per_partition={},
    )


def test_sample_carries_target_activation_type_and_cap() -> None:
    """Value, lagThreshold, activationLagThreshold, the metric type and the replica cap."""
    config_ = cfg(lagThreshold="20", activationLagThreshold="3")
    sample = sample_from_report(
        report(42, 42, True, cap=3), config_, name="s1-kafka-orders", metric_type=MetricType.VALUE
    )
    assert sample == MetricSample(
        name="s1-kafka-orders",
        value=42.0,
        target=20.0,
        activation_target=3.0,
        metric_type=MetricType.VALUE,
        replica_cap=3,
    )


@pytest.mark.parametrize(
    ("value", "with_persistent", "active", "activation_target"),
    [
        pytest.param(0, 6, True, -1.0, id="persistent-lag-activates-at-value-0"),
        pytest.param(2, 6, True, 1.0, id="persistent-lag-activates-below-threshold"),
        pytest.param(30, 4, False, 30.0, id="rounded-up-value-stays-inactive"),
        pytest.param(8, 8, True, 5.0, id="agreeing-keeps-the-threshold"),
        pytest.param(5, 5, False, 5.0, id="agreeing-inactive"),
    ],
)
def test_sample_activity_is_the_reports(
    value: int, with_persistent: int, active: bool, activation_target: float
) -> None:
    """Where the scaling value and the lag with persistent partitions disagree about
    activity, the activation target moves so that value > target tells the report's answer."""
    sample = sample_from_report(
        report(value, with_persistent, active), cfg(activationLagThreshold="5"), name="m"
    )
    assert sample.activation_target == activation_target
    assert (sample.value > sample.activation_target) is active


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 1000), st.none() | st.integers(0, 1200), st.integers(0, 1000)),
        max_size=12,
    ),
    stuck=st.lists(st.booleans(), min_size=12, max_size=12),
    threshold=st.integers(1, 50),
    activation=st.integers(0, 200),
    flags=st.sets(
        st.sampled_from(
            [
                "excludePersistentLag",
                "scaleToZeroOnInvalidOffset",
                "allowIdleConsumers",
                "limitToPartitionsWithLag",
                "ensureEvenDistributionOfPartitions",
            ]
        )
    ),
    earliest=st.booleans(),
)
def test_lag_properties(
    rows: list[tuple[int, int | None, int]],
    stuck: list[bool],
    threshold: int,
    activation: int,
    flags: set[str],
    earliest: bool,
) -> None:
    """For any offsets and settings: lags are never negative, persistent lag only removes,
    the cap bounds the replicas an AverageValue target asks for, even distribution gives a
    divisor of the partition count, and the sample's activity is the report's."""
    if {"limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions"} <= flags:
        flags.discard("ensureEvenDistributionOfPartitions")
    if {"limitToPartitionsWithLag", "allowIdleConsumers"} <= flags:
        flags.discard("allowIdleConsumers")
    metadata = dict.fromkeys(flags, "true")
    metadata |= {"lagThreshold": str(threshold), "activationLagThreshold": str(activation)}
    if earliest:
        metadata["offsetResetPolicy"] = "earliest"
    config_ = cfg(**metadata)
    snapshot = OffsetsSnapshot(
        {
            Partition(T, i): PartitionOffsets(end=end + start, committed=committed, start=start)
            for i, (end, committed, start) in enumerate(rows)
        }
    )
    previous = {
        Partition(T, i): committed
        for i, (_, committed, _) in enumerate(rows)
        if committed is not None and stuck[i]
    }
    result = lag_from_offsets(snapshot, config_, previous)
    assert all(lag >= 0 for lag in result.per_partition.values())
    assert 0 <= result.lag <= result.lag_with_persistent
    assert result.lag == sum(result.per_partition.values())
    assert result.partitions == len(rows)
    if "excludePersistentLag" not in flags:
        assert result.lag == result.lag_with_persistent
    if result.replica_cap is not None and result.partitions:
        assert result.replica_cap <= result.partitions
    if "ensureEvenDistributionOfPartitions" in flags and result.value:
        replicas = result.value // threshold
        assert result.value % threshold == 0
        assert result.partitions % replicas == 0
        assert result.value >= min(result.lag, result.partitions * threshold)
    sample = sample_from_report(result, config_, name="m")
    assert (sample.value > sample.activation_target) is result.active
    assert result.active is (result.lag_with_persistent > activation)


# ---------------------------------------------------------------------------------------------
# Secrets, client keys and client construction


def test_secrets_stay_out_of_reprs_and_keys() -> None:
    """Passwords, key passwords and OAuth extensions appear in no repr, str or client key."""
    s = scaler(
        {**BASE, "tls": "enable", "unsafeSsl": "true"},
        {**OAUTH_AUTH, "keyPassword": "key-" + PASSWORD, "oauthExtensions": f"x={PASSWORD}"},
    )
    texts = [repr(s), repr(s.config), repr(s.endpoint), str(s.endpoint)]
    assert s.config.password == PASSWORD
    for text in texts:
        assert PASSWORD not in text
    assert s.endpoint.password_digest == secret_digest(PASSWORD)
    assert s.endpoint.password_digest != hashlib.sha256(PASSWORD.encode()).hexdigest()
    assert str(s.endpoint) == "sasl_ssl://client-id@kafka-0:9092,kafka-1:9092"


def test_endpoints_share_exactly_when_everything_matches() -> None:
    """Same servers (in any order), TLS and SASL settings and credentials: one key; any
    difference: another. What to read (group, topic, thresholds) does not matter."""
    one = scaler(BASE, SASL_AUTH).endpoint
    same = [
        scaler({**BASE, "topic": "other", "consumerGroup": "g2"}, SASL_AUTH),
        scaler({**BASE, "bootstrapServers": "kafka-1:9092, kafka-0:9092"}, SASL_AUTH),
        scaler({**BASE, "lagThreshold": "3", "excludePersistentLag": "true"}, SASL_AUTH),
    ]
    assert all(s.endpoint == one for s in same)
    differing = [
        scaler(BASE, {**SASL_AUTH, "password": PASSWORD + "!"}),
        scaler(BASE, {**SASL_AUTH, "username": "bob"}),
        scaler(BASE, {**SASL_AUTH, "sasl": "scram_sha256"}),
        scaler(BASE),
        scaler({**BASE, "bootstrapServers": "kafka-0:9092"}, SASL_AUTH),
        scaler({**BASE, "tls": "enable"}, SASL_AUTH),
        scaler({**BASE, "tls": "enable", "unsafeSsl": "true"}, SASL_AUTH),
        scaler(BASE, OAUTH_AUTH),
        scaler(BASE, {**OAUTH_AUTH, "scopes": "kafka"}),
        scaler(BASE, {**OAUTH_AUTH, "oauthExtensions": "a=b"}),
    ]
    keys = {one, *(s.endpoint for s in differing)}
    assert len(keys) == 1 + len(differing)


@pytest.mark.parametrize(
    ("metadata", "auth", "expected"),
    [
        pytest.param({}, {}, {"security_protocol": "PLAINTEXT"}, id="plaintext"),
        pytest.param(
            {"sasl": "plaintext"},
            {"username": "alice", "password": PASSWORD},
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "PLAIN",
                "sasl_plain_username": "alice",
                "sasl_plain_password": PASSWORD,
            },
            id="sasl-plain",
        ),
        pytest.param(
            {"tls": "enable"},
            {"sasl": "scram_sha256", "username": "alice", "password": PASSWORD},
            {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-256",
                "sasl_plain_username": "alice",
                "sasl_plain_password": PASSWORD,
            },
            id="scram-256-tls",
        ),
        pytest.param(
            {},
            SASL_AUTH,
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_plain_username": "alice",
                "sasl_plain_password": PASSWORD,
            },
            id="scram-512",
        ),
        pytest.param(
            {"tls": "enable"},
            OAUTH_AUTH,
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER"},
            id="oauthbearer",
        ),
        pytest.param({"tls": "enable"}, {}, {"security_protocol": "SSL"}, id="ssl"),
    ],
)
async def test_client_options_build_an_aiokafka_client(
    metadata: dict[str, str], auth: dict[str, str], expected: dict[str, Any]
) -> None:
    """Each TLS and SASL setting becomes aiokafka's arguments, which aiokafka accepts (the
    client is only constructed: nothing connects)."""
    config_ = config({**BASE, **metadata}, auth)
    provider = kafka._token_provider(config_)
    options = kafka._client_options(config_, provider)
    assert {k: options[k] for k in expected} == expected
    assert options["bootstrap_servers"] == ["kafka-0:9092", "kafka-1:9092"]
    assert options["request_timeout_ms"] == 3000
    assert ("ssl_context" in options) is config_.use_tls
    assert options.get("sasl_oauth_token_provider") is provider
    if provider is not None:
        assert isinstance(provider, ClientCredentialsTokenProvider)
        assert PASSWORD not in repr(provider)
    client = AIOKafkaClient(**options)
    assert client._security_protocol == expected["security_protocol"]
    await client.close()


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
    """ca, cert and key (plain, or encrypted with keyPassword) build a verifying TLS context."""
    plain = {k: tls_material[k] for k in ("ca", "cert", "key")}
    encrypted = {
        "ca": tls_material["ca"],
        "cert": tls_material["cert"],
        "key": tls_material["encrypted_key"],
        "keyPassword": "key-" + PASSWORD,
        "tls": "enable",
    }
    for metadata, auth in (({"tls": "enable"}, plain), ({}, encrypted)):
        context = kafka._tls_context(config({**BASE, **metadata}, auth))
        assert context.verify_mode is ssl.CERT_REQUIRED
        assert context.check_hostname is True
        assert context.minimum_version is ssl.TLSVersion.TLSv1_2


def test_unsafe_ssl_skips_verification() -> None:
    """unsafeSsl: no chain or hostname check, as KEDA's InsecureSkipVerify."""
    context = kafka._tls_context(config({**BASE, "tls": "enable", "unsafeSsl": "true"}))
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
    """An encrypted key that does not open is reported when the trigger is read, naming the
    fields only."""
    auth = {"cert": tls_material["cert"], "key": tls_material["encrypted_key"], **auth}
    message = error({**BASE, "tls": "enable"}, auth)
    assert message.startswith(
        'auth param "ca", "cert", "key" or "keyPassword" cannot be loaded as TLS material'
    )
    assert "wrong" not in message
    assert "PRIVATE KEY" not in message


def test_mismatched_cert_and_key(tls_material: dict[str, str]) -> None:
    """A key that does not belong to the certificate is refused."""
    other = TinyCA("other").issue("x").key_pem.decode()
    message = error({**BASE, "tls": "enable"}, {"cert": tls_material["cert"], "key": other})
    assert "cannot be loaded as TLS material" in message


def test_tls_material_is_not_checked_while_tls_is_off() -> None:
    """KEDA reads ca/cert/key only with tls enabled; so do we (with a warning)."""
    assert not config(BASE, {"ca": "-----BEGIN CERTIFICATE-----\nAAAA\n"}).use_tls


# ---------------------------------------------------------------------------------------------
# OAuth client credentials, against a real token endpoint on loopback


@dataclass
class TokenEndpoint:
    """An aiohttp token endpoint: records requests, answers from a script."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    answers: list[tuple[int, Any]] = field(default_factory=list)
    issued: int = 0
    basic_only: bool = False  # refuse credentials in the body
    body_only: bool = False  # refuse the Basic header

    async def handle(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        header = request.headers.get("Authorization", "")
        self.requests.append({"form": form, "authorization": header})
        if self.answers:
            status, body = self.answers.pop(0)
            return web.json_response(body, status=status)
        via_header = header.startswith("Basic ")
        if (self.basic_only and not via_header) or (self.body_only and via_header):
            return web.json_response({"error": "invalid_client"}, status=401)
        if via_header:
            user, _, secret = base64.b64decode(header[6:]).decode().partition(":")
            user, secret = urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(secret)
        else:
            user, secret = str(form.get("client_id")), str(form.get("client_secret"))
        if (user, secret) != ("client-id", PASSWORD):
            return web.json_response({"error": "invalid_client"}, status=401)
        self.issued += 1
        return web.json_response({"access_token": f"token-{self.issued}", "expires_in": 3600})


@pytest.fixture
async def endpoint() -> AsyncIterator[TokenEndpoint]:
    state = TokenEndpoint()
    app = web.Application()
    app.router.add_post("/token", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}/token"
    yield state
    await runner.cleanup()


def provider_for(endpoint: TokenEndpoint, **auth: str) -> ClientCredentialsTokenProvider:
    config_ = config(BASE, {**OAUTH_AUTH, "oauthTokenEndpointUri": endpoint.url, **auth})
    provider = kafka._token_provider(config_)
    assert provider is not None
    return provider


async def test_token_is_fetched_with_client_credentials_and_cached(
    endpoint: TokenEndpoint,
) -> None:
    """grant_type=client_credentials, the scopes space-separated, the client id and secret in
    a Basic header; the token is reused until it is about to expire."""
    provider = provider_for(endpoint, scopes="kafka,read", oauthExtensions="logicalCluster=lkc-1")
    try:
        assert await provider.token() == "token-1"
        assert await provider.token() == "token-1"
        [request] = endpoint.requests
        assert request["form"] == {"grant_type": "client_credentials", "scope": "kafka read"}
        expected = base64.b64encode(
            f"client-id:{urllib.parse.quote_plus(PASSWORD)}".encode()
        ).decode()
        assert request["authorization"] == f"Basic {expected}"
        assert provider.extensions() == {"logicalCluster": "lkc-1"}
        provider._expires_at = 0.0  # as if expired
        assert await provider.token() == "token-2"
    finally:
        await provider.aclose()


async def test_concurrent_connections_fetch_one_token(endpoint: TokenEndpoint) -> None:
    """Several connections authenticating at once share one token request."""
    provider = provider_for(endpoint)
    try:
        tokens = await asyncio.gather(*(provider.token() for _ in range(5)))
        assert set(tokens) == {"token-1"}
        assert len(endpoint.requests) == 1
    finally:
        await provider.aclose()


async def test_credentials_move_to_the_body_when_the_header_is_refused(
    endpoint: TokenEndpoint,
) -> None:
    """A 4xx to the Basic header is retried once with the credentials in the form body."""
    endpoint.body_only = True
    provider = provider_for(endpoint)
    try:
        assert await provider.token() == "token-1"
        assert [r["authorization"] for r in endpoint.requests] == [
            endpoint.requests[0]["authorization"],
            "",
        ]
        assert endpoint.requests[1]["form"]["client_secret"] == PASSWORD
    finally:
        await provider.aclose()


async def test_token_lifetime_is_respected(endpoint: TokenEndpoint) -> None:
    """A token whose lifetime is within the early-refresh margin is fetched again each time."""
    endpoint.answers = [
        (200, {"access_token": "short", "expires_in": 5}),
        (200, {"access_token": "next", "expires_in": 5}),
    ]
    provider = provider_for(endpoint)
    try:
        assert await provider.token() == "short"
        assert await provider.token() == "next"
    finally:
        await provider.aclose()


@pytest.mark.parametrize(
    ("answers", "rejected", "message"),
    [
        pytest.param(
            [(401, {"error": "invalid_client"}), (401, {"error": "invalid_client"})],
            True,
            "answered HTTP 401",
            id="rejected",
        ),
        pytest.param([(503, {})], False, "answered HTTP 503", id="server-error"),
        pytest.param(
            [(200, {"token_type": "bearer"})],
            True,
            "answered without an access_token",
            id="no-token",
        ),
        pytest.param(
            [(200, ["not", "an", "object"])], True, "without an access_token", id="not-json-object"
        ),
    ],
)
async def test_token_endpoint_failures(
    endpoint: TokenEndpoint, answers: list[tuple[int, Any]], rejected: bool, message: str
) -> None:
    """Failures are OAuthTokenErrors (KafkaErrors, so aiokafka treats them as a failed
    connection), remembered for the scaler's message, without any secret."""
    endpoint.answers = answers
    provider = provider_for(endpoint)
    try:
        with pytest.raises(OAuthTokenError) as info:
            await provider.token()
        assert isinstance(info.value, aiokafka.errors.KafkaError)
        assert info.value.rejected is rejected
        assert message in str(info.value)
        assert provider.last_error is info.value
        assert PASSWORD not in str(info.value)
        assert "client-id" not in str(info.value)
    finally:
        await provider.aclose()


async def test_unreachable_token_endpoint() -> None:
    """Nobody listening: a transient OAuthTokenError naming the endpoint."""
    from tests.testbed.procs import free_port

    url = f"http://127.0.0.1:{free_port()}/token"
    config_ = config(BASE, {**OAUTH_AUTH, "oauthTokenEndpointUri": url})
    provider = kafka._token_provider(config_)
    assert provider is not None
    try:
        with pytest.raises(OAuthTokenError, match="is unreachable") as info:
            await provider.token()
        assert not info.value.rejected
    finally:
        await provider.aclose()


# ---------------------------------------------------------------------------------------------
# Error translation at the boundary


@pytest.mark.parametrize(
    ("raised", "kind", "text"),
    [
        pytest.param(
            aiokafka.errors.KafkaConnectionError("Unable to bootstrap from [('k', 9092)]"),
            ScalerUnavailableError,
            "unavailable: KafkaConnectionError: Unable to bootstrap from [('k', 9092)]",
            id="bootstrap",
        ),
        pytest.param(
            aiokafka.errors.NodeNotReadyError("node 1"),
            ScalerUnavailableError,
            "unavailable: NodeNotReadyError: node 1",
            id="node-not-ready",
        ),
        pytest.param(
            aiokafka.errors.RequestTimedOutError(),
            ScalerUnavailableError,
            "unavailable: [Error 7] RequestTimedOutError",
            id="request-timeout",
        ),
        pytest.param(
            aiokafka.errors.KafkaTimeoutError(),
            ScalerUnavailableError,
            "unavailable: KafkaTimeoutError",
            id="kafka-timeout",
        ),
        pytest.param(
            TimeoutError(), ScalerUnavailableError, "no answer within 8s", id="poll-timeout"
        ),
        pytest.param(
            ConnectionResetError(104, f"reset {PASSWORD}"),
            ScalerUnavailableError,
            "unavailable: [Errno 104] reset ***",
            id="os-error-scrubbed",
        ),
        pytest.param(
            aiokafka.errors.GroupCoordinatorNotAvailableError(),
            ScalerUnavailableError,
            "[Error 15] GroupCoordinatorNotAvailableError",
            id="coordinator-not-available",
        ),
        pytest.param(
            aiokafka.errors.GroupAuthorizationFailedError(),
            ScalerQueryError,
            "[Error 30] GroupAuthorizationFailedError",
            id="group-authorization",
        ),
        pytest.param(
            aiokafka.errors.UnsupportedSaslMechanismError(),
            ScalerQueryError,
            "[Error 33] UnsupportedSaslMechanismError",
            id="sasl-mechanism",
        ),
        pytest.param(
            ScalerQueryError('topic "orders" does not exist'),
            ScalerQueryError,
            'topic "orders" does not exist',
            id="own-error-gets-context",
        ),
    ],
)
def test_library_errors_become_ours(raised: Exception, kind: type[Exception], text: str) -> None:
    """Connection trouble is transient, answers we cannot use are not; the message names the
    trigger and cluster, and the password is scrubbed from whatever the library said."""
    s = scaler(BASE, SASL_AUTH)
    with pytest.raises(kind) as info, s._translate_errors():
        raise raised
    assert type(info.value) is kind
    assert str(info.value) == f"{LABEL}: sasl_plaintext://alice@kafka-0:9092,kafka-1:9092: {text}"
    assert PASSWORD not in str(info.value)


@pytest.mark.parametrize(
    ("rejected", "kind"),
    [
        pytest.param(True, ScalerQueryError, id="rejected-credentials"),
        pytest.param(False, ScalerUnavailableError, id="endpoint-down"),
    ],
)
def test_token_failure_explains_a_failed_connection(rejected: bool, kind: type[Exception]) -> None:
    """A connection that failed because no token was issued says why; refused credentials are
    not transient."""
    s = scaler(BASE, OAUTH_AUTH)
    provider = kafka._token_provider(s.config)
    assert provider is not None
    provider.last_error = OAuthTokenError(
        "the OAuth token endpoint https://idp.example/token answered HTTP 401", rejected=rejected
    )
    s._token_provider = provider
    with pytest.raises(kind) as info, s._translate_errors():
        raise aiokafka.errors.KafkaConnectionError("Unable to bootstrap from [('k', 9092)]")
    assert str(info.value).endswith(
        "; OAuthTokenError: the OAuth token endpoint https://idp.example/token answered HTTP 401"
    )


@pytest.mark.parametrize(
    ("code", "kind", "text"),
    [
        pytest.param(
            3, ScalerUnavailableError, "x: UNKNOWN_TOPIC_OR_PARTITION", id="unknown-topic"
        ),
        pytest.param(5, ScalerUnavailableError, "x: LEADER_NOT_AVAILABLE", id="no-leader"),
        pytest.param(16, ScalerUnavailableError, "x: NOT_COORDINATOR", id="not-coordinator"),
        pytest.param(29, ScalerQueryError, "x: TOPIC_AUTHORIZATION_FAILED", id="topic-acl"),
        pytest.param(30, ScalerQueryError, "x: GROUP_AUTHORIZATION_FAILED", id="group-acl"),
        pytest.param(9999, ScalerQueryError, "x: UNKNOWN", id="unknown-code"),
    ],
)
def test_broker_error_codes(code: int, kind: type[Exception], text: str) -> None:
    """An error code a broker answered with: retriable ones are transient."""
    made = kafka._broker_error(code, "x")
    assert type(made) is kind
    assert str(made) == text


async def test_scaler_leases_lazily_and_aclose_is_idempotent() -> None:
    """Building leases nothing; aclose() before any poll, or twice, is fine."""
    s = scaler(BASE)
    assert len(s._connections) == 0
    await s.aclose()
    await s.aclose()


# ---------------------------------------------------------------------------------------------
# Which partitions a poll counts (from a Metadata answer)

Layout = kafka._TopicLayout


@pytest.mark.parametrize(
    ("metadata", "layouts", "expected"),
    [
        pytest.param(
            {},
            {T: Layout({0: 1, 1: 2, 2: 1})},
            {Partition(T, 0): 1, Partition(T, 1): 2, Partition(T, 2): 1},
            id="all-partitions-with-leaders",
        ),
        pytest.param(
            {"partitionLimitation": "0,2,9"},
            {T: Layout({0: 1, 1: 2, 2: 1})},
            {Partition(T, 0): 1, Partition(T, 2): 1},
            id="limitation",
        ),
        pytest.param(
            {"topic": ""},
            {"a": Layout({0: 1}), "gone": Layout({}, error=3), "b": Layout({0: 2, 1: 1})},
            {Partition("a", 0): 1, Partition("b", 0): 2, Partition("b", 1): 1},
            id="without-topic-deleted-topics-skipped",
        ),
        pytest.param(
            {"topic": "", "partitionLimitation": "0"},
            {"a": Layout({0: 1, 1: 1})},
            {Partition("a", 0): 1, Partition("a", 1): 1},
            id="without-topic-limitation-ignored",
        ),
        pytest.param({"topic": ""}, {}, {}, id="without-topic-nothing"),
    ],
)
def test_partitions_counted(
    metadata: dict[str, str], layouts: dict[str, Any], expected: dict[Partition, int]
) -> None:
    """The topic's partitions (after partitionLimitation) with their leaders; without `topic`,
    topics that no longer exist are skipped (their committed offsets outlived them)."""
    assert scaler({**BASE, **metadata})._partitions(layouts) == expected


@pytest.mark.parametrize(
    ("metadata", "layouts", "kind", "message"),
    [
        pytest.param(
            {},
            {T: Layout({}, error=3)},
            ScalerQueryError,
            'topic "orders" does not exist',
            id="missing",
        ),
        pytest.param(
            {},
            {T: Layout({}, error=29)},
            ScalerQueryError,
            'reading the partitions of topic "orders": TOPIC_AUTHORIZATION_FAILED',
            id="not-authorized",
        ),
        pytest.param(
            {"topic": ""},
            {"a": Layout({}, error=29)},
            ScalerQueryError,
            'reading the partitions of topic "a": TOPIC_AUTHORIZATION_FAILED',
            id="not-authorized-without-topic",
        ),
        pytest.param(
            {},
            {T: Layout({}, error=5)},
            ScalerUnavailableError,
            'reading the partitions of topic "orders": LEADER_NOT_AVAILABLE',
            id="topic-being-created",
        ),
        pytest.param(
            {},
            {T: Layout({0: 1, 1: -1})},
            ScalerUnavailableError,
            "partition orders/1 has no leader right now",
            id="leader-election",
        ),
        pytest.param(
            {"partitionLimitation": "5-7"},
            {T: Layout({0: 1})},
            ScalerQueryError,
            'none of the partitions in "partitionLimitation" exist in topic "orders"',
            id="limitation-matches-nothing",
        ),
    ],
)
def test_partitions_refused(
    metadata: dict[str, str], layouts: dict[str, Any], kind: type[Exception], message: str
) -> None:
    """A missing or forbidden topic, a partition without leader (never read as lag 0), or a
    partitionLimitation that leaves nothing."""
    with pytest.raises(kind) as info:
        scaler({**BASE, **metadata})._partitions(layouts)
    assert type(info.value) is kind
    assert str(info.value) == message


# ---------------------------------------------------------------------------------------------
# aiokafka's debug log


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        pytest.param(
            "Request to h:1 3: SaslAuthenticateRequest_v1(sasl_auth_bytes=b'alice\\x00alice\\x00"
            + PASSWORD
            + "')",
            "Request to h:1 3: SaslAuthenticateRequest_v1(sasl_auth_bytes=<redacted>)",
            id="plain",
        ),
        pytest.param(
            'x(sasl_auth_bytes=b"n,,\\x01auth=Bearer it\'s-a-token\\x01\\x01", y=1)',
            "x(sasl_auth_bytes=<redacted>, y=1)",
            id="oauth-double-quoted",
        ),
        pytest.param("Request to h:1 4: MetadataRequest_v5(topics=[])", None, id="untouched"),
    ],
)
def test_sasl_bytes_are_redacted_from_aiokafka_logs(
    message: str, expected: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """aiokafka logs each request at DEBUG, SASL bytes included (PLAIN's carry the password):
    its connection logger has our filter, which redacts them."""
    logger = logging.getLogger("aiokafka.conn")
    assert any(isinstance(f, kafka._SaslBytesRedaction) for f in logger.filters)
    with caplog.at_level(logging.DEBUG, logger="aiokafka.conn"):
        logger.debug("%s", message)
    [record] = caplog.records
    assert record.getMessage() == (expected or message)
    assert PASSWORD not in caplog.text
    assert "it's-a-token" not in caplog.text


@pytest.mark.parametrize(
    "shape",
    ["sasl_auth_bytes=bytearray(b'%s')", "sasl_auth_bytes=memoryview(%s)", "sasl_auth_bytes: %s"],
)
def test_unmatched_sasl_bytes_drop_the_record(shape: str, caplog: pytest.LogCaptureFixture) -> None:
    """A record naming SASL bytes in a shape the filter does not know is not logged at all."""
    with caplog.at_level(logging.DEBUG, logger="aiokafka.conn"):
        logging.getLogger("aiokafka.conn").debug(shape, PASSWORD)
    assert caplog.records == []
