"""`type: kafka`: scale on a Kafka consumer group's lag, parameter for parameter as KEDA's.

What a poll reads, through the batcher of its shared client (see "Coalescing" below):

1. the group's committed offsets (OffsetFetch for every partition the group has committed, to
   the group's coordinator, which is looked up once and remembered);
2. the partitions of `topic` or, without `topic`, of every topic the group has committed
   offsets for (Metadata, asking the broker *not* to create missing topics; cached briefly);
3. each partition's end offset, and (only with `offsetResetPolicy: earliest` and partitions
   the group has not committed yet) its start offset (ListOffsets, one request per leader).

The lag of a partition is `end - committed`, never below 0. A partition without a committed
offset counts 1 under `offsetResetPolicy: latest` (the consumer would start at the end, so
there is no backlog, but one replica must run to commit a first offset), `end - start` under
`earliest` (the whole retained log waits), and 0 with `scaleToZeroOnInvalidOffset: true`.
`excludePersistentLag` drops, from the scaling value only, the lag of partitions whose committed
offset has not moved since the previous poll (a stuck consumer must not pile up replicas); that
lag still keeps the trigger active. Unless `allowIdleConsumers`, replicas are capped at the
partition count (`limitToPartitionsWithLag`: at the partitions with lag); with
`ensureEvenDistributionOfPartitions` the lag is rounded up to `f * lagThreshold` for the
smallest divisor `f` of the partition count that covers it, so the replica count always divides
the partitions evenly. `partitionLimitation` ("0,2,5-7") restricts the partitions counted.
The trigger is active when the total lag exceeds `activationLagThreshold`.
All of this is the pure function `lag_from_offsets`; `KafkaScaler._fetch` only reads.

The metric is `s{index}-kafka-{topic}`, or `s{index}-kafka-{consumerGroup}-topics` without a
topic (KEDA's names, "/", ".", ":" and "%" becoming "-").

A missing topic is a ScalerQueryError (a misspelt topic must not read as "no lag"); without
`topic`, topics that no longer exist but still have committed offsets are skipped. A group
without commits has no lag of its own: every partition of `topic` then follows the reset
policy, and without `topic` there is nothing to read (0, as in KEDA).

Differences from KEDA, all on the side of safety or exactness:

- the replica cap is exact: KEDA caps the metric with an integer division and can end up one
  replica above the partition count (lag 35, threshold 10, 3 partitions: 4 replicas);
- a committed offset beyond the end offset is lag 0, not a negative lag (KEDA #2612);
- `earliest` without a commit counts from the partition's start offset, not from 0, so records
  removed by retention are not counted (KEDA #7937);
- Metadata requests never create topics, even on brokers with `auto.create.topics.enable`;
- `partitionLimitation` is checked when the trigger is read, reversed ranges included;
- a group or topic the credentials may not read is a ScalerQueryError, never a zero lag.

Not supported, each a ConfigError naming it: `sasl: gssapi` (Kerberos in aiokafka is a
process-wide setup, not per trigger) and `saslTokenProvider: aws_msk_iam`. Supported SASL
mechanisms: `plaintext` (PLAIN), `scram_sha256`, `scram_sha512` and `oauthbearer` with the
`bearer` token provider (OAuth 2 client credentials against `oauthTokenEndpointUri`).
`version` and `fullMetadata` are accepted and ignored (aiokafka negotiates the protocol
version; each poll asks for the metadata of its own topics only).

Coalescing: the scalers sharing a client read through its `_OffsetsBatcher`, so that 10,000
ScaledObjects on a few clusters do not cost 30,000 requests per polling interval. Each kind of
read is collected for COALESCE_WINDOW (10 ms) from the first one, then sent as one OffsetFetch
per consumer group and one ListOffsets per leader broker (and kind of offset) for the union of
what was asked; every reader gets back its own keys only. Why a window rather than joining a
request already in flight: a request sent before a poll started would hand it offsets older
than the poll, and 10 ms is nothing against a polling interval of seconds, while the operator
spreads ticks evenly over the interval, so at 333 polls/s a window holds a few polls of which
all but the first save their ListOffsets (and their OffsetFetch when they share a group).
Topic layouts (partitions and leaders) are cached for TOPIC_CACHE_TTL (10 s) and dropped when a
leader answers with an error or does not answer, and a poll reads them again (once) when its
group has committed a partition the cached layout lacks or when reading offsets failed with the
cached layout; a layout with an error or a leaderless partition is never cached, so a missing
topic is asked about on every poll (and still never created). Errors stay with their keys: an
unknown topic, a group whose coordinator cannot be found, a partition's error code fail only
the polls that asked for that topic, group or partition; a request that fails as a whole (a
broker unreachable) fails the polls that needed that broker. A reader's wait is shielded, so a
poll that reaches its own timeout (still POLL_TIMEOUT) does not cancel the batch others wait
for; the batch itself is bounded too. `coalescing_counters("kafka")` counts reads asked for
(one per request the poll would have sent alone) and requests sent.

Connections: one `aiokafka.AIOKafkaClient` per bootstrap servers, TLS settings, SASL settings
and credential digest, leased from SharedClients on the first poll and shared by every trigger
of every ScaledObject with the same settings (KEDA opens a client per trigger). The requests
are aiokafka's protocol requests sent on that client, rather than its admin client's
`list_consumer_group_offsets` and a consumer's `end_offsets`, for two reasons: the admin call
ignores the group-level error code, so GROUP_AUTHORIZATION_FAILED reads as "no commits" (lag 0
without `topic`); and a consumer keeps the topics it was asked about in its metadata
refreshes, which ask brokers to create missing topics, so a deleted topic comes back (seen on
a real broker). Every request is bounded by REQUEST_TIMEOUT and each poll by POLL_TIMEOUT.
Passwords, keys and tokens are never in any message, repr or client key, and the SASL bytes
aiokafka logs at DEBUG are redacted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import re
import ssl
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Generic, NamedTuple, Self, TypeVar

import aiohttp
import aiokafka.errors
from aiokafka import AIOKafkaClient
from aiokafka.abc import AbstractTokenProvider
from aiokafka.conn import create_conn
from aiokafka.protocol.commit import OffsetFetchRequest
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.protocol.offset import OffsetRequest

from autoscale.errors import ConfigError, ScalerError, ScalerQueryError, ScalerUnavailableError
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
    "COALESCE_WINDOW",
    "POLL_TIMEOUT",
    "REQUEST_TIMEOUT",
    "TOPIC_CACHE_TTL",
    "ClientCredentialsTokenProvider",
    "KafkaConfig",
    "KafkaConnection",
    "KafkaEndpoint",
    "KafkaScaler",
    "LagReport",
    "OAuthTokenError",
    "OffsetsSnapshot",
    "Partition",
    "PartitionOffsets",
    "even_partition_factor",
    "ignored_parameters",
    "lag_from_offsets",
    "parse_partition_ids",
    "sample_from_report",
]

REQUEST_TIMEOUT: Final = 3.0  # seconds for one connection attempt or one request
POLL_TIMEOUT: Final = 8.0  # seconds for a whole poll (the operator's own limit is 10 s)
METADATA_MAX_AGE: Final = 300.0  # seconds between the client's background metadata refreshes
TOKEN_EARLY_REFRESH: Final = 10.0  # seconds before expiry an OAuth token is renewed
CLIENT_ID: Final = "autoscale"
COALESCE_WINDOW: Final = 0.01  # seconds a batch of reads stays open before it is sent
TOPIC_CACHE_TTL: Final = 10.0  # seconds a topic's partitions and leaders are reused

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

LATEST_OFFSET: Final = -1  # ListOffsets timestamps
EARLIEST_OFFSET: Final = -2
READ_UNCOMMITTED: Final = 0  # the high watermark, as KEDA reads it

_SASL_MECHANISMS: Final = {
    "plaintext": "PLAIN",
    "scram_sha256": "SCRAM-SHA-256",
    "scram_sha512": "SCRAM-SHA-512",
    "oauthbearer": "OAUTHBEARER",
}


# ---------------------------------------------------------------------------------------------
# aiokafka's debug log shows every request it sends, SASL authentication included: PLAIN's
# bytes carry the password and OAUTHBEARER's the token. Those bytes are redacted before any
# handler sees them (a record whose bytes cannot be matched is dropped).

_SASL_BYTES: Final = re.compile(r"sasl_auth_bytes=b(?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")")

_UNREDACTED: Final = re.compile(r"sasl_auth_bytes(?!=<redacted>)")


class _SaslBytesRedaction(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "sasl_auth_bytes" not in message:
            return True
        redacted = _SASL_BYTES.sub("sasl_auth_bytes=<redacted>", message)
        if _UNREDACTED.search(redacted):
            return False
        record.msg, record.args = redacted, None
        return True


def _redact_aiokafka_logs() -> None:
    logger = logging.getLogger("aiokafka.conn")
    if not any(isinstance(f, _SaslBytesRedaction) for f in logger.filters):
        logger.addFilter(_SaslBytesRedaction())


_redact_aiokafka_logs()


# ---------------------------------------------------------------------------------------------
# Parameters


def _servers(raw: str) -> tuple[str, ...]:
    """ "host:port,host2:port" -> ("host:port", "host2:port"); IPv6 in brackets."""
    servers = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not servers:
        raise ValueError("expected host:port[,host:port...]")
    for server in servers:
        host, colon, port = server.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            raise ValueError("write an IPv6 address in brackets: [::1]:9092")
        if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f'"{server}" is not host:port')
    return servers


MAX_PARTITION_IDS: Final = 100_000  # far beyond any topic; bounds what a range expands to


def parse_partition_ids(raw: str) -> tuple[int, ...]:
    """KEDA's `partitionLimitation`: "1,2,10-12" -> (1, 2, 10, 11, 12), sorted, no repeats."""
    ids: set[int] = set()
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        first, dash, last = item.partition("-")
        first, last = first.strip(), last.strip()
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(f'"{item}" is not a partition id or a range of them (like 10-12)')
        if not dash:
            ids.add(int(first))
        elif int(first) > int(last):
            raise ValueError(f'the range "{item}" is reversed')
        elif len(ids) + int(last) - int(first) + 1 > MAX_PARTITION_IDS:
            raise ValueError(f"more than {MAX_PARTITION_IDS} partition ids")
        else:
            ids.update(range(int(first), int(last) + 1))
    if not ids:
        raise ValueError("no partition ids")
    return tuple(sorted(ids))


def _pem(raw: str) -> str:
    if "-----BEGIN " not in raw:
        raise ValueError("expected PEM text")
    return raw


def _extensions(raw: str) -> tuple[tuple[str, str], ...]:
    """KEDA's `oauthExtensions`: "k=v,k2=v2" (values are never quoted back)."""
    pairs = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        key, equals, value = item.partition("=")
        if not equals or not key.strip() or "=" in value:
            raise ValueError("expected key=value[,key=value...]")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


@dataclass(frozen=True, slots=True, kw_only=True)
class KafkaConfig:
    """A kafka trigger's parameters; secrets stay out of repr()."""

    # What to read.
    bootstrap_servers: tuple[str, ...] = _param(
        "bootstrapServers", sources=(METADATA, ENV), converter=_servers
    )
    consumer_group: str = _param("consumerGroup", sources=(METADATA, ENV))
    topic: str | None = _param("topic", sources=(METADATA, ENV), default=None)
    partition_limitation: tuple[int, ...] | None = _param(
        "partitionLimitation", default=None, converter=parse_partition_ids
    )
    # How to count.
    lag_threshold: int = _param("lagThreshold", default=10)
    activation_lag_threshold: int = _param("activationLagThreshold", default=0)
    offset_reset_policy: str = _param(
        "offsetResetPolicy", default="latest", choices=("latest", "earliest")
    )
    allow_idle_consumers: bool = _param("allowIdleConsumers", default=False)
    exclude_persistent_lag: bool = _param("excludePersistentLag", default=False)
    scale_to_zero_on_invalid_offset: bool = _param("scaleToZeroOnInvalidOffset", default=False)
    limit_to_partitions_with_lag: bool = _param("limitToPartitionsWithLag", default=False)
    ensure_even_distribution_of_partitions: bool = _param(
        "ensureEvenDistributionOfPartitions", default=False
    )
    # Accepted for KEDA manifests, without effect here.
    version: str | None = _param("version", default=None)
    full_metadata: bool | None = _param("fullMetadata", default=None)
    aws_region: str | None = _param("awsRegion", default=None)
    # TLS: metadata first, then auth params (KEDA's order).
    tls: str | None = _param(
        "tls", sources=(METADATA, AUTH), default=None, choices=("enable", "disable")
    )
    unsafe_ssl: bool = _param("unsafeSsl", default=False)
    ca: str | None = _param("ca", sources=(AUTH,), default=None, secret=True, converter=_pem)
    cert: str | None = _param("cert", sources=(AUTH,), default=None, secret=True, converter=_pem)
    key: str | None = _param("key", sources=(AUTH,), default=None, secret=True, converter=_pem)
    key_password: str | None = _param("keyPassword", sources=(AUTH,), default=None, secret=True)
    # SASL.
    sasl: str | None = _param(
        "sasl",
        sources=(METADATA, AUTH),
        default=None,
        choices=("none", "plaintext", "scram_sha256", "scram_sha512", "oauthbearer", "gssapi"),
    )
    username: str | None = _param("username", sources=(AUTH,), default=None)
    password: str | None = _param("password", sources=(AUTH,), default=None, secret=True)
    sasl_token_provider: str | None = _param(
        "saslTokenProvider",
        sources=(METADATA, AUTH),
        default=None,
        choices=("bearer", "aws_msk_iam"),
    )
    oauth_token_endpoint_uri: str | None = _param(
        "oauthTokenEndpointUri", sources=(AUTH,), default=None
    )
    scopes: tuple[str, ...] = _param("scopes", sources=(AUTH,), default=())
    oauth_extensions: tuple[tuple[str, str], ...] = _param(
        "oauthExtensions", sources=(AUTH,), default=(), secret=True, converter=_extensions
    )

    @property
    def use_tls(self) -> bool:
        return self.tls == "enable"

    @property
    def sasl_mode(self) -> str:
        """ "none", or a KEDA SASL mode."""
        return self.sasl or "none"

    @property
    def security_protocol(self) -> str:
        """aiokafka's (and Kafka's) name for the listener type this trigger needs."""
        sasl = self.sasl_mode != "none"
        if self.use_tls:
            return "SASL_SSL" if sasl else "SSL"
        return "SASL_PLAINTEXT" if sasl else "PLAINTEXT"

    @property
    def needs_start_offsets(self) -> bool:
        """Whether partitions without a commit count from their start offset."""
        return self.offset_reset_policy == "earliest" and not self.scale_to_zero_on_invalid_offset

    @property
    def partitions_limited(self) -> tuple[int, ...] | None:
        """`partitionLimitation`, which KEDA ignores without a topic."""
        return self.partition_limitation if self.topic else None

    def validate(self) -> None:
        """Rules across fields (KEDA's Validate), every problem reported at once."""
        problems = []
        if self.lag_threshold <= 0:
            problems.append('parameter "lagThreshold" must be greater than 0')
        if self.activation_lag_threshold < 0:
            problems.append('parameter "activationLagThreshold" must not be negative')
        if self.allow_idle_consumers and self.limit_to_partitions_with_lag:
            problems.append(
                'parameters "allowIdleConsumers" and "limitToPartitionsWithLag" cannot both be true'
            )
        if self.limit_to_partitions_with_lag and self.ensure_even_distribution_of_partitions:
            problems.append(
                'parameters "limitToPartitionsWithLag" and '
                '"ensureEvenDistributionOfPartitions" cannot both be true'
            )
        for flag, name in (
            (self.limit_to_partitions_with_lag, "limitToPartitionsWithLag"),
            (self.ensure_even_distribution_of_partitions, "ensureEvenDistributionOfPartitions"),
        ):
            if flag and not self.topic:
                problems.append(f'parameter "{name}" needs "topic"')
        if self.use_tls and (self.cert is None) != (self.key is None):
            given, missing = ("cert", "key") if self.key is None else ("key", "cert")
            problems.append(f'auth param "{given}" needs "{missing}" too')
        problems.extend(self._sasl_problems())
        if problems:
            raise ConfigError("; ".join(problems))
        if self.use_tls:
            problem = _check_tls_material(self)
            if problem:
                raise ConfigError(problem)

    def _sasl_problems(self) -> list[str]:
        mode = self.sasl_mode
        if mode == "none":
            return []
        if mode == "gssapi":
            return [
                'sasl "gssapi" is not supported: aiokafka takes Kerberos from a process-wide '
                "setup, not from a trigger"
            ]
        if mode == "oauthbearer" and self.sasl_token_provider == "aws_msk_iam":
            return ['saslTokenProvider "aws_msk_iam" is not supported; use "bearer"']
        problems = [
            f'sasl "{mode}" needs auth param "{name}"'
            for name, value in (("username", self.username), ("password", self.password))
            if not value
        ]
        if mode == "oauthbearer" and not self.oauth_token_endpoint_uri:
            problems.append('sasl "oauthbearer" needs auth param "oauthTokenEndpointUri"')
        elif mode == "oauthbearer":
            url = urllib.parse.urlsplit(self.oauth_token_endpoint_uri or "")
            if url.scheme not in ("http", "https") or not url.netloc:
                problems.append('auth param "oauthTokenEndpointUri" must be an http(s) URL')
        return problems


def ignored_parameters(
    config: KafkaConfig, metadata: Mapping[str, str], auth_params: Mapping[str, str]
) -> list[str]:
    """Warnings for what the configuration makes useless or risky (KEDA is silent)."""
    notes = []
    if config.partition_limitation is not None and not config.topic:
        notes.append('parameter "partitionLimitation" is ignored without "topic"')
    for name in ("tls", "sasl", "saslTokenProvider"):
        if metadata.get(name, "").strip() and auth_params.get(name, "").strip():
            notes.append(
                f'parameter "{name}" is set in metadata and in auth params; '
                "the metadata value is used"
            )
    if config.version is not None:
        notes.append(
            'parameter "version" is ignored: the protocol version is negotiated with the brokers'
        )
    if config.full_metadata is not None:
        notes.append(
            'parameter "fullMetadata" is ignored: polls ask for the metadata of their own '
            "topics only"
        )
    if config.aws_region is not None:
        notes.append('parameter "awsRegion" is ignored: AWS MSK IAM is not supported')
    if not config.use_tls:
        unused = [k for k in ("ca", "cert", "key", "keyPassword") if k in auth_params]
        unused += ["unsafeSsl"] if "unsafeSsl" in metadata else []
        if unused:
            listed = ", ".join(f'"{k}"' for k in unused)
            notes.append(f"TLS is off: {listed} ignored")
    mode = config.sasl_mode
    if mode == "none":
        unused = [k for k in ("username", "password") if k in auth_params]
        if unused:
            listed = ", ".join(f'"{k}"' for k in unused)
            notes.append(f"SASL is off: {listed} ignored")
    if mode != "oauthbearer":
        unused = [
            k
            for k in ("oauthTokenEndpointUri", "scopes", "oauthExtensions", "saslTokenProvider")
            if k in auth_params or (k == "saslTokenProvider" and k in metadata)
        ]
        if unused:
            listed = ", ".join(f'"{k}"' for k in unused)
            notes.append(f'{listed} ignored: they apply to sasl "oauthbearer" only')
    if mode in ("plaintext", "oauthbearer") and not config.use_tls:
        what = "the password" if mode == "plaintext" else "the OAuth token"
        notes.append(f'sasl "{mode}" without TLS sends {what} unencrypted; set "tls: enable"')
    return notes


# ---------------------------------------------------------------------------------------------
# Interpretation (pure)


class Partition(NamedTuple):
    """One partition of one topic."""

    topic: str
    partition: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PartitionOffsets:
    """What a poll read for one partition."""

    end: int  # the log end offset (high watermark): the offset the next record will get
    committed: int | None  # the group's committed offset; None: nothing committed
    start: int | None = None  # the log start offset; read only when the reset policy needs it


@dataclass(frozen=True, slots=True)
class OffsetsSnapshot:
    """Every partition the trigger counts, after partitionLimitation, uninterpreted."""

    partitions: Mapping[Partition, PartitionOffsets] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class LagReport:
    """A poll's lag, interpreted."""

    lag: int  # total lag that scales (persistent lag excluded)
    lag_with_persistent: int  # total lag including persistent lag: decides activity
    value: int  # the metric value: `lag`, rounded up for even distribution if asked
    partitions: int  # partitions counted
    partitions_with_lag: int  # of those, with scaling lag > 0
    replica_cap: int | None  # None: allowIdleConsumers
    active: bool
    committed: Mapping[Partition, int]  # committed offsets, for the next poll's persistence check
    per_partition: Mapping[Partition, int]  # scaling lag of each partition


def even_partition_factor(lag: int, partitions: int, threshold: int) -> int:
    """The smallest divisor f of `partitions` with f * threshold >= lag (KEDA's "next factor")."""
    if partitions < 1:
        return 0
    for factor in range(1, partitions + 1):
        if partitions % factor == 0 and factor * threshold >= lag:
            return factor
    return partitions


def lag_from_offsets(
    snapshot: OffsetsSnapshot,
    config: KafkaConfig,
    previous: Mapping[Partition, int] | None = None,
) -> LagReport:
    """The trigger's lag from one poll's offsets and the previous poll's committed offsets.

    `previous` matters only with excludePersistentLag: a partition whose committed offset
    equals the previous poll's adds its lag to activity, not to the scaling value. Partitions
    without a committed offset follow offsetResetPolicy / scaleToZeroOnInvalidOffset and are
    never persistent (KEDA). Pure: no I/O, no clock, no logging.
    """
    previous = previous or {}
    lag = with_persistent = with_lag = 0
    per_partition: dict[Partition, int] = {}
    committed: dict[Partition, int] = {}
    for partition, offsets in sorted(snapshot.partitions.items()):
        if offsets.committed is None:
            if config.scale_to_zero_on_invalid_offset:
                real = 0
            elif config.offset_reset_policy == "latest":
                real = 1  # nothing waits, but one consumer must run to commit a first offset
            else:
                if offsets.start is None:
                    raise ValueError(f"the snapshot lacks the start offset of {partition}")
                real = max(0, offsets.end - offsets.start)
            scaling = real
        else:
            committed[partition] = offsets.committed
            real = max(0, offsets.end - offsets.committed)
            stuck = previous.get(partition) == offsets.committed
            scaling = 0 if config.exclude_persistent_lag and stuck else real
        per_partition[partition] = scaling
        lag += scaling
        with_persistent += real
        with_lag += scaling > 0

    count = len(per_partition)
    value, cap = lag, None
    if not config.allow_idle_consumers or config.ensure_even_distribution_of_partitions:
        cap = with_lag if config.limit_to_partitions_with_lag else count
        if config.ensure_even_distribution_of_partitions and lag > 0:
            value = even_partition_factor(lag, count, config.lag_threshold) * config.lag_threshold
    return LagReport(
        lag=lag,
        lag_with_persistent=with_persistent,
        value=value,
        partitions=count,
        partitions_with_lag=with_lag,
        replica_cap=cap,
        active=with_persistent > config.activation_lag_threshold,
        committed=committed,
        per_partition=per_partition,
    )


def sample_from_report(
    report: LagReport,
    config: KafkaConfig,
    *,
    name: str,
    metric_type: MetricType = MetricType.AVERAGE_VALUE,
) -> MetricSample:
    """The trigger's sample. Activity is the report's (total lag including persistent lag >
    activationLagThreshold); where the scaling value alone would say otherwise (persistent lag
    excluded, or a value rounded up for even distribution), the sample's activation target is
    moved just below or onto the value so that `value > activation_target` says the same."""
    threshold = config.activation_lag_threshold
    activation_target = float(threshold)
    if (report.value > threshold) != report.active:
        activation_target = float(report.value - 1 if report.active else report.value)
    return MetricSample(
        name=name,
        value=float(report.value),
        target=float(config.lag_threshold),
        activation_target=activation_target,
        metric_type=metric_type,
        replica_cap=report.replica_cap,
    )


# ---------------------------------------------------------------------------------------------
# Connections


@dataclass(frozen=True, slots=True)
class KafkaEndpoint:
    """The key of a shared client: equal endpoints share one. Digests, never secrets."""

    servers: tuple[str, ...]  # sorted: the same cluster whatever order the trigger lists
    security_protocol: str
    unsafe_ssl: bool = False
    tls_digest: str | None = None  # of ca, cert, key and keyPassword together
    sasl_mechanism: str | None = None
    username: str | None = None
    password_digest: str | None = None
    oauth_digest: str | None = None  # token endpoint, scopes and extensions

    @classmethod
    def of(cls, config: KafkaConfig) -> KafkaEndpoint:
        tls_digest = oauth_digest = None
        if config.use_tls:
            material = (config.ca, config.cert, config.key, config.key_password)
            tls_digest = secret_digest("\0".join(p or "" for p in material))
        mechanism = _SASL_MECHANISMS.get(config.sasl_mode)
        if mechanism == "OAUTHBEARER":
            extensions = ",".join(f"{k}={v}" for k, v in config.oauth_extensions)
            oauth = (config.oauth_token_endpoint_uri or "", ",".join(config.scopes), extensions)
            oauth_digest = secret_digest("\0".join(oauth))
        return cls(
            servers=tuple(sorted(config.bootstrap_servers)),
            security_protocol=config.security_protocol,
            unsafe_ssl=config.use_tls and config.unsafe_ssl,
            tls_digest=tls_digest,
            sasl_mechanism=mechanism,
            username=config.username if mechanism else None,
            password_digest=secret_digest(config.password) if mechanism else None,
            oauth_digest=oauth_digest,
        )

    def __str__(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"{self.security_protocol.lower()}://{user}{','.join(self.servers)}"


def _tls_context(config: KafkaConfig, *, system_roots: bool = True) -> ssl.SSLContext:
    """KEDA's TLS client settings: system roots plus `ca`; `unsafeSsl` skips verification."""
    return tls.config_context(config, system_roots=system_roots)


def _check_tls_material(config: KafkaConfig) -> str | None:
    """Why `ca`, `cert`, `key` and `keyPassword` cannot be used, or None; never their text."""
    fields = tls.material_fields(config.cert)
    return tls.material_problem(lambda: _tls_context(config, system_roots=False), fields)


class OAuthTokenError(aiokafka.errors.KafkaError):  # type: ignore[misc]  # untyped base
    """The token endpoint refused or failed; a KafkaError so that aiokafka's connection code
    handles it like any failed connection. `rejected`: the endpoint answered 4xx."""

    retriable = True

    def __init__(self, message: str, *, rejected: bool) -> None:
        super().__init__(message)
        self.rejected = rejected


class ClientCredentialsTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """KEDA's `bearer` token provider: OAuth 2 client credentials (RFC 6749 4.4) with the SASL
    `username` as client id and `password` as client secret, cached until shortly before it
    expires. Credentials go in a Basic header; a 4xx answer is retried once with them in the
    form body (what Go's oauth2 does by auto-detection). Never logs or shows a secret."""

    def __init__(
        self,
        *,
        token_url: str,
        client_id: str,
        client_secret: str,
        scopes: Sequence[str] = (),
        extensions: Sequence[tuple[str, str]] = (),
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self._url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._scopes = tuple(scopes)
        self._extensions = dict(extensions)
        self._timeout = timeout
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self.last_error: OAuthTokenError | None = None

    def __repr__(self) -> str:
        return f"<ClientCredentialsTokenProvider {self._url}>"

    def extensions(self) -> dict[str, str]:
        return dict(self._extensions)

    async def token(self) -> str:
        async with self._lock:
            if self._token is None or time.monotonic() >= self._expires_at:
                try:
                    self._token, lifetime = await self._fetch()
                except OAuthTokenError as exc:
                    self.last_error = exc
                    raise
                self.last_error = None
                self._expires_at = time.monotonic() + max(0.0, lifetime - TOKEN_EARLY_REFRESH)
            return self._token

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _fetch(self) -> tuple[str, float]:
        form = {"grant_type": "client_credentials"}
        if self._scopes:
            form["scope"] = " ".join(self._scopes)
        # RFC 6749 2.3.1: id and secret form-urlencoded, then Basic.
        quote = urllib.parse.quote_plus
        pair = f"{quote(self._client_id)}:{quote(self._client_secret)}"
        basic = "Basic " + base64.b64encode(pair.encode()).decode()
        status, body = await self._post(form, authorization=basic)
        if 400 <= status < 500:
            in_body = {**form, "client_id": self._client_id, "client_secret": self._client_secret}
            status, body = await self._post(in_body, authorization=None)
        if status != 200:
            raise OAuthTokenError(
                f"the OAuth token endpoint {self._url} answered HTTP {status}",
                rejected=400 <= status < 500,
            )
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise OAuthTokenError(
                f"the OAuth token endpoint {self._url} answered without an access_token",
                rejected=True,
            )
        expires_in = body.get("expires_in")
        # Without expires_in the token is kept until a new connection fails with it.
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else math.inf
        return token, lifetime

    async def _post(self, form: dict[str, str], *, authorization: str | None) -> tuple[int, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout)
            )
        try:
            headers = {"Accept": "application/json"}
            if authorization is not None:
                headers["Authorization"] = authorization
            async with self._session.post(self._url, data=form, headers=headers) as response:
                body: Any = None
                if response.status == 200:
                    with contextlib.suppress(ValueError, aiohttp.ContentTypeError):
                        body = await response.json(content_type=None)
                return response.status, body
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = type(exc).__name__
            raise OAuthTokenError(
                f"the OAuth token endpoint {self._url} is unreachable ({reason})", rejected=False
            ) from None


@dataclass(slots=True, eq=False)
class KafkaConnection:
    """What one shared lease holds: the aiokafka client and, for OAuth, its token provider."""

    client: Any  # aiokafka.AIOKafkaClient, bootstrapped
    token_provider: ClientCredentialsTokenProvider | None = None
    batcher: _OffsetsBatcher = field(init=False)  # every read of every scaler goes through it

    def __post_init__(self) -> None:
        self.batcher = _OffsetsBatcher(self.client)


def _client_options(
    config: KafkaConfig, token_provider: ClientCredentialsTokenProvider | None
) -> dict[str, Any]:
    """The AIOKafkaClient keyword arguments for this trigger (no I/O)."""
    options: dict[str, Any] = {
        "bootstrap_servers": list(config.bootstrap_servers),
        "client_id": CLIENT_ID,
        "request_timeout_ms": int(REQUEST_TIMEOUT * 1000),
        "metadata_max_age_ms": int(METADATA_MAX_AGE * 1000),
        "retry_backoff_ms": 100,
        "security_protocol": config.security_protocol,
    }
    if config.use_tls:
        options["ssl_context"] = _tls_context(config)
    mechanism = _SASL_MECHANISMS.get(config.sasl_mode)
    if mechanism is not None:
        options["sasl_mechanism"] = mechanism
    if mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        options["sasl_plain_username"] = config.username
        options["sasl_plain_password"] = config.password
    if mechanism == "OAUTHBEARER":
        options["sasl_oauth_token_provider"] = token_provider
    return options


def _token_provider(config: KafkaConfig) -> ClientCredentialsTokenProvider | None:
    if config.sasl_mode != "oauthbearer":
        return None
    # validate() made sure of these three.
    assert config.oauth_token_endpoint_uri is not None
    assert config.username is not None
    assert config.password is not None
    return ClientCredentialsTokenProvider(
        token_url=config.oauth_token_endpoint_uri,
        client_id=config.username,
        client_secret=config.password,
        scopes=config.scopes,
        extensions=config.oauth_extensions,
    )


async def _open_connection(
    config: KafkaConfig, token_provider: ClientCredentialsTokenProvider | None
) -> KafkaConnection:
    """A bootstrapped client (cluster metadata read); closed again if bootstrapping fails.

    aiokafka's bootstrap only says "Unable to bootstrap" and logs why; when it fails, one
    direct connection to the first server finds the reason, so that refused credentials are a
    ScalerQueryError and a failed TLS handshake says which check failed.
    """
    options = _client_options(config, token_provider)
    client = AIOKafkaClient(**options)
    try:
        await client.bootstrap()
    except aiokafka.errors.KafkaConnectionError:
        try:
            await _diagnose(config.bootstrap_servers[0], options)
        finally:  # after the diagnosis, which may use the token provider's session
            await _close_connection(KafkaConnection(client, token_provider))
        raise
    except BaseException:
        await _close_connection(KafkaConnection(client, token_provider))
        raise
    return KafkaConnection(client, token_provider)


_AUTHENTICATION_ERRORS: Final = (
    aiokafka.errors.SaslAuthenticationFailed,
    aiokafka.errors.AuthenticationFailedError,
    aiokafka.errors.AuthenticationMethodNotSupported,
    aiokafka.errors.UnsupportedSaslMechanismError,
    aiokafka.errors.IllegalSaslStateError,
)


async def _diagnose(server: str, options: Mapping[str, Any]) -> None:
    """Connect to `server` once as the client would; raise what explains a failure, if
    anything does (authentication, TLS, the token endpoint), else return."""
    host, _, port = server.rpartition(":")
    connection_options = {
        key: value
        for key, value in options.items()
        if key not in ("bootstrap_servers", "metadata_max_age_ms", "retry_backoff_ms")
    }
    try:
        connection = await create_conn(host.strip("[]"), int(port), **connection_options)
    except _AUTHENTICATION_ERRORS as exc:
        raise ScalerQueryError(f"authentication failed: {exc}") from exc
    except OAuthTokenError as exc:
        kind = ScalerQueryError if exc.rejected else ScalerUnavailableError
        raise kind(f"SASL OAUTHBEARER: {exc}") from exc
    except ssl.SSLError as exc:
        reason = exc.reason or type(exc).__name__
        raise ScalerUnavailableError(f"unavailable: TLS with {server} failed: {reason}") from exc
    except (OSError, TimeoutError, aiokafka.errors.KafkaError):
        return  # nothing more to learn than "Unable to bootstrap"
    connection.close()


async def _close_connection(connection: KafkaConnection) -> None:
    try:
        await connection.batcher.aclose()
        await connection.client.close()
    finally:
        if connection.token_provider is not None:
            await connection.token_provider.aclose()


# ---------------------------------------------------------------------------------------------
# Wire requests: each returns plain data, or raises ScalerQueryError / ScalerUnavailableError
# for an error code the broker answered with. Library exceptions pass through.


def _broker_error(code: int, what: str) -> ScalerError:
    cls = aiokafka.errors.for_code(code)
    name = getattr(cls, "message", None) or cls.__name__
    kind = ScalerUnavailableError if getattr(cls, "retriable", False) else ScalerQueryError
    return kind(f"{what}: {name}")


async def _send(client: Any, node_id: int, request: Any) -> Any:
    """Send to a broker, refreshing the client's broker list first if it does not know it."""
    if client.cluster.broker_metadata(node_id) is None:
        await client.force_metadata_update()
    return await client.send(node_id, request)


async def _committed_offsets(client: Any, group: str, coordinator: int) -> dict[Partition, int]:
    """Every offset `group` has committed (OffsetFetch with null topics, v2+), checking the
    group-level error code too (which aiokafka's admin client ignores when no topic comes
    back, turning e.g. GROUP_AUTHORIZATION_FAILED into "no commits")."""
    response = (await _send(client, coordinator, OffsetFetchRequest(group, None))).to_object()
    code = response.get("error_code", 0)
    if code:
        raise _broker_error(code, f'reading the offsets of consumer group "{group}"')
    offsets: dict[Partition, int] = {}
    for topic in response["topics"]:
        for row in topic["partitions"]:
            if row["error_code"]:
                where = f'reading the offset of consumer group "{group}" for {topic["topic"]}'
                raise _broker_error(row["error_code"], f"{where}/{row['partition']}")
            if row["offset"] >= 0:
                offsets[Partition(topic["topic"], row["partition"])] = row["offset"]
    return offsets


@dataclass(frozen=True, slots=True)
class _TopicLayout:
    leaders: dict[int, int]  # partition -> leader broker id (-1: none right now)
    error: int = 0  # the topic's error code from Metadata


async def _describe_topics(client: Any, topics: Sequence[str]) -> dict[str, _TopicLayout]:
    """Partitions and leaders of `topics`, asking the broker not to create missing ones."""
    node = client.get_random_node()
    if node is None:
        raise ScalerUnavailableError("no broker of the cluster is known")
    request = MetadataRequest(list(topics), allow_auto_topic_creation=False)
    response = (await _send(client, node, request)).to_object()
    layouts = {}
    for topic in response["topics"]:
        leaders = {p["partition"]: p["leader"] for p in topic["partitions"]}
        layouts[topic["topic"]] = _TopicLayout(leaders, topic["error_code"])
    return layouts


async def _gather(*calls: Any) -> list[Any]:
    """Run `calls` together; every one finishes (each is bounded by the request timeout) and
    the first failure, if any, is raised."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return list(results)


# ---------------------------------------------------------------------------------------------
# Coalescing: the reads of every scaler on one shared client, batched per broker and per group


_STALE_LAYOUT_CODES: Final = frozenset(
    {
        aiokafka.errors.UnknownTopicOrPartitionError.errno,
        aiokafka.errors.LeaderNotAvailableError.errno,
        aiokafka.errors.NotLeaderForPartitionError.errno,
        aiokafka.errors.ReplicaNotAvailableError.errno,
        aiokafka.errors.KafkaStorageError.errno,
    }
)


def _retrieve(answer: asyncio.Future[Any]) -> None:
    """Mark a shared answer's exception as seen: every reader may have timed out already."""
    if not answer.cancelled():
        answer.exception()


class _Batch(Generic[K, V]):
    """Reads of keys that arrive within `window` seconds of the first one are fetched by one
    call of `fetch` with all of their keys; each reader gets the values of its own keys.

    `fetch` takes {key: hint} (a hint is what sending needs, e.g. the partition's leader) and
    returns {key: value or exception}; a key it leaves out is left out of the readers' answers
    too. A reader's wait is shielded: a reader that times out does not cancel the fetch that
    the other readers of the batch wait for.
    """

    def __init__(
        self,
        fetch: Callable[[dict[K, Any]], Awaitable[Mapping[K, V | BaseException]]],
        *,
        window: float,
        tasks: set[asyncio.Task[None]],
    ) -> None:
        self._fetch = fetch
        self._window = window
        self._tasks = tasks
        self._pending: dict[K, Any] = {}
        self._answer: asyncio.Future[Mapping[K, V | BaseException]] | None = None

    async def read(self, keys: Mapping[K, Any]) -> dict[K, V]:
        """The values of `keys`; raises the error of the first key (in `keys` order) that
        failed, or the error that failed the whole fetch."""
        answer = self._answer
        if answer is None:
            loop = asyncio.get_running_loop()
            answer = self._answer = loop.create_future()
            answer.add_done_callback(_retrieve)
            task = loop.create_task(self._send(answer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(lambda _: self._abandon(answer))
        self._pending.update(keys)
        values = await asyncio.shield(answer)
        mine: dict[K, V] = {}
        for key in keys:
            if key not in values:
                continue
            value = values[key]
            if isinstance(value, BaseException):
                raise value
            mine[key] = value
        return mine

    def _abandon(self, answer: asyncio.Future[Mapping[K, V | BaseException]]) -> None:
        """After the batch's task ended: fail its readers if it never answered them (it was
        cancelled, perhaps before it even started), and let later readers open a new batch."""
        if self._answer is answer:
            self._pending, self._answer = {}, None
        if not answer.done():
            answer.set_exception(ScalerUnavailableError("the shared client was closed"))

    async def _send(self, answer: asyncio.Future[Mapping[K, V | BaseException]]) -> None:
        try:
            try:
                await asyncio.sleep(self._window)
            finally:  # the batch is closed from here on: later readers start the next one
                pending, self._pending, self._answer = self._pending, {}, None
            async with asyncio.timeout(POLL_TIMEOUT):
                values = await self._fetch(pending)
        except asyncio.CancelledError:
            if not answer.done():
                answer.set_exception(ScalerUnavailableError("the shared client was closed"))
            raise
        except Exception as exc:
            if not answer.done():
                answer.set_exception(exc)
        else:
            if not answer.done():
                answer.set_result(values)


class _OffsetsBatcher:
    """The coalescing reader of one shared client: see "Coalescing" in the module docstring.

    Three batches, each collecting reads for COALESCE_WINDOW seconds: committed offsets (one
    OffsetFetch per consumer group, to its coordinator), topic layouts (one Metadata request
    for every topic not in the cache) and log offsets (one ListOffsets per leader broker and
    per kind of offset). Coordinators are remembered per group, topic layouts for
    TOPIC_CACHE_TTL seconds (only complete ones: no error, every partition with a leader).
    """

    def __init__(
        self,
        client: Any,
        *,
        window: float = COALESCE_WINDOW,
        topic_ttl: float = TOPIC_CACHE_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._topic_ttl = topic_ttl
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._committed: _Batch[str, dict[Partition, int]] = _Batch(
            self._fetch_committed, window=window, tasks=self._tasks
        )
        self._topics: _Batch[str, _TopicLayout] = _Batch(
            self._fetch_topics, window=window, tasks=self._tasks
        )
        self._offsets: _Batch[tuple[Partition, int], int] = _Batch(
            self._fetch_offsets, window=window, tasks=self._tasks
        )
        self._coordinators: dict[str, int] = {}
        self._layouts: dict[str, tuple[float, _TopicLayout]] = {}
        self._counters = coalescing_counters("kafka")

    async def aclose(self) -> None:
        """Cancel the batches being collected or sent; their readers get an error."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def committed(self, group: str) -> dict[Partition, int]:
        """Every offset `group` has committed (see _committed_offsets)."""
        self._counters.reads += 1
        return (await self._committed.read({group: None}))[group]

    async def topics(
        self, topics: Sequence[str], *, refresh: bool = False
    ) -> dict[str, _TopicLayout]:
        """The layouts of `topics`, from the cache unless stale or `refresh`; a topic the
        broker leaves out of its answer is left out."""
        self._counters.reads += 1
        now = self._clock()
        layouts: dict[str, _TopicLayout] = {}
        missing: dict[str, None] = {}
        for topic in topics:
            cached = self._layouts.get(topic)
            if cached is not None and not refresh and now - cached[0] < self._topic_ttl:
                layouts[topic] = cached[1]
            else:
                missing[topic] = None
        if missing:
            layouts.update(await self._topics.read(missing))
        return layouts

    async def offsets(
        self, leaders: Mapping[Partition, int], timestamp: int
    ) -> dict[Partition, int]:
        """End (LATEST_OFFSET) or start (EARLIEST_OFFSET) offsets of these partitions, asked of
        their leaders; a partition the broker leaves out (or answers -1 for) is left out."""
        self._counters.reads += len(set(leaders.values()))
        values = await self._offsets.read({(p, timestamp): leader for p, leader in leaders.items()})
        return {partition: offset for (partition, _), offset in values.items()}

    # The fetches: each answers every key it was given, with a value or an exception.

    async def _fetch_committed(
        self, groups: dict[str, Any]
    ) -> dict[str, dict[Partition, int] | BaseException]:
        names = list(groups)
        results = await asyncio.gather(
            *(self._group_offsets(group) for group in names), return_exceptions=True
        )
        return dict(zip(names, results, strict=True))

    async def _group_offsets(self, group: str) -> dict[Partition, int]:
        """One group's offsets, through its coordinator: looked up once, and again (with one
        immediate retry) when a request to it fails in a way that may mean it moved."""
        client = self._client
        for retry in (False, True):
            coordinator = self._coordinators.get(group)
            if coordinator is None:
                if client.get_random_node() is None:
                    raise ScalerUnavailableError("no broker of the cluster is known")
                self._counters.round_trips += 1
                coordinator = self._coordinators[group] = int(
                    await client.coordinator_lookup(0, group)
                )
            try:
                self._counters.round_trips += 1
                return await _committed_offsets(client, group, coordinator)
            except (ScalerUnavailableError, aiokafka.errors.KafkaError) as exc:
                if not isinstance(exc, ScalerError) and not exc.retriable:
                    raise
                self._coordinators.pop(group, None)
                if retry:
                    raise
        raise AssertionError("unreachable")

    async def _fetch_topics(self, topics: dict[str, Any]) -> dict[str, _TopicLayout]:
        self._counters.round_trips += 1
        layouts = await _describe_topics(self._client, sorted(topics))
        now = self._clock()
        for topic, layout in layouts.items():
            if layout.error == 0 and all(leader >= 0 for leader in layout.leaders.values()):
                self._layouts[topic] = (now, layout)
            else:
                self._layouts.pop(topic, None)
        return layouts

    async def _fetch_offsets(
        self, wanted: dict[tuple[Partition, int], Any]
    ) -> dict[tuple[Partition, int], int | BaseException]:
        requests: dict[tuple[int, int], dict[str, list[tuple[int, int]]]] = {}
        for (partition, timestamp), leader in wanted.items():
            topics = requests.setdefault((int(leader), timestamp), {})
            topics.setdefault(partition.topic, []).append((partition.partition, timestamp))

        async def ask(leader: int, topics: dict[str, list[tuple[int, int]]]) -> Any:
            self._counters.round_trips += 1
            request = OffsetRequest(-1, READ_UNCOMMITTED, list(topics.items()))
            return (await _send(self._client, leader, request)).to_object()

        batches = list(requests.items())
        responses = await asyncio.gather(
            *(ask(leader, topics) for (leader, _), topics in batches), return_exceptions=True
        )
        values: dict[tuple[Partition, int], int | BaseException] = {}
        for ((_, timestamp), topics), response in zip(batches, responses, strict=True):
            if isinstance(response, BaseException):  # the leader may have moved: look again
                for topic, rows in topics.items():
                    self._layouts.pop(topic, None)
                    for number, _ in rows:
                        values[(Partition(topic, number), timestamp)] = response
                continue
            for topic in response["topics"]:
                for row in topic["partitions"]:
                    partition = Partition(topic["topic"], row["partition"])
                    if row["error_code"]:
                        if row["error_code"] in _STALE_LAYOUT_CODES:
                            self._layouts.pop(partition.topic, None)
                        what = "end" if timestamp == LATEST_OFFSET else "start"
                        where = (
                            f"reading the {what} offset of {partition.topic}/{partition.partition}"
                        )
                        values[(partition, timestamp)] = _broker_error(row["error_code"], where)
                        continue
                    offset = row["offset"] if "offset" in row else (row.get("offsets") or [-1])[0]
                    if offset >= 0:
                        values[(partition, timestamp)] = offset
        return values


# ---------------------------------------------------------------------------------------------
# The scaler


class KafkaScaler:
    """One kafka trigger; see the module docstring."""

    type_name: ClassVar[str] = "kafka"
    aliases: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        config: KafkaConfig,
        *,
        trigger_index: int,
        trigger_name: str | None = None,
        connections: SharedClients,
        metric_type: MetricType = MetricType.AVERAGE_VALUE,
        timeout: float = POLL_TIMEOUT,
    ) -> None:
        self.config = config
        what = config.topic if config.topic else f"{config.consumer_group}-topics"
        self.metric_name = registry.metric_name(trigger_index, f"kafka-{what}")
        self.metric_type = metric_type
        self.endpoint = KafkaEndpoint.of(config)
        self.label = registry.trigger_label(
            index=trigger_index, name=trigger_name, type_name=self.type_name
        )
        self._connections = connections
        self._timeout = timeout
        self._lease: Lease[KafkaConnection] | None = None
        self._leasing = asyncio.Lock()
        self._token_provider: ClientCredentialsTokenProvider | None = None
        self._previous: Mapping[Partition, int] = {}

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
            KafkaConfig,
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
            f"<KafkaScaler {self.metric_name} group={self.config.consumer_group} {self.endpoint}>"
        )

    async def sample(self) -> MetricSample:
        """One poll: ScalerUnavailableError if the cluster cannot be read in time,
        ScalerQueryError if it answers with something that cannot be scaled on."""
        with self._translate_errors():
            async with asyncio.timeout(self._timeout):
                connection = await self._connection()
                snapshot = await self._fetch(connection)
        with self._translate_errors():
            report = lag_from_offsets(snapshot, self.config, self._previous)
        self._previous = report.committed
        return sample_from_report(
            report, self.config, name=self.metric_name, metric_type=self.metric_type
        )

    async def aclose(self) -> None:
        """Release the shared client (closed if this was its last user); idempotent."""
        lease, self._lease = self._lease, None
        if lease is not None:
            await lease.release()

    async def _connection(self) -> KafkaConnection:
        async with self._leasing:
            if self._lease is None:
                config = self.config
                provider = self._token_provider = _token_provider(config)
                self._lease = await self._connections.acquire(
                    self.endpoint, lambda: _open_connection(config, provider), _close_connection
                )
                # The client may be someone else's, with its own (equivalent) provider.
                self._token_provider = self._lease.client.token_provider
            return self._lease.client

    async def _fetch(self, connection: KafkaConnection) -> OffsetsSnapshot:
        """Read what lag_from_offsets needs through the shared batcher (see the module
        docstring): committed offsets and topic layouts together, then log offsets. A layout
        from the cache is read again once within the poll when it looks stale: a committed
        partition it lacks (partitions were added), or an error from a leader."""
        config = self.config
        batcher = connection.batcher
        if config.topic:
            topics = [config.topic]
            committed, layouts = await _gather(
                batcher.committed(config.consumer_group), batcher.topics(topics)
            )
        else:
            committed = await batcher.committed(config.consumer_group)
            topics = sorted({p.topic for p in committed})
            layouts = await batcher.topics(topics) if topics else {}
        fresh = False
        if any(
            p.topic in layouts and p.partition not in layouts[p.topic].leaders for p in committed
        ):
            layouts, fresh = await batcher.topics(topics, refresh=True), True
        while True:
            leaders = self._partitions(layouts)
            uncommitted = {p: leader for p, leader in leaders.items() if p not in committed}
            try:
                ends = await batcher.offsets(leaders, LATEST_OFFSET) if leaders else {}
                starts: dict[Partition, int] = {}
                if config.needs_start_offsets and uncommitted:
                    starts = await batcher.offsets(uncommitted, EARLIEST_OFFSET)
                break
            except ScalerError:
                if fresh:
                    raise
                layouts, fresh = await batcher.topics(topics, refresh=True), True
        partitions = {}
        for partition, end in ends.items():
            start = starts.get(partition)
            if partition in uncommitted and config.needs_start_offsets and start is None:
                continue  # the broker left it out of its answer: not counted (KEDA: lag 0)
            partitions[partition] = PartitionOffsets(
                end=end, committed=committed.get(partition), start=start
            )
        return OffsetsSnapshot(partitions)

    def _partitions(self, layouts: Mapping[str, _TopicLayout]) -> dict[Partition, int]:
        """The partitions to count with their leaders; raises for a missing topic (with
        `topic`), a topic-level error, a partition without leader, or a partitionLimitation
        that leaves nothing."""
        config = self.config
        leaders: dict[Partition, int] = {}
        for topic, layout in sorted(layouts.items()):
            if layout.error == aiokafka.errors.UnknownTopicOrPartitionError.errno:
                if config.topic:
                    raise ScalerQueryError(f'topic "{topic}" does not exist')
                continue  # committed offsets outliving their topic: nothing to read there
            if layout.error:
                raise _broker_error(layout.error, f'reading the partitions of topic "{topic}"')
            wanted = config.partitions_limited
            for partition, leader in sorted(layout.leaders.items()):
                if wanted is not None and partition not in wanted:
                    continue
                if leader < 0:
                    raise ScalerUnavailableError(
                        f"partition {topic}/{partition} has no leader right now"
                    )
                leaders[Partition(topic, partition)] = leader
        if config.topic and not leaders:
            raise ScalerQueryError(
                f'none of the partitions in "partitionLimitation" exist in topic "{config.topic}"'
            )
        return leaders

    @contextlib.contextmanager
    def _translate_errors(self) -> Iterator[None]:
        """Library exceptions become ours, with secrets scrubbed from the text."""
        where = f"{self.label}: {self.endpoint}"
        try:
            yield
        except (ScalerQueryError, ScalerUnavailableError) as exc:
            raise type(exc)(f"{where}: {self._scrub(str(exc))}") from None
        except TimeoutError as exc:  # asyncio.timeout
            raise ScalerUnavailableError(f"{where}: no answer within {self._timeout:g}s") from exc
        except (
            aiokafka.errors.KafkaConnectionError,
            aiokafka.errors.NodeNotReadyError,
            aiokafka.errors.RequestTimedOutError,
            aiokafka.errors.KafkaTimeoutError,
            OSError,
        ) as exc:
            reason = self._scrub(str(exc)) or type(exc).__name__
            token_error = self._token_provider.last_error if self._token_provider else None
            if token_error is not None:
                kind = ScalerQueryError if token_error.rejected else ScalerUnavailableError
                raise kind(
                    f"{where}: unavailable: {reason}; {self._scrub(str(token_error))}"
                ) from exc
            raise ScalerUnavailableError(f"{where}: unavailable: {reason}") from exc
        except aiokafka.errors.KafkaError as exc:
            kind = ScalerUnavailableError if exc.retriable else ScalerQueryError
            raise kind(f"{where}: {self._scrub(str(exc)) or type(exc).__name__}") from exc

    def _scrub(self, text: str) -> str:
        for secret in (self.config.password, self.config.key_password):
            if secret:
                text = text.replace(secret, "***")
        return text
