"""`type: prometheus`: scale on the value of one PromQL instant query.

KEDA's trigger, parameter for parameter: every poll runs `query` as an instant query
(`GET <serverAddress>/api/v1/query`) and scales on the one number it returns, against
`threshold`; the trigger is active when the value exceeds `activationThreshold` (default 0). The
metric is named `s{index}-prometheus`, as in KEDA. `namespace` is sent as the `namespace` query
parameter (prom-label-proxy and Thanos tenancy read it), `queryParameters` are added to the
request, `customHeaders` to its headers, and `authModes` picks the credentials: `bearer`,
`basic`, `tls` (client certificate) and `custom` (one header of your choice), as in KEDA.

What the answer means (the pure `result_to_value`):

- one series, or a scalar: its value. Negative values pass through as they are (KEDA's too):
  the replica maths reads them as 0, activation compares the raw value.
- no series (an empty vector): 0 with `ignoreNullValues: "true"` (KEDA's default), an error with
  `"false"`. An empty answer usually means the series is gone (its target is down), and 0 then
  scales the workload down during the incident (KEDA #3065); `"false"` is the safe setting.
- NaN (0/0 with no traffic, a quantile of an empty histogram): Prometheus' "no number", so it
  follows `ignoreNullValues` exactly as an empty answer does.
- +Inf or -Inf: always a ScalerQueryError. KEDA reads them as 0 under the default; but +Inf
  comes from dividing real load by zero, and reading it as no load would scale to zero.
- several series: always a ScalerQueryError naming how many, and suggesting sum() or max().
- a range vector (matrix): a ScalerQueryError.

An outage is never read as zero load: if Prometheus cannot be reached, times out, or answers
408, 429 or 5xx, the poll raises ScalerUnavailableError (transient, counts towards `fallback`),
whatever `ignoreNullValues` says; other 4xx answers (a bad query, refused credentials, a wrong
path) raise ScalerQueryError with Prometheus' own message. Only an answer that Prometheus gave,
with no series in it, can become 0.

Differences from KEDA, all on the side of safety or plain correctness:

- +/-Inf is an error, never 0 (see above); a scalar result is read (KEDA only reads vectors).
- the query is evaluated at the server's current time (no `time=` parameter, so a clock skew
  between the operator and Prometheus cannot shift the evaluation), and Prometheus is told the
  poll's timeout (`timeout=` parameter, which `queryParameters` may override), so it stops
  evaluating a query nobody waits for.
- `timeout` (KEDA's: milliseconds, or a Go duration such as "1.5s"; default 3 s, KEDA's
  default HTTP timeout) bounds the whole poll, queueing for a worker thread included.
- `threshold` must be > 0; credentials in `serverAddress` (`user:pass@`) are refused: use
  `authModes: basic`; `customAuthHeader` may be combined with `bearer` or `basic` (KEDA silently
  drops it then) unless both would set the same header, which is refused, as is a
  `customHeaders` entry that an auth mode also sets (KEDA lets the auth mode win silently).
- `ca` applies with or without `authModes` (as KEDA's docs say), on https only; TLS material is
  checked when the trigger is read.
- Not supported: `authModes: oauth` (refused), `apiKey` (ignored with a warning, as KEDA ignores
  it for this trigger), and the cloud identities: Amazon Managed Prometheus (`awsRegion`, SigV4),
  Google Managed Prometheus credentials (`GoogleApplicationCredentials`, `credentialsFromEnv`)
  are refused; Azure Managed Prometheus needs a pod identity, which scalers are not given.

Connections: prometheus-api-client is synchronous (requests), so every call runs in the bounded
pool of `autoscale.scalers.blocking`, never on the event loop. One PrometheusConnect (one
requests.Session and its connection pool) is leased from SharedClients on the first poll and
shared by every trigger with the same server, credentials, headers and TLS settings; KEDA opens
one HTTP client per trigger. Requests are never retried inside a poll (the library's default
would retry with back-off for seconds); the next poll is the retry. Polls of the same query
(same parameters and timeout) on one shared client while that query is in flight share its
request (SharedPrometheus): the thread pool and Prometheus see one request, each scaler
interprets the answer with its own settings, and nothing outlives the request, so no answer
is older than the poll that reads it. `coalescing_counters("prometheus")` counts polls
served and requests sent. Error messages carry
Prometheus' answer or the network reason, never the request's headers, and every credential is
scrubbed from them; the library's exception is dropped, not chained, since its text may hold
the response body.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import contextlib
import http
import json
import math
import re
import ssl
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, Final, Self
from urllib.parse import urlsplit

import requests
import requests.adapters
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from requests.utils import DEFAULT_CA_BUNDLE_PATH
from urllib3.util.retry import Retry

import autoscale
from autoscale.errors import ConfigError, ScalerError, ScalerQueryError, ScalerUnavailableError
from autoscale.scalers import blocking, registry, tls
from autoscale.scalers.base import MetricSample, MetricType
from autoscale.scalers.connections import (
    Lease,
    SharedClients,
    coalescing_counters,
    secret_digest,
)
from autoscale.scalers.params import AUTH, METADATA, parse_params
from autoscale.scalers.params import param as _param

__all__ = [
    "AUTH_MODES",
    "DEFAULT_TIMEOUT",
    "PrometheusConfig",
    "PrometheusEndpoint",
    "PrometheusScaler",
    "infer_result_type",
    "query_params",
    "request_headers",
    "result_to_value",
]

DEFAULT_TIMEOUT: Final = 3.0  # seconds: KEDA_HTTP_DEFAULT_TIMEOUT's default, 3000 ms
# Per shared client (one server and credentials): requests in flight at once, and pooled
# connections. Polls beyond it wait (within their timeout), sharing requests meanwhile.
MAX_CONNECTIONS: Final = min(4, blocking.MAX_WORKERS)
USER_AGENT: Final = f"autoscale/{autoscale.__version__}"
# Every name KEDA's authModes accepts; "oauth" is refused and "apiKey" ignored (validate()).
AUTH_MODES: Final = ("bearer", "basic", "tls", "custom", "oauth", "apiKey")
_EXCLUSIVE_MODES: Final = ("bearer", "basic", "oauth")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an HTTP header name (RFC 9110 token)
_GO_DURATION = re.compile(r"(?:[0-9]*\.?[0-9]+(?:ns|us|µs|μs|ms|s|m|h))+")
_GO_PART = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


MAX_TIMEOUT: Final = timedelta(hours=24)  # a socket refuses far larger ones only when used


def _timeout(raw: str) -> timedelta:
    """KEDA's `timeout`: a number of milliseconds, or a Go duration ("1.5s", "1m30s")."""
    if raw.startswith("-"):
        raise ValueError("must not be negative")
    try:
        if re.fullmatch(r"[0-9]+(?:\.[0-9]*)?", raw):
            timeout = timedelta(milliseconds=float(raw))
        elif _GO_DURATION.fullmatch(raw):
            seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _GO_PART.findall(raw))
            timeout = timedelta(seconds=seconds)
        else:
            raise ValueError('expected milliseconds ("1500") or a duration ("1.5s", "2m")')
    except OverflowError:  # beyond timedelta's ~2.7 million years (or float's range)
        raise ValueError("out of range: at most 24h") from None
    if timeout > MAX_TIMEOUT:
        raise ValueError("out of range: at most 24h")
    return timeout


def _pem(raw: str) -> str:
    if "-----BEGIN " not in raw:
        raise ValueError("expected PEM text")
    return raw


@dataclass(frozen=True, slots=True, kw_only=True)
class PrometheusConfig:
    """A prometheus trigger's parameters; secrets stay out of repr()."""

    server_address: str = _param("serverAddress")
    query: str = _param("query")
    threshold: float = _param("threshold")
    activation_threshold: float = _param("activationThreshold", default=0.0)
    query_parameters: dict[str, str] = _param("queryParameters", default={})
    namespace: str | None = _param("namespace", default=None)
    custom_headers: dict[str, str] = _param("customHeaders", default={})
    ignore_null_values: bool = _param("ignoreNullValues", default=True)
    unsafe_ssl: bool = _param("unsafeSsl", default=False)
    timeout: timedelta | None = _param("timeout", default=None, converter=_timeout)
    # Who: KEDA reads authModes from metadata or auth params, the credentials from auth params.
    auth_modes: tuple[str, ...] = _param(
        "authModes", sources=(METADATA, AUTH), aliases=("authMode",), default=(), choices=AUTH_MODES
    )
    bearer_token: str | None = _param(
        "bearerToken", sources=(AUTH,), aliases=("token",), default=None, secret=True
    )
    username: str | None = _param("username", sources=(AUTH,), default=None)
    password: str | None = _param("password", sources=(AUTH,), default=None, secret=True)
    custom_auth_header: str | None = _param("customAuthHeader", sources=(AUTH,), default=None)
    custom_auth_value: str | None = _param(
        "customAuthValue", sources=(AUTH,), default=None, secret=True
    )
    # PEM text from auth params. The CA and certificate are not secret, only long.
    ca: str | None = _param("ca", sources=(AUTH,), default=None, secret=True, converter=_pem)
    cert: str | None = _param("cert", sources=(AUTH,), default=None, secret=True, converter=_pem)
    key: str | None = _param("key", sources=(AUTH,), default=None, secret=True, converter=_pem)
    # Known so that they are not "unknown"; refused or ignored by validate() / warnings.
    aws_region: str | None = _param("awsRegion", sources=(METADATA, AUTH), default=None)
    identity_owner: str | None = _param("identityOwner", default=None)

    @property
    def url(self) -> str:
        """serverAddress without a trailing "/"."""
        return self.server_address.rstrip("/")

    @property
    def https(self) -> bool:
        return self.url.lower().startswith("https://")

    @property
    def client_certificate(self) -> bool:
        """A client certificate is presented: `authModes: tls` on an https server."""
        return self.https and "tls" in self.auth_modes

    @property
    def timeout_seconds(self) -> float:
        """The poll's bound: `timeout`, or the default when it is unset or 0 (as in KEDA)."""
        return self.timeout.total_seconds() if self.timeout else DEFAULT_TIMEOUT

    def validate(self) -> None:
        """Rules across fields; every problem is reported at once."""
        problems = _address_problems(self.server_address)
        if self.threshold <= 0:
            problems.append('parameter "threshold" must be greater than 0')
        if "query" in self.query_parameters:
            problems.append('parameter "queryParameters" must not set "query"')
        if self.namespace and "namespace" in self.query_parameters:
            problems.append(
                'the "namespace" query parameter is set twice, by "namespace" and in '
                '"queryParameters"; keep one'
            )
        for name, value in self.custom_headers.items():
            problems += _header_problems(f'parameter "customHeaders": header "{name}"', name, value)
        problems += self._auth_problems()
        if self.aws_region:
            problems.append(
                'Amazon Managed Service for Prometheus (parameter "awsRegion", SigV4 signing) '
                "is not supported"
            )
        if problems:
            raise ConfigError("; ".join(problems))
        if self.https and (self.ca or self.client_certificate):
            problem = _check_tls_material(self)
            if problem:
                raise ConfigError(problem)

    def _auth_problems(self) -> list[str]:
        modes = self.auth_modes
        problems = []
        exclusive = [m for m in _EXCLUSIVE_MODES if m in modes]
        if len(exclusive) > 1:
            problems.append(
                'parameter "authModes" may hold only one of "bearer", "basic" and "oauth", not '
                + " and ".join(f'"{m}"' for m in exclusive)
            )
        if "oauth" in modes:
            problems.append(
                'authModes "oauth" is not supported by the prometheus trigger; use "bearer" '
                'with a token, or "custom"'
            )
        if "bearer" in modes and not self.bearer_token:
            problems.append('authModes "bearer" needs the auth param "bearerToken"')
        if "basic" in modes and not self.username:
            problems.append('authModes "basic" needs the auth param "username"')
        if "tls" in modes and not (self.cert and self.key):
            problems.append('authModes "tls" needs the auth params "cert" and "key"')
        if "custom" in modes:
            if not (self.custom_auth_header and self.custom_auth_value):
                problems.append(
                    'authModes "custom" needs the auth params "customAuthHeader" and '
                    '"customAuthValue"'
                )
            else:
                problems += _header_problems(
                    'auth param "customAuthHeader"',
                    self.custom_auth_header,
                    self.custom_auth_value,
                    value_name='auth param "customAuthValue"',
                )
        owners = _header_owners(self)
        if len(owners.get("authorization", ())) > 1:
            problems.append(
                'the "Authorization" header is set by both '
                + " and ".join(owners["authorization"])
                + "; keep one"
            )
        for name in self.custom_headers:
            setters = owners.get(name.lower(), ())
            if setters:
                problems.append(
                    f'parameter "customHeaders" sets "{name}", which {setters[0]} sets too; '
                    "keep one"
                )
        return problems


def _address_problems(address: str) -> list[str]:
    """Why serverAddress is unusable; never repeats credentials it may carry."""
    try:
        parts = urlsplit(address)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        parts, port_ok = None, False
    if parts is not None and (parts.username is not None or parts.password is not None):
        return [
            'parameter "serverAddress" must not carry credentials ("user:password@"); use '
            'authModes "basic" with the auth params "username" and "password"'
        ]
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        return [f'parameter "serverAddress" value "{address}" is not an http:// or https:// URL']
    if parts.query or parts.fragment or address.endswith(("?", "#")):
        return [
            f'parameter "serverAddress" value "{address}" must not have a query or fragment; '
            'use "queryParameters"'
        ]
    return []


def _header_problems(
    what: str, name: str, value: str, *, value_name: str | None = None
) -> list[str]:
    """A header HTTP cannot carry: a bad name, or a value with control characters (never
    shown: it may be a credential). Other text is sent as UTF-8, as Go (KEDA) sends it."""
    problems = []
    if not _TOKEN.fullmatch(name):
        problems.append(f"{what} is not a valid HTTP header name")
    if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
        subject = value_name or f"{what}: its value"
        problems.append(f"{subject} has control characters, which an HTTP header cannot carry")
    return problems


def _header_owners(config: PrometheusConfig) -> dict[str, list[str]]:
    """Lower-cased header name -> the auth modes that set it."""
    owners: dict[str, list[str]] = {}
    for mode in ("bearer", "basic"):
        if mode in config.auth_modes:
            owners.setdefault("authorization", []).append(f'authModes "{mode}"')
    if "custom" in config.auth_modes and config.custom_auth_header:
        owners.setdefault(config.custom_auth_header.lower(), []).append('authModes "custom"')
    return owners


def ignored_parameters(config: PrometheusConfig, auth_params: Mapping[str, str]) -> list[str]:
    """Warnings for parameters that have no effect (KEDA ignores them silently)."""
    notes = []
    modes = config.auth_modes
    if "apiKey" in modes:
        notes.append(
            'authModes "apiKey" has no effect on the prometheus trigger (nor in KEDA); '
            'use "custom" to send a key in a header'
        )
    unused = {
        "bearer": ("bearerToken", "token"),
        "basic": ("username", "password"),
        "custom": ("customAuthHeader", "customAuthValue"),
        "tls": ("cert", "key"),
    }
    for mode, names in unused.items():
        given = [f'"{n}"' for n in names if n in auth_params and mode not in modes]
        if given:
            notes.append(f'auth params {", ".join(given)} are ignored: authModes has no "{mode}"')
    if not config.https:
        tls = [f'"{n}"' for n in ("ca",) if n in auth_params]
        tls += ['"unsafeSsl"'] if config.unsafe_ssl else []
        tls += ['authModes "tls"'] if "tls" in modes else []
        if tls:
            notes.append(f"{', '.join(tls)} ignored: serverAddress is http://, not https://")
    if any(name.lower() == "authorization" for name in config.custom_headers) and not (
        {"bearer", "basic", "custom"} & set(modes)
    ):
        notes.append(
            'parameter "customHeaders" carries "Authorization": credentials belong in a '
            'TriggerAuthentication (authModes "bearer", "basic" or "custom")'
        )
    if config.identity_owner is not None:
        notes.append(
            'parameter "identityOwner" is ignored: it only applies to Amazon Managed '
            "Prometheus, which is not supported"
        )
    if config.activation_threshold < 0:
        notes.append(
            'parameter "activationThreshold" is negative: a value of 0 makes the trigger active'
        )
    return notes


def _unsupported_identity(metadata: Mapping[str, str], auth_params: Mapping[str, str]) -> str:
    """Why the trigger asks for a cloud identity we do not implement, or ""."""
    google = [f'"{k}"' for k in ("credentialsFromEnv", "credentialsFromEnvFile") if k in metadata]
    if "GoogleApplicationCredentials" in auth_params:
        google.insert(0, 'auth param "GoogleApplicationCredentials"')
    if google:
        return (
            f"Google Managed Service for Prometheus credentials ({', '.join(google)}) are not "
            "supported"
        )
    return ""


# ---------------------------------------------------------------------------------------------
# What is sent (pure)


def request_headers(config: PrometheusConfig) -> dict[str, str]:
    """Every header a query carries besides requests' own: customHeaders, then the auth
    modes' headers (validate() has made sure they do not overlap)."""
    return {**config.custom_headers, **_auth_headers(config)}


def _auth_headers(config: PrometheusConfig) -> dict[str, str]:
    headers = {}
    if "bearer" in config.auth_modes and config.bearer_token:
        headers["Authorization"] = f"Bearer {config.bearer_token}"
    if "basic" in config.auth_modes and config.username is not None:
        headers["Authorization"] = f"Basic {_basic_credentials(config)}"
    if "custom" in config.auth_modes and config.custom_auth_header and config.custom_auth_value:
        headers[config.custom_auth_header] = config.custom_auth_value
    return headers


def _basic_credentials(config: PrometheusConfig) -> str:
    """user:password in base64 over UTF-8, as Go's SetBasicAuth (requests would use Latin-1)."""
    pair = f"{config.username or ''}:{config.password or ''}"
    return base64.b64encode(pair.encode()).decode("ascii")


def query_params(config: PrometheusConfig) -> dict[str, str]:
    """The query string besides `query`: Prometheus' own evaluation timeout (the poll's, in
    milliseconds), `namespace`, then queryParameters, which may override the timeout."""
    params = {"timeout": f"{max(1, round(config.timeout_seconds * 1000))}ms"}
    if config.namespace:
        params["namespace"] = config.namespace
    params.update(config.query_parameters)
    return params


# ---------------------------------------------------------------------------------------------
# What the answer means (pure)


def infer_result_type(result: object) -> str:
    """`data.resultType` of an answer, from the shape of `data.result`.

    prometheus-api-client returns `data.result` only, whose shape tells the type: a list of
    objects with `value` (vector, the empty list included) or `values` (matrix), or a
    `[timestamp, "text"]` pair (scalar; a string result has the same shape and is read the same
    way). Anything else is "unknown".
    """
    if isinstance(result, list):
        if all(isinstance(item, dict) for item in result):
            return "matrix" if any("values" in item for item in result) else "vector"
        if (
            len(result) == 2
            and isinstance(result[0], int | float)
            and not isinstance(result[0], bool)
            and isinstance(result[1], str)
        ):
            return "scalar"
    return "unknown"


def result_to_value(result_type: str, result: Any, ignore_null_values: bool) -> float:
    """The number a query answer scales on; ScalerQueryError when there is none to trust.

    See the module docstring for the rules (no series, NaN, +/-Inf, several series).
    """
    match result_type:
        case "vector":
            series = list(result)
            if not series:
                return _null("the query returned no series (an empty vector)", ignore_null_values)
            if len(series) > 1:
                shown = ", ".join(_labels(s) for s in series[:3])
                more = ", ..." if len(series) > 3 else ""
                raise ScalerQueryError(
                    f"the query returned {len(series)} series ({shown}{more}); it must return "
                    "exactly one: aggregate them, e.g. sum(...) or max(...)"
                )
            pair = series[0].get("value")
            if not pair:
                return _null("the query's series has no value", ignore_null_values)
            return _number(pair, ignore_null_values)
        case "scalar" | "string":
            return _number(result, ignore_null_values)
        case "matrix":
            raise ScalerQueryError(
                "the query returned a range vector (matrix); it must return an instant vector "
                "or a scalar: apply a function such as rate() or avg_over_time() to the range"
            )
        case _:
            raise ScalerQueryError(f'the query returned a result of unknown type "{result_type}"')


def _null(what: str, ignore_null_values: bool) -> float:
    if ignore_null_values:
        return 0.0
    raise ScalerQueryError(
        f"{what} and ignoreNullValues is false: what the query selects may be gone "
        "(e.g. its target is down)"
    )


def _number(pair: object, ignore_null_values: bool) -> float:
    """A `[timestamp, "value"]` pair's value, NaN and infinities handled explicitly."""
    if not (isinstance(pair, Sequence) and len(pair) == 2 and isinstance(pair[1], str)):
        raise ScalerQueryError(f"the query result is malformed: {str(pair)[:100]}")
    text = pair[1]
    try:
        value = float(text)
    except ValueError:
        raise ScalerQueryError(f'the query returned "{text[:100]}", not a number') from None
    if math.isnan(value):
        return _null("the query returned NaN", ignore_null_values)
    if math.isinf(value):
        raise ScalerQueryError(
            f"the query returned {text}, which cannot be scaled on (a division by zero?); "
            "this is an error whatever ignoreNullValues says"
        )
    return value


def _labels(series: object) -> str:
    metric = series.get("metric", {}) if isinstance(series, dict) else {}
    if not isinstance(metric, dict):
        return "{}"
    name = metric.get("__name__", "")
    pairs = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    return f"{name}{{{pairs}}}"


# ---------------------------------------------------------------------------------------------
# Connections


@dataclass(frozen=True, slots=True)
class PrometheusEndpoint:
    """The key of a shared client: equal endpoints share one. Digests, never secrets."""

    url: str
    auth_digest: str | None  # of the headers the auth modes set
    headers_digest: str | None  # of customHeaders
    unsafe_ssl: bool = False  # TLS settings count for https only
    tls_digest: str | None = None  # of ca, and of cert and key when a client certificate is sent

    @classmethod
    def of(cls, config: PrometheusConfig) -> PrometheusEndpoint:
        material = None
        if config.https and (config.ca or config.client_certificate):
            parts = (
                (config.ca, config.cert, config.key) if config.client_certificate else (config.ca,)
            )
            material = secret_digest("\0".join(p or "" for p in parts))
        return cls(
            url=config.url,
            auth_digest=_digest(_auth_headers(config)),
            headers_digest=_digest(config.custom_headers),
            unsafe_ssl=config.https and config.unsafe_ssl,
            tls_digest=material,
        )

    def __str__(self) -> str:
        return self.url


def _digest(headers: Mapping[str, str]) -> str | None:
    return secret_digest(json.dumps(sorted(headers.items()))) if headers else None


class _Adapter(requests.adapters.HTTPAdapter):
    """requests' adapter with one SSLContext built once per client (system roots, requests'
    bundle, `ca`, the client certificate loaded from memory), and no retries."""

    def __init__(self, tls: ssl.SSLContext | None) -> None:
        self._tls = tls
        super().__init__(
            pool_connections=1,
            pool_maxsize=MAX_CONNECTIONS,
            max_retries=Retry(total=0, raise_on_status=False),
        )

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host, pool = super().build_connection_pool_key_attributes(request, verify, cert)
        if self._tls is None:
            return host, pool
        return host, {"ssl_context": self._tls}

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Nothing to do: the SSLContext carries verification and the client certificate."""


def _tls_context(config: PrometheusConfig, *, system_roots: bool = True) -> ssl.SSLContext:
    """KEDA's TLS client: trusted roots (with what requests trusts by default) plus `ca`;
    `unsafeSsl` skips verification."""
    return tls.client_context(
        ca=config.ca,
        cert=config.cert if config.client_certificate else None,
        key=config.key if config.client_certificate else None,
        unsafe_ssl=config.unsafe_ssl,
        system_roots=system_roots,
        extra_roots_file=DEFAULT_CA_BUNDLE_PATH,
    )


def _check_tls_material(config: PrometheusConfig) -> str | None:
    """Why `ca`, `cert` and `key` cannot be used, or None; never their text."""
    which = '"ca", "cert" or "key"' if config.client_certificate else '"ca"'
    return tls.material_problem(lambda: _tls_context(config, system_roots=False), which)


def _open_client(config: PrometheusConfig) -> PrometheusConnect:
    """A client with its own session and pool (blocking: loads CA bundles); no connection yet."""
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    # Mounted under the server's URL: longer than the prefix PrometheusConnect mounts its own
    # (retrying) adapter at, so every query goes through this one.
    session.mount(f"{config.url}/", _Adapter(_tls_context(config) if config.https else None))
    # Values as UTF-8 bytes, as Go sends them (http.client would encode text as Latin-1).
    headers = {name: value.encode() for name, value in request_headers(config).items()}
    return PrometheusConnect(
        url=config.url,
        headers=headers,
        session=session,
        retry=Retry(total=0, raise_on_status=False),
    )


async def _close_client(shared: SharedPrometheus) -> None:
    await blocking.run_blocking(shared.client.close)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a shared query's exception as seen: every poll waiting for it may have timed out."""
    if not task.cancelled():
        task.exception()


class SharedPrometheus:
    """What one shared lease holds: the client, and the queries in flight on it.

    A poll whose query (with its parameters and timeout) is already in flight on this client
    waits for that request's answer instead of sending its own: the server, credentials,
    headers and TLS settings are the client's, so the answer is the same. The answer (or
    error) is shared; each scaler interprets it with its own settings. Nothing is cached
    beyond the request's lifetime: a poll never reads an answer older than its own start.

    At most MAX_CONNECTIONS requests are in flight at once (so at most that many connections
    to the server, and worker threads, per client); a query waiting for its turn is shared by
    the polls of it arriving meanwhile, and is not sent at all if every one of them gave up.
    """

    __slots__ = ("_counters", "_in_flight", "_slots", "_waiting", "client")

    def __init__(self, client: PrometheusConnect) -> None:
        self.client = client
        self._in_flight: dict[Hashable, asyncio.Future[Any]] = {}
        self._waiting: dict[Hashable, int] = {}
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self._counters = coalescing_counters("prometheus")

    async def query(self, key: Hashable, fetch: Callable[[], Awaitable[Any]]) -> Any:
        """`fetch()`'s answer, shared with every concurrent query of the same `key`."""
        self._counters.reads += 1
        request = self._in_flight.get(key)
        if request is None:
            request = self._in_flight[key] = asyncio.ensure_future(self._send(key, fetch))
            request.add_done_callback(_retrieve)
            request.add_done_callback(lambda done: self._forget(key, done))
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            # Shielded: a poll that times out leaves the request to the others waiting for it.
            return await asyncio.shield(request)
        finally:
            self._waiting[key] -= 1
            if not self._waiting[key]:
                del self._waiting[key]

    async def _send(self, key: Hashable, fetch: Callable[[], Awaitable[Any]]) -> Any:
        async with self._slots:
            if not self._waiting.get(key):
                raise TimeoutError("every poll of this query gave up before it was sent")
            self._counters.round_trips += 1
            return await fetch()

    def _forget(self, key: Hashable, request: asyncio.Future[Any]) -> None:
        if self._in_flight.get(key) is request:
            del self._in_flight[key]


class _NotPrometheusError(Exception):
    """A 200 answer that is JSON but not a Prometheus query API response."""


# ---------------------------------------------------------------------------------------------
# The scaler


class PrometheusScaler:
    """One prometheus trigger; see the module docstring."""

    type_name: ClassVar[str] = "prometheus"
    aliases: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        config: PrometheusConfig,
        *,
        trigger_index: int,
        trigger_name: str | None = None,
        connections: SharedClients,
        metric_type: MetricType = MetricType.AVERAGE_VALUE,
    ) -> None:
        self.config = config
        self.metric_name = registry.metric_name(trigger_index, "prometheus")
        self.metric_type = metric_type
        self.endpoint = PrometheusEndpoint.of(config)
        self.label = registry.trigger_label(
            index=trigger_index, name=trigger_name, type_name=self.type_name
        )
        self.timeout = config.timeout_seconds
        self._params = query_params(config)
        self._connections = connections
        self._lease: Lease[SharedPrometheus] | None = None
        # Equal keys (on one shared client) are the same request: see SharedPrometheus.
        self._query_key = (config.query, tuple(sorted(self._params.items())), self.timeout)
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
        unsupported = _unsupported_identity(metadata, auth_params)
        if unsupported:
            raise ConfigError(f"{label}: {unsupported}")
        config = parse_params(
            PrometheusConfig,
            metadata=metadata,
            auth_params=auth_params,
            resolved_env=resolved_env,
            trigger_label=label,
            warnings=warnings,
        )
        if warnings is not None:
            notes = ignored_parameters(config, auth_params)
            warnings.extend(f"{label}: {note}" for note in notes)
        return cls(
            config,
            trigger_index=trigger_index,
            trigger_name=trigger_name,
            connections=connections,
            metric_type=metric_type,
        )

    def __repr__(self) -> str:
        return f"<PrometheusScaler {self.metric_name} {self.endpoint}>"

    async def sample(self) -> MetricSample:
        """One poll: ScalerUnavailableError if Prometheus cannot be reached or answer in time,
        ScalerQueryError if its answer cannot be scaled on."""
        try:
            async with asyncio.timeout(self.timeout):
                shared = await self._client()
                result = await shared.query(
                    self._query_key, lambda: blocking.run_blocking(self._fetch, shared.client)
                )
            value = result_to_value(
                infer_result_type(result), result, self.config.ignore_null_values
            )
        except (
            ScalerError,
            TimeoutError,
            OSError,
            requests.RequestException,
            PrometheusApiClientException,
            _NotPrometheusError,
        ) as exc:
            error = self._error_for(exc)
        else:
            return MetricSample(
                name=self.metric_name,
                value=value,
                target=self.config.threshold,
                activation_target=self.config.activation_threshold,
                metric_type=self.metric_type,
            )
        # Raised outside the handler: the library's exception (its text may hold the response
        # body) is neither chained nor kept as context.
        raise error

    async def aclose(self) -> None:
        """Release the shared client (closed if this was its last user); idempotent."""
        lease, self._lease = self._lease, None
        if lease is not None:
            await lease.release()

    async def _client(self) -> SharedPrometheus:
        async with self._leasing:
            if self._lease is None:
                config = self.config

                async def open_client() -> SharedPrometheus:
                    return SharedPrometheus(await blocking.run_blocking(_open_client, config))

                self._lease = await self._connections.acquire(
                    self.endpoint, open_client, _close_client
                )
            return self._lease.client

    def _fetch(self, client: PrometheusConnect) -> Any:
        """The instant query (blocking); `data.result` of the answer."""
        try:
            # requests takes a float (connect and read); the library's hint says int.
            return client.custom_query(
                self.config.query,
                params=dict(self._params),
                timeout=self.timeout,  # type: ignore[arg-type]
            )
        except requests.RequestException:
            raise
        except (KeyError, TypeError):  # JSON, but not the shape of Prometheus' answers
            raise _NotPrometheusError() from None

    def _error_for(self, exc: BaseException) -> ScalerError:
        """Our error for a failed poll, naming the trigger and server, credentials scrubbed."""
        where = f"{self.label}: {self.endpoint}"
        timeout = f"{self.timeout:g}s"
        if isinstance(exc, ScalerQueryError | ScalerUnavailableError):
            return type(exc)(f"{where}: {self._scrub(str(exc))}")
        if isinstance(exc, TimeoutError | requests.exceptions.ReadTimeout):
            return ScalerUnavailableError(f"{where}: no answer within {timeout}")
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return ScalerUnavailableError(f"{where}: no connection within {timeout}")
        if isinstance(exc, requests.exceptions.SSLError):
            return ScalerUnavailableError(f"{where}: TLS failed: {self._reason(exc)}")
        if isinstance(
            exc, requests.exceptions.ConnectionError | requests.exceptions.ChunkedEncodingError
        ):
            return ScalerUnavailableError(f"{where}: unavailable: {self._reason(exc)}")
        if isinstance(exc, requests.exceptions.JSONDecodeError | _NotPrometheusError):
            return ScalerQueryError(
                f"{where}: the answer is not a Prometheus query API response; "
                "check that serverAddress points at Prometheus' HTTP API"
            )
        if isinstance(exc, PrometheusApiClientException):
            return self._http_error(where, str(exc))
        if isinstance(exc, requests.RequestException):
            return ScalerQueryError(f"{where}: request failed: {type(exc).__name__}")
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        return ScalerUnavailableError(f"{where}: unavailable: {self._scrub(reason)}")

    def _http_error(self, where: str, text: str) -> ScalerError:
        """A non-200 answer: 408, 429 and 5xx are transient, other codes are not."""
        match = re.fullmatch(r"HTTP Status Code (\d+) \((.*)\)", text, re.DOTALL)
        if match is None:
            return ScalerQueryError(f"{where}: {self._scrub(text[:300])}")
        status = int(match[1])
        try:
            phrase = f" {http.HTTPStatus(status).phrase}"
        except ValueError:
            phrase = ""
        detail = self._scrub(_answer_text(match[2]))
        message = f"{where}: HTTP {status}{phrase}" + (f": {detail}" if detail else "")
        if status in (408, 429) or status >= 500:
            return ScalerUnavailableError(message)
        return ScalerQueryError(message)

    def _reason(self, exc: requests.RequestException) -> str:
        """The network reason of a requests error, without the URL requests puts around it."""
        inner: object = exc.args[0] if exc.args else exc
        inner = getattr(inner, "reason", inner)  # urllib3's MaxRetryError wraps the cause
        text = str(inner)
        text = re.sub(r"^\w+\(host='[^']*', port=\d+\): ", "", text)
        text = re.sub(r"<[^<>]* object at 0x[0-9a-fA-F]+>:? ?", "", text)
        return self._scrub(text) or type(exc).__name__

    def _scrub(self, text: str) -> str:
        config = self.config
        secrets = [config.bearer_token, config.password, config.custom_auth_value]
        if "basic" in config.auth_modes and config.username is not None:
            secrets.append(_basic_credentials(config))
        for secret in sorted((s for s in secrets if s), key=len, reverse=True):
            text = text.replace(secret, "***")
        return text


def _answer_text(literal: str) -> str:
    """Prometheus' error from the body prometheus-api-client quotes (a bytes literal):
    `errorType: error` for its JSON errors, else the body's text, shortened."""
    try:
        raw = ast.literal_eval(literal)
        body = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    except (ValueError, SyntaxError):
        body = literal
    with contextlib.suppress(ValueError):
        parsed = json.loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
            kind = parsed.get("errorType")
            return f"{kind}: {parsed['error']}" if isinstance(kind, str) else parsed["error"]
    body = " ".join(body.split())
    return body if len(body) <= 300 else body[:300] + "..."
