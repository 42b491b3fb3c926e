"""prometheus without a server: parameters and their exact errors, what a query sends, the pure
answer -> value function, error translation with credentials scrubbed, TLS material, and the
keys that make triggers share one client."""

from __future__ import annotations

import base64
import math
import ssl
from datetime import timedelta
from typing import Any

import pytest
import requests
import urllib3.connection
import urllib3.exceptions
from prometheus_api_client.exceptions import PrometheusApiClientException

from autoscale.errors import ConfigError, ScalerQueryError, ScalerUnavailableError
from autoscale.scalers import prometheus
from autoscale.scalers.connections import SharedClients
from autoscale.scalers.prometheus import (
    PrometheusConfig,
    PrometheusEndpoint,
    PrometheusScaler,
    infer_result_type,
    query_params,
    request_headers,
    result_to_value,
)
from autoscale.scalers.registry import ScalerRegistry
from tests.testbed.pki import TinyCA

LABEL = "trigger[0] (prometheus)"
BASE = {"serverAddress": "http://prometheus:9090", "query": "sum(up)", "threshold": "10"}
TOKEN = "t0ken-Never-Shown-4711"
PASSWORD = "pa55-Wörd-never-shown"


def scaler(
    metadata: dict[str, str],
    auth: dict[str, str] | None = None,
    warnings: list[str] | None = None,
    *,
    index: int = 0,
    name: str | None = None,
) -> PrometheusScaler:
    return PrometheusScaler.from_trigger(
        trigger_index=index,
        trigger_name=name,
        metadata=metadata,
        auth_params=auth or {},
        resolved_env={},
        connections=SharedClients(),
        warnings=warnings,
    )


def config(metadata: dict[str, str], auth: dict[str, str] | None = None) -> PrometheusConfig:
    return scaler({**BASE, **metadata}, auth).config


def error(metadata: dict[str, str], auth: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        scaler({**BASE, **metadata}, auth)
    message = str(info.value)
    assert message.startswith(f"{LABEL}: ")
    return message.removeprefix(f"{LABEL}: ")


def warnings_of(metadata: dict[str, str], auth: dict[str, str] | None = None) -> list[str]:
    out: list[str] = []
    scaler({**BASE, **metadata}, auth, out)
    assert all(w.startswith(f"{LABEL}: ") for w in out)
    return [w.removeprefix(f"{LABEL}: ") for w in out]


# ---------------------------------------------------------------------------------------------
# Parameters


def test_defaults_are_keda_s() -> None:
    """Only serverAddress, query and threshold are needed; the rest defaults as in KEDA."""
    parsed = config({})
    assert parsed.url == "http://prometheus:9090"
    assert parsed.query == "sum(up)"
    assert parsed.threshold == 10.0
    assert parsed.activation_threshold == 0.0
    assert parsed.ignore_null_values is True
    assert parsed.unsafe_ssl is False
    assert parsed.namespace is None
    assert parsed.query_parameters == {}
    assert parsed.custom_headers == {}
    assert parsed.auth_modes == ()
    assert parsed.timeout_seconds == prometheus.DEFAULT_TIMEOUT == 3.0


@pytest.mark.parametrize(
    ("metadata", "auth", "attr", "expected"),
    [
        pytest.param({"threshold": "100.50"}, {}, "threshold", 100.5, id="threshold-float"),
        pytest.param(
            {"activationThreshold": "5.5"}, {}, "activation_threshold", 5.5, id="activation"
        ),
        pytest.param(
            {"serverAddress": "https://vm:8481/select/0/prometheus/"},
            {},
            "url",
            "https://vm:8481/select/0/prometheus",
            id="path-trailing-slash-dropped",
        ),
        pytest.param({"namespace": "team-a"}, {}, "namespace", "team-a", id="namespace"),
        pytest.param(
            {"queryParameters": "key-1=value-1, key-2=value-2"},
            {},
            "query_parameters",
            {"key-1": "value-1", "key-2": "value-2"},
            id="query-parameters",
        ),
        pytest.param(
            {"customHeaders": "X-Client-Id=cid,X-Tenant-Id=tid"},
            {},
            "custom_headers",
            {"X-Client-Id": "cid", "X-Tenant-Id": "tid"},
            id="custom-headers",
        ),
        pytest.param(
            {"customHeaders": "X-Name=Jürgen ✓"},
            {},
            "custom_headers",
            {"X-Name": "Jürgen ✓"},
            id="custom-headers-utf8",
        ),
        pytest.param(
            {"ignoreNullValues": "false"}, {}, "ignore_null_values", False, id="null-false"
        ),
        pytest.param({"ignoreNullValues": "f"}, {}, "ignore_null_values", False, id="null-f"),
        pytest.param({"unsafeSsl": "true"}, {}, "unsafe_ssl", True, id="unsafe-ssl"),
        pytest.param({"timeout": "1000"}, {}, "timeout_seconds", 1.0, id="timeout-ms"),
        pytest.param({"timeout": "1500.5"}, {}, "timeout_seconds", 1.5005, id="timeout-ms-frac"),
        pytest.param({"timeout": "30s"}, {}, "timeout_seconds", 30.0, id="timeout-go-s"),
        pytest.param({"timeout": "1m30s"}, {}, "timeout_seconds", 90.0, id="timeout-go-m-s"),
        pytest.param({"timeout": "250ms"}, {}, "timeout_seconds", 0.25, id="timeout-go-ms"),
        pytest.param({"timeout": "1.5h"}, {}, "timeout_seconds", 5400.0, id="timeout-go-h"),
        pytest.param({"timeout": "0"}, {}, "timeout_seconds", 3.0, id="timeout-zero-default"),
        pytest.param(
            {"authModes": "tls, basic"},
            {"username": "u", "cert": "-----BEGIN C", "key": "-----BEGIN K"},
            "auth_modes",
            ("tls", "basic"),
            id="auth-modes-list",
        ),
        pytest.param(
            {},
            {"authModes": "bearer", "bearerToken": TOKEN},
            "auth_modes",
            ("bearer",),
            id="am-auth",
        ),
        pytest.param(
            {"authMode": "bearer"}, {"bearerToken": TOKEN}, "auth_modes", ("bearer",), id="old-name"
        ),
        pytest.param(
            {"authModes": "bearer"}, {"token": TOKEN}, "bearer_token", TOKEN, id="token-alias"
        ),
        pytest.param(
            {"authModes": "basic"}, {"username": "apikey"}, "password", None, id="no-password"
        ),
    ],
)
def test_parameters(
    metadata: dict[str, str], auth: dict[str, str], attr: str, expected: object
) -> None:
    """Each parameter as KEDA reads it, from the source KEDA reads it from."""
    assert getattr(config(metadata, auth), attr) == expected


@pytest.mark.parametrize(
    ("metadata", "auth", "message"),
    [
        pytest.param(
            {"serverAddress": ""},
            {},
            'missing required parameter "serverAddress" (looked in metadata)',
            id="missing-server",
        ),
        pytest.param(
            {"query": " "},
            {},
            'missing required parameter "query" (looked in metadata)',
            id="missing-query",
        ),
        pytest.param(
            {"threshold": ""},
            {},
            'missing required parameter "threshold" (looked in metadata)',
            id="missing-threshold",
        ),
        pytest.param(
            {"threshold": "one"},
            {},
            'parameter "threshold" value "one" is not a number',
            id="threshold-word",
        ),
        pytest.param(
            {"threshold": "0"},
            {},
            'parameter "threshold" must be greater than 0',
            id="threshold-zero",
        ),
        pytest.param(
            {"threshold": "-5"},
            {},
            'parameter "threshold" must be greater than 0',
            id="threshold-negative",
        ),
        pytest.param(
            {"activationThreshold": "one"},
            {},
            'parameter "activationThreshold" value "one" is not a number',
            id="activation-word",
        ),
        pytest.param(
            {"ignoreNullValues": "xxxx"},
            {},
            'parameter "ignoreNullValues" value "xxxx" is not a boolean (true or false)',
            id="null-word",
        ),
        pytest.param(
            {"unsafeSsl": "yes"},
            {},
            'parameter "unsafeSsl" value "yes" is not a boolean (true or false)',
            id="unsafe-word",
        ),
        pytest.param(
            {"customHeaders": "key1=value1,key2"},
            {},
            'parameter "customHeaders" value "key2" is not key=value',
            id="headers-format",
        ),
        pytest.param(
            {"queryParameters": "key1=value1,key2"},
            {},
            'parameter "queryParameters" value "key2" is not key=value',
            id="params-format",
        ),
        pytest.param(
            {"timeout": "-1"},
            {},
            'parameter "timeout" value "-1" is invalid: must not be negative',
            id="timeout-negative",
        ),
        pytest.param(
            {"timeout": "a"},
            {},
            'parameter "timeout" value "a" is invalid: '
            'expected milliseconds ("1500") or a duration ("1.5s", "2m")',
            id="timeout-word",
        ),
        pytest.param(
            {"timeout": "5 s"},
            {},
            'parameter "timeout" value "5 s" is invalid: '
            'expected milliseconds ("1500") or a duration ("1.5s", "2m")',
            id="timeout-space",
        ),
        pytest.param(
            {"serverAddress": "prometheus:9090"},
            {},
            'parameter "serverAddress" value "prometheus:9090" is not an http:// or https:// URL',
            id="server-no-scheme",
        ),
        pytest.param(
            {"serverAddress": "ftp://prometheus"},
            {},
            'parameter "serverAddress" value "ftp://prometheus" is not an http:// or https:// URL',
            id="server-ftp",
        ),
        pytest.param(
            {"serverAddress": "http://prometheus:http"},
            {},
            'parameter "serverAddress" value "http://prometheus:http" '
            "is not an http:// or https:// URL",
            id="server-bad-port",
        ),
        pytest.param(
            {"serverAddress": "http://prometheus?x=1"},
            {},
            'parameter "serverAddress" value "http://prometheus?x=1" must not have a query or '
            'fragment; use "queryParameters"',
            id="server-query",
        ),
        pytest.param(
            {"serverAddress": f"http://admin:{PASSWORD}@prometheus:9090"},
            {},
            'parameter "serverAddress" must not carry credentials ("user:password@"); use '
            'authModes "basic" with the auth params "username" and "password"',
            id="server-credentials",
        ),
        pytest.param(
            {"queryParameters": "query=up"},
            {},
            'parameter "queryParameters" must not set "query"',
            id="params-query",
        ),
        pytest.param(
            {"namespace": "a", "queryParameters": "namespace=b"},
            {},
            'the "namespace" query parameter is set twice, by "namespace" and in '
            '"queryParameters"; keep one',
            id="namespace-twice",
        ),
        pytest.param(
            {"customHeaders": "X Bad=1"},
            {},
            'parameter "customHeaders": header "X Bad" is not a valid HTTP header name',
            id="header-name",
        ),
        pytest.param(
            {"customHeaders": "X-Name=a\x7fb"},
            {},
            'parameter "customHeaders": header "X-Name": its value has control characters, '
            "which an HTTP header cannot carry",
            id="header-value",
        ),
        pytest.param(
            {"authModes": "kerberos"},
            {},
            'parameter "authModes" value "kerberos" must be one of '
            '"bearer", "basic", "tls", "custom", "oauth", "apiKey"',
            id="mode-unknown",
        ),
        pytest.param(
            {"authModes": "bearer,basic"},
            {"bearerToken": TOKEN, "username": "u"},
            'parameter "authModes" may hold only one of "bearer", "basic" and "oauth", '
            'not "bearer" and "basic"; the "Authorization" header is set by both '
            'authModes "bearer" and authModes "basic"; keep one',
            id="bearer-and-basic",
        ),
        pytest.param(
            {"authModes": "oauth"},
            {},
            'authModes "oauth" is not supported by the prometheus trigger; use "bearer" with '
            'a token, or "custom"',
            id="oauth",
        ),
        pytest.param(
            {"authModes": "bearer"},
            {},
            'authModes "bearer" needs the auth param "bearerToken"',
            id="bearer-no-token",
        ),
        pytest.param(
            {"authModes": "basic"},
            {"password": PASSWORD},
            'authModes "basic" needs the auth param "username"',
            id="basic-no-username",
        ),
        pytest.param(
            {"authModes": "tls"},
            {"ca": "-----BEGIN C", "cert": "-----BEGIN C"},
            'authModes "tls" needs the auth params "cert" and "key"',
            id="tls-no-key",
        ),
        pytest.param(
            {"authModes": "tls"},
            {"ca": "-----BEGIN C", "key": "-----BEGIN K"},
            'authModes "tls" needs the auth params "cert" and "key"',
            id="tls-no-cert",
        ),
        pytest.param(
            {"authModes": "custom"},
            {"customAuthHeader": "X-Key"},
            'authModes "custom" needs the auth params "customAuthHeader" and "customAuthValue"',
            id="custom-no-value",
        ),
        pytest.param(
            {"authModes": "custom"},
            {"customAuthValue": TOKEN},
            'authModes "custom" needs the auth params "customAuthHeader" and "customAuthValue"',
            id="custom-no-header",
        ),
        pytest.param(
            {"authModes": "custom"},
            {"customAuthHeader": "X:Key", "customAuthValue": TOKEN},
            'auth param "customAuthHeader" is not a valid HTTP header name',
            id="custom-header-name",
        ),
        pytest.param(
            {"authModes": "custom"},
            {"customAuthHeader": "X-Key", "customAuthValue": "a\x00b"},
            'auth param "customAuthValue" has control characters, which an HTTP header '
            "cannot carry",
            id="custom-value-control",
        ),
        pytest.param(
            {"authModes": "bearer,custom"},
            {"bearerToken": TOKEN, "customAuthHeader": "authorization", "customAuthValue": "x"},
            'the "Authorization" header is set by both authModes "bearer" and authModes '
            '"custom"; keep one',
            id="custom-vs-bearer",
        ),
        pytest.param(
            {"authModes": "bearer", "customHeaders": "Authorization=Bearer other"},
            {"bearerToken": TOKEN},
            'parameter "customHeaders" sets "Authorization", which authModes "bearer" sets too; '
            "keep one",
            id="header-vs-bearer",
        ),
        pytest.param(
            {"authModes": "custom", "customHeaders": "x-api-key=1"},
            {"customAuthHeader": "X-Api-Key", "customAuthValue": TOKEN},
            'parameter "customHeaders" sets "x-api-key", which authModes "custom" sets too; '
            "keep one",
            id="header-vs-custom",
        ),
        pytest.param(
            {"awsRegion": "eu-west-1"},
            {},
            'Amazon Managed Service for Prometheus (parameter "awsRegion", SigV4 signing) is '
            "not supported",
            id="aws",
        ),
        pytest.param(
            {"serverAddress": "https://prometheus", "authModes": "tls"},
            {
                "cert": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "key": "-----BEGIN K",
            },
            'auth param "ca", "cert" or "key" cannot be loaded as TLS material (invalid)',
            id="tls-bad-pem",
        ),
        pytest.param(
            {"serverAddress": "https://prometheus"},
            {"ca": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
            'auth param "ca" cannot be loaded as TLS material (invalid)',
            id="ca-bad-pem",
        ),
        pytest.param(
            {}, {"ca": "not pem"}, 'parameter "ca" is invalid (value not shown)', id="ca-not-pem"
        ),
    ],
)
def test_errors_name_the_field(
    metadata: dict[str, str], auth: dict[str, str], message: str
) -> None:
    """Each bad parameter gives a ConfigError with this exact text after the trigger label."""
    assert error(metadata, auth) == message


def test_every_error_is_reported_at_once() -> None:
    """Field errors are collected into one message."""
    message = error({"query": "", "threshold": "x", "ignoreNullValues": "maybe"})
    assert message == (
        'missing required parameter "query" (looked in metadata); '
        'parameter "threshold" value "x" is not a number; '
        'parameter "ignoreNullValues" value "maybe" is not a boolean (true or false)'
    )


def test_rules_across_fields_are_reported_at_once() -> None:
    """validate() lists every problem it finds, too."""
    message = error(
        {"threshold": "0", "queryParameters": "query=x", "authModes": "bearer,custom"},
        {},
    )
    assert message == (
        'parameter "threshold" must be greater than 0; '
        'parameter "queryParameters" must not set "query"; '
        'authModes "bearer" needs the auth param "bearerToken"; '
        'authModes "custom" needs the auth params "customAuthHeader" and "customAuthValue"'
    )


def test_error_names_trigger_by_index_and_name() -> None:
    """The label carries the index and the trigger's name."""
    with pytest.raises(ConfigError, match=r'^trigger\[2\] "rps" \(prometheus\): missing'):
        scaler({"serverAddress": "http://p"}, index=2, name="rps")


@pytest.mark.parametrize(
    ("metadata", "auth", "message"),
    [
        pytest.param(
            {},
            {"GoogleApplicationCredentials": "{}"},
            "Google Managed Service for Prometheus credentials (auth param "
            '"GoogleApplicationCredentials") are not supported',
            id="gcp-auth-param",
        ),
        pytest.param(
            {"credentialsFromEnv": "GCP"},
            {},
            'Google Managed Service for Prometheus credentials ("credentialsFromEnv") are not '
            "supported",
            id="gcp-env",
        ),
        pytest.param(
            {"credentialsFromEnvFile": "GCP_FILE"},
            {},
            'Google Managed Service for Prometheus credentials ("credentialsFromEnvFile") are '
            "not supported",
            id="gcp-env-file",
        ),
    ],
)
def test_unsupported_cloud_identities_are_refused(
    metadata: dict[str, str], auth: dict[str, str], message: str
) -> None:
    """A trigger that needs a cloud identity we do not implement fails loudly, not at poll."""
    assert error(metadata, auth) == message


def test_credential_values_never_appear_in_errors() -> None:
    """Auth params are never quoted, nor is a password carried in serverAddress."""
    message = error(
        {"serverAddress": f"http://u:{PASSWORD}@p", "authModes": "custom"},
        {"customAuthHeader": "X-Key", "customAuthValue": f"{TOKEN}\n\x01"},
    )
    assert PASSWORD not in message
    assert TOKEN not in message


@pytest.mark.parametrize(
    ("metadata", "auth", "expected"),
    [
        pytest.param({}, {}, [], id="none"),
        pytest.param(
            {"authModes": "apiKey"},
            {},
            [
                'authModes "apiKey" has no effect on the prometheus trigger (nor in KEDA); '
                'use "custom" to send a key in a header'
            ],
            id="api-key",
        ),
        pytest.param(
            {},
            {"bearerToken": TOKEN, "username": "u"},
            [
                'auth params "bearerToken" are ignored: authModes has no "bearer"',
                'auth params "username" are ignored: authModes has no "basic"',
            ],
            id="credentials-without-mode",
        ),
        pytest.param(
            {"authModes": "bearer"},
            {"bearerToken": TOKEN, "cert": "-----BEGIN C", "key": "-----BEGIN K"},
            ['auth params "cert", "key" are ignored: authModes has no "tls"'],
            id="cert-without-tls",
        ),
        pytest.param(
            {"unsafeSsl": "true", "authModes": "tls"},
            {"ca": "-----BEGIN C", "cert": "-----BEGIN C", "key": "-----BEGIN K"},
            ['"ca", "unsafeSsl", authModes "tls" ignored: serverAddress is http://, not https://'],
            id="tls-on-http",
        ),
        pytest.param(
            {"customHeaders": "Authorization=Bearer x"},
            {},
            [
                'parameter "customHeaders" carries "Authorization": credentials belong in a '
                'TriggerAuthentication (authModes "bearer", "basic" or "custom")'
            ],
            id="authorization-in-metadata",
        ),
        pytest.param(
            {"identityOwner": "operator"},
            {},
            [
                'parameter "identityOwner" is ignored: it only applies to Amazon Managed '
                "Prometheus, which is not supported"
            ],
            id="identity-owner",
        ),
        pytest.param(
            {"activationThreshold": "-1"},
            {},
            ['parameter "activationThreshold" is negative: a value of 0 makes the trigger active'],
            id="activation-negative",
        ),
        pytest.param(
            {"bearerToken": TOKEN},
            {},
            ['parameter "bearerToken" is ignored in metadata; it is read from auth params'],
            id="token-in-metadata",
        ),
        pytest.param(
            {"metricName": "old", "cortexOrgID": "x"},
            {},
            ['unknown parameter "metricName"', 'unknown parameter "cortexOrgID"'],
            id="removed-keda-params",
        ),
        pytest.param(
            {"authMode": "bearer"},
            {"bearerToken": TOKEN},
            ['parameter "authMode" is deprecated; use "authModes"'],
            id="old-auth-mode-name",
        ),
    ],
)
def test_warnings(metadata: dict[str, str], auth: dict[str, str], expected: list[str]) -> None:
    """Parameters that do nothing are reported (KEDA ignores them silently); never values."""
    notes = warnings_of(metadata, auth)
    assert notes == expected
    assert not any(TOKEN in note for note in notes)


# ---------------------------------------------------------------------------------------------
# What a query sends


@pytest.mark.parametrize(
    ("metadata", "auth", "expected"),
    [
        pytest.param({}, {}, {}, id="none"),
        pytest.param(
            {"customHeaders": "X-Scope-OrgID=tenant-1,X-Client-Id=cid"},
            {},
            {"X-Scope-OrgID": "tenant-1", "X-Client-Id": "cid"},
            id="custom-headers",
        ),
        pytest.param(
            {"authModes": "bearer"},
            {"bearerToken": TOKEN},
            {"Authorization": f"Bearer {TOKEN}"},
            id="bearer",
        ),
        pytest.param(
            {"authModes": "basic"},
            {"username": "admin", "password": PASSWORD},
            {"Authorization": "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()},
            id="basic-utf8",
        ),
        pytest.param(
            {"authModes": "basic"},
            {"username": "apikey"},
            {"Authorization": "Basic " + base64.b64encode(b"apikey:").decode()},
            id="basic-no-password",
        ),
        pytest.param(
            {"authModes": "custom"},
            {"customAuthHeader": "X-Auth-Token\n", "customAuthValue": f"{TOKEN}\n"},
            {"X-Auth-Token": TOKEN},
            id="custom-trimmed",
        ),
        pytest.param(
            {"authModes": "bearer,custom", "customHeaders": "X-Scope-OrgID=t"},
            {"bearerToken": TOKEN, "customAuthHeader": "X-Key", "customAuthValue": "k"},
            {"X-Scope-OrgID": "t", "Authorization": f"Bearer {TOKEN}", "X-Key": "k"},
            id="bearer-custom-and-headers",
        ),
        pytest.param(
            {"authModes": "tls"},
            {"cert": "-----BEGIN C", "key": "-----BEGIN K"},
            {},
            id="tls-no-header",
        ),
    ],
)
def test_request_headers(
    metadata: dict[str, str], auth: dict[str, str], expected: dict[str, str]
) -> None:
    """customHeaders plus each auth mode's header, exactly (KEDA would drop custom here)."""
    assert request_headers(config(metadata, auth)) == expected


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        pytest.param({}, {"timeout": "3000ms"}, id="default"),
        pytest.param({"timeout": "1.5s"}, {"timeout": "1500ms"}, id="timeout"),
        pytest.param(
            {"namespace": "team-a", "queryParameters": "dedup=true,partial_response=false"},
            {
                "timeout": "3000ms",
                "namespace": "team-a",
                "dedup": "true",
                "partial_response": "false",
            },
            id="namespace-and-params",
        ),
        pytest.param(
            {"queryParameters": "timeout=10s"}, {"timeout": "10s"}, id="params-override-timeout"
        ),
        pytest.param({"timeout": "0.1"}, {"timeout": "1ms"}, id="timeout-at-least-1ms"),
    ],
)
def test_query_params(metadata: dict[str, str], expected: dict[str, str]) -> None:
    """Besides `query`: the poll's timeout, namespace, then queryParameters (no `time`)."""
    assert query_params(config(metadata)) == expected


# ---------------------------------------------------------------------------------------------
# What the answer means


def vector(*values: str, labels: tuple[dict[str, str], ...] = ()) -> list[dict[str, Any]]:
    metrics = labels or tuple({} for _ in values)
    return [
        {"metric": m, "value": [1700000000.123, v]} for m, v in zip(metrics, values, strict=True)
    ]


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        pytest.param([], "vector", id="empty"),
        pytest.param(vector("1"), "vector", id="vector"),
        pytest.param([{"metric": {}, "values": [[1, "1"]]}], "matrix", id="matrix"),
        pytest.param([1700000000.5, "42"], "scalar", id="scalar"),
        pytest.param([1700000000, "text"], "scalar", id="string-reads-as-scalar"),
        pytest.param([True, "1"], "unknown", id="bool-timestamp"),
        pytest.param({"x": 1}, "unknown", id="dict"),
        pytest.param([1, 2], "unknown", id="numbers"),
        pytest.param(None, "unknown", id="none"),
    ],
)
def test_infer_result_type(result: object, expected: str) -> None:
    """The library returns data.result only; its shape tells the type."""
    assert infer_result_type(result) == expected


@pytest.mark.parametrize(
    ("result_type", "result", "ignore", "expected"),
    [
        pytest.param("vector", vector("42"), False, 42.0, id="one-series"),
        pytest.param("vector", vector("100.5"), True, 100.5, id="float"),
        pytest.param("vector", vector("1e+06"), False, 1e6, id="exponent"),
        pytest.param("vector", vector("-3"), False, -3.0, id="negative-passes-through"),
        pytest.param("vector", vector("0"), False, 0.0, id="zero"),
        pytest.param("vector", [], True, 0.0, id="empty-ignored"),
        pytest.param("vector", [{"metric": {}, "value": []}], True, 0.0, id="no-value-ignored"),
        pytest.param("vector", vector("NaN"), True, 0.0, id="nan-ignored"),
        pytest.param("scalar", [1700000000.1, "7"], False, 7.0, id="scalar"),
        pytest.param("scalar", [1700000000.1, "NaN"], True, 0.0, id="scalar-nan-ignored"),
        pytest.param("string", [1700000000.1, "8"], False, 8.0, id="string"),
    ],
)
def test_result_to_value(result_type: str, result: Any, ignore: bool, expected: float) -> None:
    """One series or a scalar gives its value; "no number" is 0 only when ignored."""
    value = result_to_value(result_type, result, ignore)
    assert value == expected
    assert not math.isnan(value)


MANY = vector(
    "1",
    "2",
    "3",
    "4",
    labels=(
        {"__name__": "queue_depth", "queue": "a"},
        {"__name__": "queue_depth", "queue": "b"},
        {"queue": "c", "job": "x"},
        {"queue": "d"},
    ),
)


@pytest.mark.parametrize(
    ("result_type", "result", "ignore", "message"),
    [
        pytest.param(
            "vector",
            [],
            False,
            "the query returned no series (an empty vector) and ignoreNullValues is false: "
            "what the query selects may be gone (e.g. its target is down)",
            id="empty-not-ignored",
        ),
        pytest.param(
            "vector",
            [{"metric": {}, "value": []}],
            False,
            "the query's series has no value and ignoreNullValues is false: what the query "
            "selects may be gone (e.g. its target is down)",
            id="no-value-not-ignored",
        ),
        pytest.param(
            "vector",
            vector("NaN"),
            False,
            "the query returned NaN and ignoreNullValues is false: what the query selects may "
            "be gone (e.g. its target is down)",
            id="nan-not-ignored",
        ),
        pytest.param(
            "vector",
            vector("+Inf"),
            True,
            "the query returned +Inf, which cannot be scaled on (a division by zero?); this is "
            "an error whatever ignoreNullValues says",
            id="plus-inf-even-ignored",
        ),
        pytest.param(
            "vector",
            vector("-Inf"),
            True,
            "the query returned -Inf, which cannot be scaled on (a division by zero?); this is "
            "an error whatever ignoreNullValues says",
            id="minus-inf-even-ignored",
        ),
        pytest.param(
            "scalar",
            [1700000000, "+Inf"],
            False,
            "the query returned +Inf, which cannot be scaled on (a division by zero?); this is "
            "an error whatever ignoreNullValues says",
            id="scalar-inf",
        ),
        pytest.param(
            "vector",
            vector("1", "2", labels=({"pod": "a"}, {"pod": "b"})),
            True,
            'the query returned 2 series ({pod="a"}, {pod="b"}); it must return exactly one: '
            "aggregate them, e.g. sum(...) or max(...)",
            id="two-series-even-ignored",
        ),
        pytest.param(
            "vector",
            MANY,
            False,
            'the query returned 4 series (queue_depth{queue="a"}, queue_depth{queue="b"}, '
            '{job="x", queue="c"}, ...); it must return exactly one: aggregate them, e.g. '
            "sum(...) or max(...)",
            id="four-series",
        ),
        pytest.param(
            "matrix",
            [{"metric": {}, "values": [[1, "1"]]}],
            True,
            "the query returned a range vector (matrix); it must return an instant vector or a "
            "scalar: apply a function such as rate() or avg_over_time() to the range",
            id="matrix",
        ),
        pytest.param(
            "vector",
            vector("lots"),
            True,
            'the query returned "lots", not a number',
            id="not-a-number",
        ),
        pytest.param(
            "vector",
            [{"metric": {}, "value": [1, 2]}],
            True,
            "the query result is malformed: [1, 2]",
            id="value-not-text",
        ),
        pytest.param(
            "unknown",
            {"x": 1},
            True,
            'the query returned a result of unknown type "unknown"',
            id="unknown",
        ),
    ],
)
def test_result_to_value_refuses_what_cannot_be_trusted(
    result_type: str, result: Any, ignore: bool, message: str
) -> None:
    """Several series, infinities, ranges and garbage are ScalerQueryError with this text."""
    with pytest.raises(ScalerQueryError) as info:
        result_to_value(result_type, result, ignore)
    assert str(info.value) == message
    assert not info.value.transient


# ---------------------------------------------------------------------------------------------
# Errors at the boundary


def connection_error(reason: Exception) -> requests.exceptions.ConnectionError:
    url = f"/api/v1/query?query=up&secret={TOKEN}"
    return requests.exceptions.ConnectionError(
        urllib3.exceptions.MaxRetryError(None, url, reason)  # type: ignore[arg-type]
    )


REFUSED = urllib3.exceptions.NewConnectionError(
    urllib3.connection.HTTPConnection("prometheus", 9090),
    "Failed to establish a new connection: [Errno 111] Connection refused",
)


def body(text: str) -> PrometheusApiClientException:
    """What prometheus-api-client raises for a non-200 answer."""
    return PrometheusApiClientException(f"HTTP Status Code {text}")


@pytest.mark.parametrize(
    ("raised", "kind", "text"),
    [
        pytest.param(
            connection_error(REFUSED),
            ScalerUnavailableError,
            "unavailable: Failed to establish a new connection: [Errno 111] Connection refused",
            id="refused",
        ),
        pytest.param(
            requests.exceptions.ConnectionError(
                urllib3.exceptions.ProtocolError(
                    "Connection aborted.", ConnectionResetError(104, "reset")
                )
            ),
            ScalerUnavailableError,
            "unavailable: ('Connection aborted.', ConnectionResetError(104, 'reset'))",
            id="reset",
        ),
        pytest.param(
            requests.exceptions.SSLError(
                urllib3.exceptions.MaxRetryError(
                    None,  # type: ignore[arg-type]
                    "/api/v1/query",
                    urllib3.exceptions.SSLError("[SSL: CERTIFICATE_VERIFY_FAILED] verify failed"),
                )
            ),
            ScalerUnavailableError,
            "TLS failed: [SSL: CERTIFICATE_VERIFY_FAILED] verify failed",
            id="tls",
        ),
        pytest.param(
            requests.exceptions.ConnectTimeout("connect timed out"),
            ScalerUnavailableError,
            "no connection within 3s",
            id="connect-timeout",
        ),
        pytest.param(
            requests.exceptions.ReadTimeout("read timed out"),
            ScalerUnavailableError,
            "no answer within 3s",
            id="read-timeout",
        ),
        pytest.param(TimeoutError(), ScalerUnavailableError, "no answer within 3s", id="poll"),
        pytest.param(
            requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead"),
            ScalerUnavailableError,
            "unavailable: Connection broken: IncompleteRead",
            id="body-cut",
        ),
        pytest.param(
            ConnectionRefusedError(111, "Connection refused"),
            ScalerUnavailableError,
            "unavailable: Connection refused",
            id="os-error",
        ),
        pytest.param(
            body(
                '400 (b\'{"status":"error","errorType":"bad_data","error":'
                '"invalid parameter \\\\"query\\\\": 1:4: parse error"}\')'
            ),
            ScalerQueryError,
            'HTTP 400 Bad Request: bad_data: invalid parameter "query": 1:4: parse error',
            id="bad-query",
        ),
        pytest.param(
            body(
                '422 (b\'{"status":"error","errorType":"execution","error":"too many samples"}\')'
            ),
            ScalerQueryError,
            "HTTP 422 Unprocessable Entity: execution: too many samples",
            id="execution",
        ),
        pytest.param(
            body(f"401 (b'unauthorized: got Authorization: Bearer {TOKEN}')"),
            ScalerQueryError,
            "HTTP 401 Unauthorized: unauthorized: got Authorization: Bearer ***",
            id="unauthorized-echo-scrubbed",
        ),
        pytest.param(
            body("404 (b'404 page not found\\n')"),
            ScalerQueryError,
            "HTTP 404 Not Found: 404 page not found",
            id="wrong-path",
        ),
        pytest.param(
            body('503 (b\'{"status":"error","errorType":"timeout","error":"query timed out"}\')'),
            ScalerUnavailableError,
            "HTTP 503 Service Unavailable: timeout: query timed out",
            id="server-timeout",
        ),
        pytest.param(
            body("502 (b'<html><body>Bad   Gateway</body></html>')"),
            ScalerUnavailableError,
            "HTTP 502 Bad Gateway: <html><body>Bad Gateway</body></html>",
            id="proxy-upstream-down",
        ),
        pytest.param(
            body("429 (b'')"), ScalerUnavailableError, "HTTP 429 Too Many Requests", id="429"
        ),
        pytest.param(
            body("408 (b'')"), ScalerUnavailableError, "HTTP 408 Request Timeout", id="408"
        ),
        pytest.param(body("599 (b'x')"), ScalerUnavailableError, "HTTP 599: x", id="unknown-5xx"),
        pytest.param(
            requests.exceptions.JSONDecodeError("Expecting value", "<html>", 0),
            ScalerQueryError,
            "the answer is not a Prometheus query API response; check that serverAddress "
            "points at Prometheus' HTTP API",
            id="not-json",
        ),
        pytest.param(
            prometheus._NotPrometheusError(),
            ScalerQueryError,
            "the answer is not a Prometheus query API response; check that serverAddress "
            "points at Prometheus' HTTP API",
            id="not-prometheus-json",
        ),
        pytest.param(
            requests.exceptions.TooManyRedirects("Exceeded 30 redirects."),
            ScalerQueryError,
            "request failed: TooManyRedirects",
            id="redirects",
        ),
        pytest.param(
            ScalerQueryError(f"from the pure function {TOKEN}"),
            ScalerQueryError,
            "from the pure function ***",
            id="own-error-gets-context",
        ),
    ],
)
def test_library_errors_become_ours(raised: Exception, kind: type[Exception], text: str) -> None:
    """Unreachable, timed out, 408/429/5xx are transient; other answers are not. The message
    names the trigger and server, never the URL's query string, and credentials are scrubbed."""
    s = scaler({**BASE, "authModes": "bearer"}, {"bearerToken": TOKEN})
    translated = s._error_for(raised)
    assert type(translated) is kind
    assert str(translated) == f"{LABEL}: http://prometheus:9090: {text}"
    assert TOKEN not in str(translated)


def test_basic_credentials_are_scrubbed_in_both_forms() -> None:
    """A body echoing the Basic header, or the password, shows neither."""
    s = scaler({**BASE, "authModes": "basic"}, {"username": "admin", "password": PASSWORD})
    encoded = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    raised = body(repr(f"Basic {encoded} / {PASSWORD}".encode()).join(("401 (", ")")))
    message = str(s._error_for(raised))
    assert message.endswith("HTTP 401 Unauthorized: Basic *** / ***")
    assert encoded not in message


# ---------------------------------------------------------------------------------------------
# Sharing and secrets


def test_equal_settings_share_an_endpoint_and_credentials_split_them() -> None:
    """The client key is the server, credential and header digests and TLS settings; the
    query, namespace, timeout and thresholds do not split clients."""
    auth = {"bearerToken": TOKEN}
    one = PrometheusEndpoint.of(config({"authModes": "bearer"}, auth))
    same = PrometheusEndpoint.of(
        config(
            {
                "authModes": "bearer",
                "serverAddress": "http://prometheus:9090/",
                "query": "other",
                "threshold": "3",
                "namespace": "n",
                "queryParameters": "a=b",
                "timeout": "10s",
            },
            auth,
        )
    )
    assert one == same
    others = [
        config({}),
        config({"authModes": "bearer"}, {"bearerToken": TOKEN + "x"}),
        config({"authModes": "bearer", "customHeaders": "X-Scope-OrgID=t"}, auth),
        config({"authModes": "bearer", "serverAddress": "http://prometheus:9091"}, auth),
    ]
    assert all(PrometheusEndpoint.of(c) != one for c in others)
    assert TOKEN not in repr(one)
    assert "Bearer" not in repr(one)


def test_tls_settings_count_for_https_only() -> None:
    """unsafeSsl and ca change nothing on http://, so they do not split clients there."""
    plain = PrometheusEndpoint.of(config({}))
    assert PrometheusEndpoint.of(config({"unsafeSsl": "true"}, {"ca": "-----BEGIN C"})) == plain
    https = PrometheusEndpoint.of(config({"serverAddress": "https://prometheus:9090"}))
    unsafe = PrometheusEndpoint.of(
        config({"serverAddress": "https://prometheus:9090", "unsafeSsl": "true"})
    )
    assert https != unsafe
    assert unsafe.unsafe_ssl


def test_secrets_stay_out_of_repr() -> None:
    """Config, scaler and endpoint reprs never show credentials or TLS material."""
    s = scaler(
        {**BASE, "authModes": "basic,custom"},
        {
            "username": "admin",
            "password": PASSWORD,
            "customAuthHeader": "X-Key",
            "customAuthValue": TOKEN,
        },
    )
    text = repr(s) + repr(s.config) + repr(s.endpoint) + str(s.endpoint)
    assert PASSWORD not in text
    assert TOKEN not in text
    assert repr(s) == "<PrometheusScaler s0-prometheus http://prometheus:9090>"


async def test_building_does_no_io_and_aclose_is_idempotent() -> None:
    """from_trigger leases nothing; aclose() before any poll, or twice, is fine."""
    s = scaler(BASE, index=3)
    assert s.metric_name == "s3-prometheus"
    assert len(s._connections) == 0
    await s.aclose()
    await s.aclose()


def test_the_registry_builds_it() -> None:
    """`type: prometheus` resolves to this class through the built-in registry."""
    built = ScalerRegistry(entry_point_group=None).build_scaler(
        "prometheus", trigger_index=1, metadata=BASE, connections=SharedClients()
    )
    assert isinstance(built, PrometheusScaler)
    assert built.metric_name == "s1-prometheus"


# ---------------------------------------------------------------------------------------------
# TLS material


@pytest.fixture(scope="module")
def tls_material() -> dict[str, str]:
    ca = TinyCA("unit-ca")
    pair = ca.issue("client", client=True)
    return {
        "ca": ca.cert_pem.decode(),
        "cert": pair.cert_pem.decode(),
        "key": pair.key_pem.decode(),
    }


def test_tls_context_verifies_with_ca_and_presents_the_client_certificate(
    tls_material: dict[str, str],
) -> None:
    """authModes tls with ca, cert and key: verification on, hostname checked, TLS 1.2+."""
    cfg = config({"serverAddress": "https://p:9090", "authModes": "tls"}, tls_material)
    assert cfg.client_certificate
    context = prometheus._tls_context(cfg)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2


def test_unsafe_ssl_skips_verification() -> None:
    """unsafeSsl: no chain or hostname check, as KEDA's InsecureSkipVerify."""
    context = prometheus._tls_context(config({"serverAddress": "https://p", "unsafeSsl": "true"}))
    assert context.verify_mode is ssl.CERT_NONE
    assert context.check_hostname is False


def test_mismatched_cert_and_key_is_a_config_error(tls_material: dict[str, str]) -> None:
    """A key that is not the certificate's is refused when the trigger is read."""
    other = TinyCA("other").issue("x").key_pem.decode()
    message = error(
        {"serverAddress": "https://p", "authModes": "tls"},
        {"cert": tls_material["cert"], "key": other},
    )
    assert message.startswith('auth param "ca", "cert" or "key" cannot be loaded as TLS material')
    assert "PRIVATE KEY" not in message


def test_timeout_converter_edges() -> None:
    """KEDA's spellings of `timeout`: milliseconds, or Go durations with mixed units."""
    assert prometheus._timeout("1500") == timedelta(milliseconds=1500)
    assert prometheus._timeout("2h45m") == timedelta(hours=2, minutes=45)
    assert prometheus._timeout(".5s") == timedelta(milliseconds=500)
    assert prometheus._timeout("100µs") == timedelta(microseconds=100)
    assert prometheus._timeout("24h") == timedelta(hours=24)
    with pytest.raises(ValueError, match="expected milliseconds"):
        prometheus._timeout("5d")
    # Too long for a socket (which would fail only at the first poll) or for timedelta.
    for raw in ("24h1s", "86400001", "999999999999h", "9" * 30, "1" + "0" * 400 + "s"):
        with pytest.raises(ValueError, match=r"^out of range: at most 24h$"):
            prometheus._timeout(raw)
