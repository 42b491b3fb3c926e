"""`type: rabbitmq`: scale on a RabbitMQ queue's depth or message rates.

KEDA's trigger, parameter for parameter. Two ways to read a queue, chosen by `protocol`
(`auto`, the default, follows the scheme of the `host` URL):

- `amqp` (amqp:// or amqps://): a passive queue.declare on the broker. The reply carries the
  queue's READY messages only: messages delivered to a consumer and not yet acknowledged are
  not counted, and no rates exist. QueueLength mode only.
- `http` (http:// or https://): the management API, `GET /api/queues/{vhost}/{queue}` (or the
  paginated `GET /api/queues/{vhost}?use_regex=true&name=...` with `useRegex`). The count is
  `messages` (ready + unacknowledged), or `messages_ready` with `excludeUnacknowledged`; rates
  come from `message_stats.publish_details.rate` and `message_stats.deliver_get_details.rate`.

Modes (`mode` + `value`; neither, nor the deprecated `queueLength`: QueueLength with 20):

- QueueLength: the count; active when it exceeds `activationValue`.
- MessageRate: the publish rate; active when the rate OR the count exceeds `activationValue`
  (a backlog with no publishers still wakes the workload).
- DeliverGetRate: the deliver/get rate; active when it exceeds `activationValue`.
- PublishedToDeliveredRatio: publish rate / deliver rate (0 without publishes; with publishes
  but no deliveries, `activationValue` and active).
- ExpectedQueueConsumptionTime: (publish - deliver) / deliver + count / deliver, in seconds (0
  for an empty queue; `activationValue` and active when nothing is delivered from a non-empty
  queue), as KEDA computes it since its fix for empty queues.

A sample's activity is `value > activation_target`; where KEDA's activity is not that
comparison (MessageRate's backlog, and the two forced cases above), the sample's
activation_target is -inf, which makes it active. The metric is named
`s{index}-rabbitmq-{queueName}` with the queue name URL-query-escaped and normalised, as KEDA does.

What a missing queue means: over AMQP the passive declare fails with 404 NOT_FOUND (the broker
closes that channel, never the shared connection); over HTTP the API answers 404. Both are a
ScalerQueryError, never 0: a misspelt queue or vhost must not scale a workload to zero. (KEDA
also errors there.) A queue the management API lists without statistics yet (a queue created
a moment ago, or statistics collection disabled) is a ScalerUnavailableError, not 0 (KEDA reads
0). A regex matching no queue is 0, as in KEDA: no queue, no work.

Differences from KEDA, all on the side of safety or correctness:

- `value` and `queueLength` must be > 0 (KEDA passes a negative target on to the HPA).
- `operation: avg` is a true average (KEDA divides integers: counts 0 and 1 average to 0,
  which can scale to zero while a message waits).
- `useRegex` reads every page of matches (KEDA fails when they do not fit in one page).
- a `host` URL is parsed here, so passwords with URL-escaped special characters work, and no
  error message ever contains it; a password in a plain-metadata `host` gives a warning.
- `unsafeSsl` applies to every TLS connection (KEDA ignores it for amqps:// unless `tls:
  enable`); mismatches between `protocol` and the URL scheme are configuration errors.
- not supported: OAuth2 client credentials and Azure Workload Identity (HTTP only in KEDA).

Connections: the AMQP connection is leased from SharedClients on the first poll and shared by
every trigger reading the same broker, vhost, credentials and TLS settings (KEDA opens one per
trigger); each poll opens a channel of its own and closes it, so a failing poll cannot break
another's. The HTTP client (one aiohttp session, a bounded connection pool) is shared per
management URL, credentials and TLS settings. Connections are built from parts, never from the
user's URL; each poll is bounded by POLL_TIMEOUT (or `timeout`, if longer), an AMQP connect by
CONNECT_TIMEOUT and each HTTP request by `timeout` (default 3000 ms). I/O
(`RabbitMQScaler._fetch`) is kept apart from interpretation (`sample_from_snapshot`, pure).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import json
import math
import re
import ssl
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar, Final, Self

import aiohttp
import aiormq
import aiormq.exceptions
from yarl import URL

from autoscale.errors import ConfigError, ScalerQueryError, ScalerUnavailableError
from autoscale.scalers import registry, tls
from autoscale.scalers.base import MetricSample, MetricType
from autoscale.scalers.connections import Lease, SharedClients, secret_digest
from autoscale.scalers.params import AUTH, ENV, METADATA, parse_params
from autoscale.scalers.params import param as _param

__all__ = [
    "CONNECT_TIMEOUT",
    "DEFAULT_HTTP_TIMEOUT",
    "DEFAULT_QUEUE_LENGTH",
    "POLL_TIMEOUT",
    "AmqpBroker",
    "BrokerEndpoint",
    "HostURL",
    "ManagementEndpoint",
    "Mode",
    "Operation",
    "Protocol",
    "QueueSnapshot",
    "QueueStats",
    "RabbitMQConfig",
    "RabbitMQScaler",
    "Reading",
    "parse_host",
    "queue_reading",
    "sample_from_snapshot",
    "stats_from_json",
]

CONNECT_TIMEOUT: Final = 3.0  # seconds to open an AMQP connection (TCP, TLS and AMQP handshakes)
POLL_TIMEOUT: Final = 5.0  # seconds for a whole poll (at least; a longer `timeout` extends it)
DEFAULT_HTTP_TIMEOUT: Final = timedelta(milliseconds=3000)  # KEDA_HTTP_DEFAULT_TIMEOUT
DEFAULT_QUEUE_LENGTH: Final = 20.0  # KEDA's target when no mode, value or queueLength is set
HEARTBEAT: Final = 10  # seconds; a silent broker is noticed after about 3 heartbeats
MAX_CHANNELS: Final = 64  # concurrent polls (channels) on one shared AMQP connection
MAX_HTTP_CONNECTIONS: Final = 8  # per shared HTTP session
CLOSE_TIMEOUT: Final = 2.0  # seconds for closing a channel or connection
CLIENT_NAME: Final = "autoscale"  # the AMQP connection name the broker shows
ERROR_BODY_LIMIT: Final = 300  # characters of an error reply quoted in a message

# The management API fields a poll reads (`columns=` keeps replies small).
COLUMNS: Final = ",".join(
    (
        "name",
        "messages",
        "messages_ready",
        "message_stats.publish",
        "message_stats.publish_details.rate",
        "message_stats.deliver_get",
        "message_stats.deliver_get_details.rate",
    )
)

_DEFAULT_PORTS: Final = {"amqp": 5672, "amqps": 5671, "http": 80, "https": 443}
_USERINFO = re.compile(r"(?<=://)[^/@\s]*@")


class Mode(enum.Enum):
    """What the trigger scales on (KEDA's `mode`)."""

    QUEUE_LENGTH = "QueueLength"
    MESSAGE_RATE = "MessageRate"
    DELIVER_GET_RATE = "DeliverGetRate"
    PUBLISHED_TO_DELIVERED_RATIO = "PublishedToDeliveredRatio"
    EXPECTED_QUEUE_CONSUMPTION_TIME = "ExpectedQueueConsumptionTime"


class Protocol(enum.Enum):
    """How the queue is read; AUTO follows the host URL's scheme."""

    AUTO = "auto"
    AMQP = "amqp"
    HTTP = "http"


class Operation(enum.Enum):
    """How the queues matched by `useRegex` are combined."""

    SUM = "sum"
    MAX = "max"
    AVG = "avg"


# ---------------------------------------------------------------------------------------------
# The host URL


@dataclass(frozen=True, slots=True)
class HostURL:
    """A parsed `host`; the password stays out of repr()."""

    scheme: str  # amqp, amqps, http or https
    host: str
    port: int
    path: str  # as written, still percent-encoded
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    query: tuple[tuple[str, str], ...] = ()

    @property
    def protocol(self) -> Protocol:
        return Protocol.AMQP if self.scheme in ("amqp", "amqps") else Protocol.HTTP

    @property
    def tls(self) -> bool:
        return self.scheme in ("amqps", "https")

    @property
    def amqp_vhost(self) -> str:
        """The AMQP URI's vhost: the path after its first "/" (decoded); "/" if empty."""
        rest = self.path[1:] if self.path.startswith("/") else self.path
        return urllib.parse.unquote(rest) or "/"

    @property
    def management_prefix_and_vhost(self) -> tuple[str, str]:
        """KEDA's reading of a management URL: the last path segment is the vhost (root if
        empty), the segments before it a prefix (the API behind a reverse proxy)."""
        segments = self.path.split("/")
        prefix = "/".join(s for s in segments[:-1] if s)
        return (f"/{prefix}" if prefix else ""), (urllib.parse.unquote(segments[-1]) or "/")


def parse_host(raw: str) -> HostURL:
    """Parse a `host` URL; ValueError says what is wrong without repeating the URL."""
    if "://" not in raw:
        raise ValueError("is not a URL: write amqp://host:5672/vhost or http://host:15672/vhost")
    parts = urllib.parse.urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        shown = scheme if re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme) else "?"
        raise ValueError(f'has the scheme "{shown}"; use amqp, amqps, http or https')
    if not parts.hostname:
        raise ValueError("has no host name")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    username = parts.username
    password = parts.password
    return HostURL(
        scheme=scheme,
        host=parts.hostname,
        port=port or _DEFAULT_PORTS[scheme],
        path=parts.path,
        username=urllib.parse.unquote(username) if username else None,
        password=urllib.parse.unquote(password) if password is not None else None,
        query=tuple(urllib.parse.parse_qsl(parts.query)),
    )


def _pem(raw: str) -> str:
    if "-----BEGIN " not in raw:
        raise ValueError("expected PEM text")
    return raw


# ---------------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True, slots=True, kw_only=True)
class RabbitMQConfig:
    """A rabbitmq trigger's parameters; secrets stay out of repr()."""

    # Where. `host` may embed credentials: it is secret, never quoted.
    host: str = _param("host", sources=(METADATA, AUTH, ENV), secret=True)
    protocol: Protocol = _param("protocol", sources=(METADATA, AUTH), default=Protocol.AUTO)
    vhost_name: str | None = _param("vhostName", sources=(METADATA, AUTH), default=None)
    # What.
    queue_name: str = _param("queueName")
    mode: Mode | None = _param("mode", default=None)
    value: float | None = _param("value", default=None)
    activation_value: float = _param("activationValue", default=0.0)
    queue_length: float | None = _param(
        "queueLength", default=None, deprecated='use "mode: QueueLength" and "value"'
    )
    use_regex: bool = _param("useRegex", default=False)
    operation: Operation = _param("operation", default=Operation.SUM)
    page_size: int = _param("pageSize", default=100)
    exclude_unacknowledged: bool = _param("excludeUnacknowledged", default=False)
    timeout: timedelta | None = _param("timeout", default=None, unit=timedelta(milliseconds=1))
    # Who. Given together, they replace the credentials of the host URL.
    username: str | None = _param("username", sources=(AUTH, ENV), default=None)
    password: str | None = _param("password", sources=(AUTH, ENV), default=None, secret=True)
    # TLS: the URL scheme decides encryption; `tls: enable` adds the material below.
    tls: str = _param("tls", sources=(AUTH,), default="disable", choices=("enable", "disable"))
    unsafe_ssl: bool = _param("unsafeSsl", default=False)
    ca: str | None = _param("ca", sources=(AUTH,), default=None, secret=True, converter=_pem)
    cert: str | None = _param("cert", sources=(AUTH,), default=None, secret=True, converter=_pem)
    key: str | None = _param("key", sources=(AUTH,), default=None, secret=True, converter=_pem)
    key_password: str | None = _param("keyPassword", sources=(AUTH,), default=None, secret=True)

    # -- derived -------------------------------------------------------------------------------

    @property
    def url(self) -> HostURL:
        """The parsed host (validate() has checked that it parses)."""
        return parse_host(self.host)

    @property
    def protocol_in_use(self) -> Protocol:
        """`protocol`, or with `auto` the one the host's scheme implies."""
        if self.protocol is Protocol.AUTO:
            return self.url.protocol
        return self.protocol

    @property
    def mode_in_use(self) -> Mode:
        """KEDA's choice: `mode`; else QueueLength (from `queueLength` or the default)."""
        return self.mode if self.mode is not None else Mode.QUEUE_LENGTH

    @property
    def target(self) -> float:
        """`value`, else `queueLength`, else 20; a 0 counts as unset, as in KEDA."""
        if self.value:
            return self.value
        if self.queue_length:
            return self.queue_length
        return DEFAULT_QUEUE_LENGTH

    @property
    def vhost(self) -> str:
        """`vhostName`, else the host URL's vhost."""
        if self.vhost_name:
            return self.vhost_name
        url = self.url
        if url.protocol is Protocol.AMQP:
            return url.amqp_vhost
        return url.management_prefix_and_vhost[1]

    @property
    def credentials(self) -> tuple[str | None, str | None]:
        """(username, password): the auth params when given, else those of the URL."""
        if self.username and self.password:
            return self.username, self.password
        url = self.url
        return url.username, url.password

    @property
    def tls_material(self) -> bool:
        """Whether `tls: enable` asks for ca/cert/key to be used."""
        return self.tls == "enable"

    @property
    def sasl_external(self) -> bool:
        """AMQP SASL EXTERNAL (the client certificate is the identity): `tls: enable` with a
        certificate and no credentials at all (KEDA 2.20), or `auth_mechanism=external` in
        the URL's query (the AMQP client library's own switch, which KEDA also honours)."""
        url = self.url
        asked = any(k == "auth_mechanism" and v.lower() == "external" for k, v in url.query)
        username, password = self.credentials
        implied = self.tls_material and bool(self.cert) and not username and not password
        return asked or implied

    @property
    def request_timeout(self) -> timedelta:
        """Per HTTP request: `timeout` (0 means the default, as in KEDA), else 3000 ms."""
        return self.timeout or DEFAULT_HTTP_TIMEOUT

    # -- rules across fields -------------------------------------------------------------------

    def validate(self) -> None:
        """Every rule KEDA checks, plus a few of ours; all problems are reported at once."""
        problems: list[str] = []
        protocol: Protocol | None = None
        try:
            url = self.url
        except ValueError as exc:
            problems.append(f'parameter "host" {exc}')
        else:
            protocol = self.protocol_in_use
            if self.protocol is not Protocol.AUTO and url.protocol is not self.protocol:
                wanted = "amqp(s)://" if protocol is Protocol.AMQP else "http(s)://"
                problems.append(
                    f'protocol "{self.protocol.value}" needs a host URL starting with {wanted}, '
                    f"not {url.scheme}://"
                )
        if (self.cert is None) != (self.key is None):
            given, missing = ("cert", "key") if self.key is None else ("key", "cert")
            problems.append(f'auth param "{given}" needs "{missing}" too')
        if self.page_size < 1:
            problems.append('parameter "pageSize" must be at least 1')
        if bool(self.username) != bool(self.password):
            given, missing = ("username", "password") if self.username else ("password", "username")
            problems.append(f'parameter "{given}" needs "{missing}" too')
        problems.extend(self._trigger_problems())
        if protocol is Protocol.AMQP:
            problems.extend(self._amqp_problems())
        if problems:
            raise ConfigError("; ".join(problems))
        if self.tls_material:
            problem = _check_tls_material(self)
            if problem:
                raise ConfigError(problem)

    def _trigger_problems(self) -> list[str]:
        """Mode, value and queueLength, read as KEDA reads them (0 means unset)."""
        problems = []
        if self.value is not None and self.value < 0:
            problems.append('parameter "value" must be greater than 0')
        if self.queue_length is not None and self.queue_length < 0:
            problems.append('parameter "queueLength" must be greater than 0')
        if self.queue_length and (self.mode is not None or self.value):
            problems.append(
                'parameter "queueLength" is deprecated and cannot be combined with "mode" or '
                '"value": use "mode" and "value" alone'
            )
        elif self.mode is None and self.value:
            problems.append('parameter "value" needs "mode" too')
        elif self.mode is not None and not self.value:
            problems.append(f'mode "{self.mode.value}" needs parameter "value" too')
        return problems

    def _amqp_problems(self) -> list[str]:
        """What only the management API can do."""
        problems = []
        if self.mode_in_use is not Mode.QUEUE_LENGTH:
            problems.append(
                f'mode "{self.mode_in_use.value}" needs the management API (protocol http): '
                "AMQP reports no rates"
            )
        if self.use_regex:
            problems.append('"useRegex: true" needs the management API (protocol http)')
        if self.exclude_unacknowledged:
            problems.append(
                '"excludeUnacknowledged: true" needs the management API (protocol http): '
                "AMQP counts ready messages only"
            )
        if self.timeout:
            problems.append(
                'parameter "timeout" applies to the management API only (protocol http)'
            )
        return problems


def ignored_parameters(
    config: RabbitMQConfig, metadata: Mapping[str, str], auth_params: Mapping[str, str]
) -> list[str]:
    """Warnings for what KEDA silently ignores, and for a password in plain metadata."""
    notes = []
    url = config.url
    if not config.use_regex:
        unused = [k for k in ("operation", "pageSize") if k in metadata]
        if unused:
            notes.append(f'{_quoted(unused)} ignored without "useRegex: true"')
    for key, given in (("value", config.value), ("queueLength", config.queue_length)):
        if given == 0:
            notes.append(f'parameter "{key}" is 0, which means unset (target {config.target:g})')
    if config.timeout is not None and not config.timeout:
        notes.append('parameter "timeout" is 0, which means the default (3000 ms)')
    if config.activation_value < 0:
        notes.append('parameter "activationValue" is negative: the trigger is always active')
    if not config.tls_material:
        unused = [k for k in ("ca", "cert", "key", "keyPassword") if k in auth_params]
        if unused:
            notes.append(f'auth param "tls" is not "enable": {_quoted(unused)} ignored')
    elif not url.tls:
        notes.append(
            f'auth param "tls" is "enable" but the host URL is {url.scheme}://, which is not '
            f"encrypted: use {url.scheme}s://"
        )
    if config.unsafe_ssl and not url.tls:
        notes.append(f'parameter "unsafeSsl" is ignored: the host URL is {url.scheme}://')
    if metadata.get("host", "").strip():
        plain = parse_host(metadata["host"].strip())
        if plain.password:
            notes.append(
                'the "host" URL in plain metadata carries a password that anyone who can read '
                'the ScaledObject can see: use "hostFromEnv" or a TriggerAuthentication'
            )
    known = {"auth_mechanism"} if url.protocol is Protocol.AMQP else set()
    unused = sorted({k for k, _ in url.query} - known)
    if unused:
        notes.append(f"query parameters of the host URL are ignored: {_quoted(unused)}")
    return notes


def _quoted(keys: list[str]) -> str:
    return ", ".join(f'"{k}"' for k in keys)


# ---------------------------------------------------------------------------------------------
# Interpretation (pure)


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueStats:
    """One queue as a poll saw it; None where the source did not report the number."""

    name: str
    messages: int | None = None  # ready + unacknowledged (management API only)
    ready: int | None = None  # ready (the only count AMQP has)
    publish_rate: float | None = 0.0  # None: counted, but the server computes no rates
    deliver_get_rate: float | None = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueSnapshot:
    """What one poll read: the named queue, or every queue the regex matched."""

    queues: tuple[QueueStats, ...]


@dataclass(frozen=True, slots=True)
class Reading:
    """The trigger's value, and whether KEDA calls it active regardless of activationValue."""

    value: float
    forced_active: bool = False


def stats_from_json(item: object) -> QueueStats:
    """One queue object of the management API; ScalerQueryError when it is not one."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise ScalerQueryError("unexpected answer from the management API: not a queue object")
    name = item["name"]
    stats = item.get("message_stats")
    stats = {} if stats is None else stats
    if not isinstance(stats, dict):
        raise ScalerQueryError(f'unexpected "message_stats" for queue "{name}"')
    return QueueStats(
        name=name,
        messages=_count(item, "messages", name),
        ready=_count(item, "messages_ready", name),
        publish_rate=_rate(stats, "publish", name),
        deliver_get_rate=_rate(stats, "deliver_get", name),
    )


def _count(item: Mapping[str, Any], key: str, name: str) -> int | None:
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ScalerQueryError(f'unexpected "{key}" for queue "{name}"')
    return value


def _rate(stats: Mapping[str, Any], key: str, name: str) -> float | None:
    details = stats.get(f"{key}_details")
    if details is None:
        # No traffic of that kind yet: no counter either. A counter without a rate: the broker
        # does not compute rates, and 0 would be a lie.
        return None if key in stats else 0.0
    rate = details.get("rate") if isinstance(details, dict) else None
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate):
        raise ScalerQueryError(f'unexpected "message_stats.{key}_details" for queue "{name}"')
    return float(rate)


def _queue_count(stats: QueueStats, *, ready_only: bool) -> int:
    count = stats.ready if ready_only else stats.messages
    if count is None:
        raise ScalerUnavailableError(
            f'the management API has no statistics for queue "{stats.name}" yet (a queue '
            "created a moment ago, or statistics collection is disabled)"
        )
    return count


def _queue_rate(rate: float | None, what: str, name: str) -> float:
    if rate is None:
        raise ScalerQueryError(
            f'the management API counts {what} messages of queue "{name}" but reports no rate '
            "(does the broker compute message rates?)"
        )
    return rate


def _combine(values: list[float], operation: Operation) -> float:
    if not values:
        return 0.0
    match operation:
        case Operation.SUM:
            return float(sum(values))
        case Operation.MAX:
            return float(max(values))
        case Operation.AVG:
            return float(sum(values)) / len(values)


def queue_reading(snapshot: QueueSnapshot, config: RabbitMQConfig) -> Reading:
    """The number the trigger scales on (KEDA's formulas), over the snapshot's queues.

    With several queues (useRegex) the count and each rate are combined first, by
    `operation`, then the mode's formula applies. Raises ScalerUnavailableError for a queue
    without statistics yet, ScalerQueryError where the server reports no rates.
    """
    mode = config.mode_in_use
    queues = snapshot.queues
    # Ready only over AMQP or with excludeUnacknowledged, else ready + unacknowledged.
    ready_only = config.protocol_in_use is Protocol.AMQP or config.exclude_unacknowledged
    count = _combine([_queue_count(q, ready_only=ready_only) for q in queues], config.operation)
    if mode is Mode.QUEUE_LENGTH:
        return Reading(count)
    publish = _combine(
        [_queue_rate(q.publish_rate, "publish", q.name) for q in queues], config.operation
    )
    deliver = _combine(
        [_queue_rate(q.deliver_get_rate, "deliver/get", q.name) for q in queues],
        config.operation,
    )
    activation = config.activation_value
    match mode:
        case Mode.MESSAGE_RATE:
            return Reading(publish, forced_active=count > activation)
        case Mode.DELIVER_GET_RATE:
            return Reading(deliver)
        case Mode.PUBLISHED_TO_DELIVERED_RATIO:
            if publish > 0 and deliver == 0:
                return Reading(activation, forced_active=True)
            return Reading(publish / deliver if publish > 0 else 0.0)
        case Mode.EXPECTED_QUEUE_CONSUMPTION_TIME:
            if count == 0:
                return Reading(0.0)
            if deliver == 0:
                return Reading(activation, forced_active=True)
            return Reading((publish - deliver) / deliver + count / deliver)
    raise AssertionError(mode)  # pragma: no cover - every mode is handled above


def sample_from_snapshot(
    snapshot: QueueSnapshot,
    config: RabbitMQConfig,
    *,
    name: str,
    metric_type: MetricType = MetricType.AVERAGE_VALUE,
) -> MetricSample:
    """The trigger's sample: the mode's value against `value` and `activationValue`."""
    reading = queue_reading(snapshot, config)
    return MetricSample(
        name=name,
        value=reading.value,
        target=config.target,
        activation_target=-math.inf if reading.forced_active else config.activation_value,
        metric_type=metric_type,
    )


def metric_name(index: int, queue_name: str) -> str:
    """KEDA's name: `s{index}-rabbitmq-{QueryEscape(queueName)}`, normalised."""
    return registry.metric_name(index, f"rabbitmq-{urllib.parse.quote_plus(queue_name, safe='')}")


# ---------------------------------------------------------------------------------------------
# Endpoints: the keys of shared clients (digests, never secrets)


def _tls_digest(config: RabbitMQConfig) -> str | None:
    if not config.tls_material:
        return None
    parts = (config.ca, config.cert, config.key, config.key_password)
    return secret_digest("\0".join(p or "" for p in parts))


def _display_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True, slots=True)
class BrokerEndpoint:
    """One AMQP connection: broker, vhost, credentials and TLS settings."""

    tls: bool
    host: str
    port: int
    vhost: str
    username: str | None
    password_digest: str | None
    external: bool = False
    unsafe_ssl: bool = False
    tls_digest: str | None = None

    @classmethod
    def of(cls, config: RabbitMQConfig) -> BrokerEndpoint:
        url = config.url
        external = config.sasl_external
        username, password = (None, None) if external else config.credentials
        return cls(
            tls=url.tls,
            host=url.host,
            port=url.port,
            vhost=config.vhost,
            username=username,
            password_digest=secret_digest(password),
            external=external,
            unsafe_ssl=url.tls and config.unsafe_ssl,
            tls_digest=_tls_digest(config) if url.tls else None,
        )

    def __str__(self) -> str:
        scheme = "amqps" if self.tls else "amqp"
        user = f"{self.username}@" if self.username else ""
        vhost = urllib.parse.quote(self.vhost, safe="")
        return f"{scheme}://{user}{_display_host(self.host)}:{self.port}/{vhost}"


@dataclass(frozen=True, slots=True)
class ManagementEndpoint:
    """One HTTP session: management API base URL, credentials and TLS settings."""

    tls: bool
    host: str
    port: int
    prefix: str  # a path before /api, e.g. behind a reverse proxy
    username: str | None
    password_digest: str | None
    unsafe_ssl: bool = False
    tls_digest: str | None = None

    @classmethod
    def of(cls, config: RabbitMQConfig) -> ManagementEndpoint:
        url = config.url
        username, password = config.credentials
        return cls(
            tls=url.tls,
            host=url.host,
            port=url.port,
            prefix=url.management_prefix_and_vhost[0],
            username=username,
            password_digest=secret_digest(password),
            unsafe_ssl=url.tls and config.unsafe_ssl,
            tls_digest=_tls_digest(config) if url.tls else None,
        )

    def url(self, path: str) -> URL:
        """An absolute URL for an already percent-encoded `path` under the API prefix."""
        scheme = "https" if self.tls else "http"
        return URL.build(
            scheme=scheme, host=self.host, port=self.port, path=self.prefix + path, encoded=True
        )

    def __str__(self) -> str:
        scheme = "https" if self.tls else "http"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{_display_host(self.host)}:{self.port}{self.prefix}"


# ---------------------------------------------------------------------------------------------
# TLS


def _tls_context(config: RabbitMQConfig, *, system_roots: bool = True) -> ssl.SSLContext:
    """KEDA's TLS client settings: system roots, plus `ca`/`cert`/`key` with `tls: enable`;
    `unsafeSsl` skips verification."""
    material = config.tls_material
    return tls.client_context(
        ca=config.ca if material else None,
        cert=config.cert if material else None,
        key=config.key if material else None,
        key_password=config.key_password,
        unsafe_ssl=config.unsafe_ssl,
        system_roots=system_roots,
    )


def _check_tls_material(config: RabbitMQConfig) -> str | None:
    """Why `ca`, `cert`, `key` and `keyPassword` cannot be used, or None; never their text."""
    fields = tls.material_fields(config.cert)
    return tls.material_problem(lambda: _tls_context(config, system_roots=False), fields)


# ---------------------------------------------------------------------------------------------
# AMQP: one shared connection, a channel per poll


class AmqpBroker:
    """The AMQP connection shared by every scaler of one BrokerEndpoint.

    It connects on first use and again after the connection is lost. Each passive declare
    runs on a channel of its own, closed afterwards: the broker closes a channel on 404
    NOT_FOUND, and that must not affect the connection or any other poll. A poll that times
    out or is cancelled mid-request drops the connection (it may be stuck; the next poll
    opens a fresh one).
    """

    def __init__(self, url: URL, tls: ssl.SSLContext | None) -> None:
        self._url = url  # holds the password: never shown (aiormq censors it in its logs)
        self._tls = tls
        self._connection: aiormq.Connection | None = None
        self._connecting = asyncio.Lock()
        self._channels = asyncio.Semaphore(MAX_CHANNELS)
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False
        self.connects = 0  # connections opened so far

    def __repr__(self) -> str:
        state = "connected" if self.connected else "idle"
        return f"<AmqpBroker {state}>"

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    async def ready_messages(self, queue: str) -> int:
        """The ready-message count of `queue` from a passive declare."""
        connection = await self._connect()
        async with self._channels:
            try:
                channel = await connection.channel(publisher_confirms=False)
            except BaseException:
                self._discard(connection)
                raise
            try:
                declared = await channel.queue_declare(queue, passive=True)
            except aiormq.exceptions.AMQPChannelError:
                raise  # the broker closed this channel; the connection is fine
            except BaseException:
                self._discard(connection)
                raise
            finally:
                await self._close_channel(channel)
        return int(declared.message_count or 0)

    async def aclose(self) -> None:
        """Close the connection; idempotent."""
        self._closed = True
        connection, self._connection = self._connection, None
        if connection is not None:
            await _close_quietly(connection)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def _connect(self) -> aiormq.Connection:
        async with self._connecting:
            if self._closed:
                raise RuntimeError("the shared AMQP connection was closed")
            connection = self._connection
            if connection is not None and not connection.is_closed:
                return connection
            self._connection = None
            connection = aiormq.Connection(
                self._url, context=self._tls, client_properties={"connection_name": CLIENT_NAME}
            )
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await connection.connect()
            self._connection = connection
            self.connects += 1
            return connection

    def _discard(self, connection: aiormq.Connection) -> None:
        """Forget `connection` and close it in the background (the caller may be cancelled)."""
        if self._connection is connection:
            self._connection = None
        task = asyncio.get_running_loop().create_task(_close_quietly(connection))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close_channel(channel: Any) -> None:
        if channel.is_closed:
            return
        with contextlib.suppress(Exception, asyncio.CancelledError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await channel.close()


async def _close_quietly(connection: aiormq.Connection) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await connection.close()


def _amqp_url(config: RabbitMQConfig) -> URL:
    """The URL aiormq connects to, built from parts (never the user's string)."""
    url = config.url
    query = {"heartbeat": str(HEARTBEAT)}
    if config.sasl_external:
        query["auth"] = "external"
        username: str | None = None
        password: str | None = None
    else:
        username, password = config.credentials
    return URL.build(
        scheme=url.scheme,
        user=username,
        password=password,
        host=url.host,
        port=url.port,
        path="/" + config.vhost,
        query=query,
    )


async def _open_broker(config: RabbitMQConfig) -> AmqpBroker:
    tls = _tls_context(config) if config.url.tls else None
    return AmqpBroker(_amqp_url(config), tls)


async def _close_broker(broker: AmqpBroker) -> None:
    await broker.aclose()


# ---------------------------------------------------------------------------------------------
# HTTP: one shared session per management endpoint


def _basic_auth(username: str | None, password: str | None) -> str | None:
    if not username and not password:
        return None
    token = base64.b64encode(f"{username or ''}:{password or ''}".encode()).decode("ascii")
    return f"Basic {token}"


async def _open_session(config: RabbitMQConfig) -> aiohttp.ClientSession:
    """A session with its own bounded pool; no connection is made until the first request."""
    url = config.url
    headers = {"Accept": "application/json"}
    authorization = _basic_auth(*config.credentials)
    if authorization:
        headers["Authorization"] = authorization
    connector = aiohttp.TCPConnector(
        ssl=_tls_context(config) if url.tls else False, limit=MAX_HTTP_CONNECTIONS
    )
    return aiohttp.ClientSession(
        connector=connector,
        headers=headers,
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=True,  # HTTP(S)_PROXY and NO_PROXY, as KEDA's Go client honours them
    )


async def _close_session(session: aiohttp.ClientSession) -> None:
    await session.close()


class _HTTPStatusError(Exception):
    """A management API reply other than 200 (internal; translated by the scaler)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# The scaler


class RabbitMQScaler:
    """One rabbitmq trigger; see the module docstring."""

    type_name: ClassVar[str] = "rabbitmq"
    aliases: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        config: RabbitMQConfig,
        *,
        trigger_index: int,
        trigger_name: str | None = None,
        connections: SharedClients,
        metric_type: MetricType = MetricType.AVERAGE_VALUE,
        timeout: float | None = None,
    ) -> None:
        self.config = config
        self.metric_name = metric_name(trigger_index, config.queue_name)
        self.metric_type = metric_type
        self.protocol = config.protocol_in_use
        self.vhost = config.vhost
        self.endpoint: BrokerEndpoint | ManagementEndpoint = (
            BrokerEndpoint.of(config)
            if self.protocol is Protocol.AMQP
            else ManagementEndpoint.of(config)
        )
        self.label = registry.trigger_label(
            index=trigger_index, name=trigger_name, type_name=self.type_name
        )
        self._connections = connections
        request = config.request_timeout.total_seconds()
        self._request_timeout = request
        self._timeout = timeout if timeout is not None else max(POLL_TIMEOUT, request)
        self._lease: Lease[Any] | None = None
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
            RabbitMQConfig,
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
        return (
            f"<RabbitMQScaler {self.metric_name} {self.config.mode_in_use.value} "
            f"{self.protocol.value} {self.endpoint}>"
        )

    async def sample(self) -> MetricSample:
        """One poll: ScalerUnavailableError if RabbitMQ cannot be reached in time,
        ScalerQueryError if it answers with something that cannot be scaled on."""
        with self._translate_errors():
            async with asyncio.timeout(self._timeout):
                snapshot = await self._fetch()
        with self._translate_errors():
            return sample_from_snapshot(
                snapshot, self.config, name=self.metric_name, metric_type=self.metric_type
            )

    async def aclose(self) -> None:
        """Release the shared client (closed if this was its last user); idempotent."""
        lease, self._lease = self._lease, None
        if lease is not None:
            await lease.release()

    # -- I/O -----------------------------------------------------------------------------------

    async def _client(self) -> Any:
        async with self._leasing:
            if self._lease is None:
                config = self.config
                if isinstance(self.endpoint, BrokerEndpoint):
                    self._lease = await self._connections.acquire(
                        self.endpoint, lambda: _open_broker(config), _close_broker
                    )
                else:
                    self._lease = await self._connections.acquire(
                        self.endpoint, lambda: _open_session(config), _close_session
                    )
            return self._lease.client

    async def _fetch(self) -> QueueSnapshot:
        """Read the queue (or the queues the regex matches) once."""
        client = await self._client()
        name = self.config.queue_name
        if isinstance(client, AmqpBroker):
            ready = await client.ready_messages(name)
            queue = QueueStats(name=name, ready=ready, publish_rate=None, deliver_get_rate=None)
            return QueueSnapshot(queues=(queue,))
        assert isinstance(self.endpoint, ManagementEndpoint)
        vhost = urllib.parse.quote(self.vhost, safe="")
        if not self.config.use_regex:
            path = f"/api/queues/{vhost}/{urllib.parse.quote(name, safe='')}"
            reply = await self._get_json(client, path, {"columns": COLUMNS})
            return QueueSnapshot(queues=(stats_from_json(reply),))
        return QueueSnapshot(queues=await self._matching(client, vhost))

    async def _matching(self, session: aiohttp.ClientSession, vhost: str) -> tuple[QueueStats, ...]:
        """Every page of the queues whose names match the regex; a queue moving between pages
        while they are read is counted once."""
        found: dict[str, QueueStats] = {}
        page, pages = 1, 1
        while page <= pages:
            reply = await self._get_json(
                session,
                f"/api/queues/{vhost}",
                {
                    "use_regex": "true",
                    "name": self.config.queue_name,
                    "page": str(page),
                    "page_size": str(self.config.page_size),
                    "sort": "name",
                    "columns": COLUMNS,
                },
            )
            if not isinstance(reply, dict) or not isinstance(reply.get("items"), list):
                raise ScalerQueryError("unexpected answer from the management API: not a page")
            for item in reply["items"]:
                stats = stats_from_json(item)
                found.setdefault(stats.name, stats)
            page_count = reply.get("page_count")
            pages = page_count if isinstance(page_count, int) else 1
            page += 1
        return tuple(found.values())

    async def _get_json(
        self, session: aiohttp.ClientSession, path: str, params: Mapping[str, str]
    ) -> object:
        assert isinstance(self.endpoint, ManagementEndpoint)
        url = self.endpoint.url(path)
        timeout = aiohttp.ClientTimeout(total=self._request_timeout)
        async with session.get(url, params=params, timeout=timeout) as response:
            body = await response.read()
            if response.status != 200:
                raise _HTTPStatusError(response.status, _reason(body))
        try:
            return json.loads(body)
        except ValueError:
            raise ScalerQueryError("unexpected answer from the management API: not JSON") from None

    # -- errors --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _translate_errors(self) -> Iterator[None]:
        """Library exceptions become ours, with every secret scrubbed from the text."""
        where = f"{self.label}: {self.endpoint}"
        try:
            yield
        except (ScalerQueryError, ScalerUnavailableError) as exc:
            raise type(exc)(f"{where}: {self._scrub(str(exc))}") from None
        except _HTTPStatusError as exc:
            raise self._http_error(exc, where) from None
        except TimeoutError:  # asyncio.timeout, or aiohttp's request timeout
            within = f"{self._timeout:g}s"
            if self.protocol is Protocol.HTTP:
                within = f"{self._request_timeout:g}s per request, {within} per poll"
            raise ScalerUnavailableError(f"{where}: no answer within {within}") from None
        except aiormq.exceptions.ChannelNotFoundEntity as exc:
            raise ScalerQueryError(
                f'{where}: no queue "{self.config.queue_name}" in vhost "{self.vhost}" '
                f"({self._amqp_text(exc)})"
            ) from exc
        except aiormq.exceptions.ChannelClosed as exc:
            raise ScalerQueryError(f"{where}: {self._amqp_text(exc)}") from exc
        except (
            aiormq.exceptions.ProbableAuthenticationError,
            aiormq.exceptions.AuthenticationError,
        ) as exc:
            raise ScalerQueryError(
                f"{where}: authentication failed: {self._amqp_text(exc)}"
            ) from exc
        except aiormq.exceptions.ConnectionClosed as exc:
            if _reply_code(exc) in (403, 530):  # refused login; no such vhost, or no access
                raise ScalerQueryError(f"{where}: not allowed: {self._amqp_text(exc)}") from exc
            raise ScalerUnavailableError(f"{where}: unavailable: {self._amqp_text(exc)}") from exc
        except aiormq.exceptions.InvalidFrameError as exc:
            if "Connection.OpenOk" in str(exc) and "Connection.Close" in str(exc):
                # aiormq reports the broker's refusal to open the vhost as an unexpected frame
                # and drops the reply text.
                raise ScalerQueryError(
                    f'{where}: the broker refused to open vhost "{self.vhost}": it does not '
                    "exist, or the user may not access it"
                ) from exc
            raise ScalerUnavailableError(f"{where}: unavailable: {self._amqp_text(exc)}") from exc
        except aiohttp.ClientError as exc:  # some carry request headers: no cause kept
            reason = self._scrub(str(exc)) or type(exc).__name__
            raise ScalerUnavailableError(f"{where}: unavailable: {reason}") from None
        except (aiormq.exceptions.AMQPError, OSError, RuntimeError) as exc:
            raise ScalerUnavailableError(f"{where}: unavailable: {self._amqp_text(exc)}") from exc

    def _http_error(self, exc: _HTTPStatusError, where: str) -> Exception:
        status, reason = exc.status, self._scrub(exc.reason)
        detail = f"HTTP {status}" + (f": {reason}" if reason else "")
        if status == 401:
            return ScalerQueryError(f"{where}: authentication failed: {detail}")
        if status == 403:
            return ScalerQueryError(f"{where}: not permitted: {detail}")
        if status == 404:
            if self.config.use_regex:
                return ScalerQueryError(f'{where}: no vhost "{self.vhost}" ({detail})')
            return ScalerQueryError(
                f'{where}: no queue "{self.config.queue_name}" in vhost "{self.vhost}" '
                f"(or no such vhost; {detail})"
            )
        if status == 400 and self.config.use_regex:
            return ScalerQueryError(
                f'{where}: the management API refused the query ({detail}); is "queueName" '
                "a valid regular expression?"
            )
        if status >= 500 or status == 429:
            return ScalerUnavailableError(f"{where}: unavailable: {detail}")
        return ScalerQueryError(f"{where}: {detail}")

    def _amqp_text(self, exc: BaseException) -> str:
        """An aiormq exception's own words: its args (the broker's reply text), scrubbed."""
        args = [str(a) for a in exc.args if isinstance(a, str | int)]
        text = " ".join(args) or str(exc) or type(exc).__name__
        return self._scrub(text)

    def _scrub(self, text: str) -> str:
        """Passwords (as given and URL-escaped), the Basic token, then any URL userinfo."""
        secrets = [self.config.password, self.config.key_password, self.config.url.password]
        secrets += [urllib.parse.quote(s, safe="") for s in secrets if s]
        authorization = _basic_auth(*self.config.credentials)
        if authorization:
            secrets.append(authorization.removeprefix("Basic "))
        for secret in sorted(filter(None, secrets), key=len, reverse=True):
            text = text.replace(secret, "***")
        return _USERINFO.sub("***@", text)


def _reply_code(exc: aiormq.exceptions.ConnectionClosed) -> int | None:
    """The AMQP reply code of a connection the broker closed, where aiormq kept it."""
    if isinstance(exc, aiormq.exceptions.ConnectionNotAllowed):
        return 530
    code = exc.args[0] if exc.args else None
    return code if isinstance(code, int) else None


def _reason(body: bytes) -> str:
    """The management API's `reason` (or `error`) from an error reply, short."""
    try:
        reply = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
    else:
        text = ""
        if isinstance(reply, dict):
            text = str(reply.get("reason") or reply.get("error") or "")
    return text[:ERROR_BODY_LIMIT]
