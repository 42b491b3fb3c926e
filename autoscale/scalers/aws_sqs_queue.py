"""`type: aws-sqs-queue`: scale on the messages of an Amazon SQS queue.

KEDA's trigger, parameter for parameter. One GetQueueAttributes call per poll reads

- `ApproximateNumberOfMessages` (visible: waiting to be received), always;
- plus `ApproximateNumberOfMessagesNotVisible` (in flight: received, not yet deleted) when
  `scaleOnInFlight` is true, the default;
- plus `ApproximateNumberOfMessagesDelayed` (sent with a delay, not yet visible) when
  `scaleOnDelayed` is true (default false).

The sum is scaled on against `queueLength` (default 5) and the trigger is active when it
exceeds `activationQueueLength` (default 0). SQS returns the counts as strings: each must be a
non-negative integer, and a missing one is a ScalerQueryError, as in KEDA. The metric is named
`s{index}-aws-sqs-{queue name}`. The counts are approximate and can lag about a minute behind
the queue (AWS's documentation says so): keep `cooldownPeriod` at 60 s or more.

`queueURL` (or `queueURLFromEnv`) is a queue URL, `https://sqs.<region>.amazonaws.com/<account
id>/<name>`, or a bare queue name, passed to SQS as it is (as KEDA does).

Credentials, as KEDA picks them (auth params from a TriggerAuthentication):

- `awsRoleArn` (optionally `awsExternalId`): STS AssumeRole into that role, using the
  operator's own identity (AWS's default credential chain). When the operator has a web
  identity token (`AWS_WEB_IDENTITY_TOKEN_FILE`, as IRSA provides), AssumeRoleWithWebIdentity
  into the role is tried first, as KEDA does. The credentials are refreshable: renewed before
  they expire, so a long-running operator keeps reading.
- else, with `identityOwner: pod` (the default): `awsAccessKeyID` (or `awsAccessKeyId`) and
  `awsSecretAccessKey`, optionally `awsSessionToken`; or KEDA's legacy metadata forms
  `awsAccessKeyID` / `awsAccessKeyIDFromEnv` and `awsSecretAccessKeyFromEnv`.
- otherwise (no credentials, or `identityOwner: operator`): the operator's own identity, from
  AWS's default credential chain (environment, IRSA web identity, EKS Pod Identity, instance
  profile). This is what KEDA's `podIdentity.provider: aws` gives without a roleArn.

Differences from KEDA, on the side of safety or of working where KEDA does not:

- no credentials at all with `identityOwner: pod` uses the operator's identity (KEDA: error
  "awsAccessKeyID not found"): the scaler cannot see a TriggerAuthentication's podIdentity,
  and this is what podIdentity `aws` means. No privilege is gained: KEDA's own `identityOwner:
  operator` gives any trigger the same identity.
- `awsRegion` may be left out when `queueURL` is an AWS queue URL, which names the region.
- checked when the trigger is read, not at the first poll: `queueLength` > 0, `queueURL`'s
  shape, `awsEndpoint`'s scheme, `identityOwner` in pod|operator (KEDA treats any other value
  as operator), access key and secret given together; parameters that end up unused (keys
  beside a role, an external id without a role) are reported as warnings.
- one boto3 client per region, endpoint, credentials and role, shared by every trigger and
  ScaledObject through SharedClients; every boto3 call runs in the bounded thread pool
  (`run_blocking`), never on the event loop, under botocore connect/read timeouts and two
  attempts at most, and the whole poll under POLL_TIMEOUT.
- error messages are our own: an SQS or STS error code and HTTP status, never the text AWS
  or botocore wrote; secrets never reach a message, a repr or a log (botocore's own DEBUG
  logging, which prints request headers and STS replies, is held at INFO or above).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import logging
import os
import re
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self, cast

import boto3.session
import botocore.session
from botocore import UNSIGNED
from botocore.config import Config
from botocore.credentials import (
    CredentialProvider,
    CredentialResolver,
    Credentials,
    DeferredRefreshableCredentials,
)
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConfigParseError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    HTTPClientError,
    InvalidConfigError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
    SSLError,
)
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from autoscale.errors import ConfigError, ScalerError, ScalerQueryError, ScalerUnavailableError
from autoscale.scalers import registry
from autoscale.scalers.base import MetricSample, MetricType
from autoscale.scalers.blocking import MAX_WORKERS, run_blocking
from autoscale.scalers.connections import Lease, SharedClients, secret_digest
from autoscale.scalers.params import AUTH, ENV, METADATA, parse_params
from autoscale.scalers.params import param as _param

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType
    from mypy_boto3_sts import STSClient

__all__ = [
    "CONNECT_TIMEOUT",
    "DEFAULT_SETTINGS",
    "MAX_ATTEMPTS",
    "POLL_TIMEOUT",
    "READ_TIMEOUT",
    "ROLE_SESSION_NAME",
    "AwsSqsQueueConfig",
    "AwsSqsQueueScaler",
    "ClientSettings",
    "CredentialSource",
    "IdentityOwner",
    "QueueRef",
    "SqsClientKey",
    "SqsHandle",
    "attribute_names",
    "ignored_parameters",
    "queue_length",
    "region_of_url",
    "role_credentials",
    "sample_from_attributes",
]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT: Final = 2.0  # seconds to open a connection to SQS or STS
READ_TIMEOUT: Final = 3.0  # seconds to wait for a reply
MAX_ATTEMPTS: Final = 2  # per request, retries included (botocore's "standard" retry mode)
POLL_TIMEOUT: Final = 8.0  # seconds for a whole poll; below the loop's own 10 s
ROLE_SESSION_NAME: Final = "autoscale"  # STS session name (KEDA uses "KEDA")

VISIBLE: Final = "ApproximateNumberOfMessages"
IN_FLIGHT: Final = "ApproximateNumberOfMessagesNotVisible"
DELAYED: Final = "ApproximateNumberOfMessagesDelayed"


def _quiet_botocore() -> None:
    """botocore logs request headers (the session token among them) and STS replies (assumed
    credentials) at DEBUG: keep its loggers at INFO or above, whatever the root level."""
    botocore_log = logging.getLogger("botocore")
    if botocore_log.level == logging.NOTSET or botocore_log.level < logging.INFO:
        botocore_log.setLevel(logging.INFO)


_quiet_botocore()


# ---------------------------------------------------------------------------------------------
# Parameters


class IdentityOwner(enum.Enum):
    """KEDA's `identityOwner` metadata: whose identity reads the queue without a role."""

    POD = "pod"  # the trigger's credentials (access keys), else the operator's own
    OPERATOR = "operator"  # the operator's own identity; access keys are ignored


class CredentialSource(enum.Enum):
    """Where the credentials of a trigger come from."""

    ASSUME_ROLE = "assume-role"  # awsRoleArn, assumed with the operator's identity
    ACCESS_KEYS = "access-keys"  # awsAccessKeyID + awsSecretAccessKey (+ awsSessionToken)
    OPERATOR = "operator"  # AWS's default credential chain in the operator's process


_REGION = re.compile(r"[a-z]{2,4}(?:-[a-z]+)+-[0-9]+")
_HOST_LABELS = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,75}(?:\.fifo)?|[A-Za-z0-9_-]{1,80}")
# sqs.<region>.amazonaws.com, sqs-fips.<region>..., vpce-x.sqs.<region>.vpce.amazonaws.com,
# and the legacy <region>.queue.amazonaws.com; ".com.cn" in China.
_AWS_HOSTS = (
    re.compile(
        r"(?:.+\.)?sqs(?:-fips)?\.(?P<region>[a-z0-9-]+)\.(?:vpce\.)?amazonaws\.com(?:\.cn)?"
    ),
    re.compile(r"(?P<region>[a-z0-9-]+)\.queue\.amazonaws\.com(?:\.cn)?"),
)


def region_of_url(url: str) -> str | None:
    """The region an AWS queue URL names in its host, or None (a name, or another host)."""
    host = (urllib.parse.urlsplit(url).hostname or "") if "://" in url else ""
    for pattern in _AWS_HOSTS:
        match = pattern.fullmatch(host)
        if match and _REGION.fullmatch(match["region"]):
            return match["region"]
    return None


@dataclass(frozen=True, slots=True)
class QueueRef:
    """`queueURL` as given (a URL or a bare name) and the queue name read from it."""

    url: str
    name: str

    @property
    def region(self) -> str | None:
        return region_of_url(self.url)


def _queue_ref(raw: str) -> QueueRef:
    """KEDA's reading: a URL's path is /<account id>/<name>; anything else is a queue name."""
    if "://" not in raw:
        if not _QUEUE_NAME.fullmatch(raw):
            raise ValueError(
                "expected a queue URL (https://sqs.<region>.amazonaws.com/<account id>/<name>) "
                "or a queue name (up to 80 letters, digits, hyphens or underscores, "
                "ending in .fifo for a FIFO queue)"
            )
        return QueueRef(raw, raw)
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("a queue URL starts with https:// (or http://) and a host")
    segments = parts.path.split("/")
    if len(segments) != 3 or not segments[1] or not _QUEUE_NAME.fullmatch(segments[2]):
        raise ValueError("the path of a queue URL is /<account id>/<queue name>")
    return QueueRef(raw, segments[2])


def _region(raw: str) -> str:
    if not _HOST_LABELS.fullmatch(raw):
        raise ValueError("a region is letters, digits and hyphens, such as eu-west-1")
    return raw


def _endpoint(raw: str) -> str:
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected http:// or https:// and a host")
    return raw.rstrip("/")


@dataclass(frozen=True, slots=True, kw_only=True)
class AwsSqsQueueConfig:
    """An aws-sqs-queue trigger's parameters; secrets stay out of repr()."""

    # What.
    queue: QueueRef = _param("queueURL", sources=(METADATA, ENV), converter=_queue_ref)
    queue_length: int = _param("queueLength", default=5)
    activation_queue_length: int = _param("activationQueueLength", default=0)
    scale_on_in_flight: bool = _param("scaleOnInFlight", default=True)
    scale_on_delayed: bool = _param("scaleOnDelayed", default=False)
    # Where.
    aws_region: str | None = _param(
        "awsRegion", sources=(METADATA, AUTH), default=None, converter=_region
    )
    aws_endpoint: str | None = _param("awsEndpoint", default=None, converter=_endpoint)
    # Who.
    identity_owner: IdentityOwner = _param(
        "identityOwner",
        default=IdentityOwner.POD,
        deprecated="KEDA deprecates it; use a TriggerAuthentication",
    )
    aws_role_arn: str | None = _param("awsRoleArn", sources=(AUTH,), default=None)
    aws_external_id: str | None = _param(
        "awsExternalId", sources=(AUTH,), default=None, secret=True
    )
    aws_access_key_id: str | None = _param(
        "awsAccessKeyID", sources=(AUTH, METADATA, ENV), default=None
    )
    # KEDA reads this spelling too (from auth params only), without deprecating it.
    aws_access_key_id_lower: str | None = _param("awsAccessKeyId", sources=(AUTH,), default=None)
    aws_secret_access_key: str | None = _param(
        "awsSecretAccessKey", sources=(AUTH, ENV), default=None, secret=True
    )
    aws_session_token: str | None = _param(
        "awsSessionToken", sources=(AUTH,), default=None, secret=True
    )

    @property
    def region(self) -> str:
        """`awsRegion`, else the region in the queue URL (validate() ensures one)."""
        region = self.aws_region or self.queue.region
        if region is None:
            raise ValueError("no region")  # unreachable after validate()
        return region

    @property
    def access_key_id(self) -> str | None:
        return self.aws_access_key_id or self.aws_access_key_id_lower

    @property
    def credentials(self) -> CredentialSource:
        """KEDA's choice: a role first; access keys unless identityOwner is operator."""
        if self.aws_role_arn:
            return CredentialSource.ASSUME_ROLE
        if self.identity_owner is IdentityOwner.POD and (
            self.access_key_id or self.aws_secret_access_key or self.aws_session_token
        ):
            return CredentialSource.ACCESS_KEYS
        return CredentialSource.OPERATOR

    def validate(self) -> None:
        """Rules across fields; every problem is reported at once."""
        problems = []
        if self.queue_length <= 0:
            problems.append('parameter "queueLength" must be greater than 0')
        if self.aws_region is None and self.queue.region is None:
            problems.append(
                'missing required parameter "awsRegion" (looked in metadata, auth params; '
                "queueURL names no region)"
            )
        if self.credentials is CredentialSource.ACCESS_KEYS:
            if not self.access_key_id:
                problems.append(
                    'missing parameter "awsAccessKeyID" (looked in auth params, metadata, env '
                    'via "awsAccessKeyIDFromEnv"), which "awsSecretAccessKey" needs'
                    if self.aws_secret_access_key
                    else 'auth param "awsSessionToken" needs "awsAccessKeyID" and '
                    '"awsSecretAccessKey"'
                )
            elif not self.aws_secret_access_key:
                problems.append(
                    'missing parameter "awsSecretAccessKey" (looked in auth params, env via '
                    '"awsSecretAccessKeyFromEnv"), which "awsAccessKeyID" needs'
                )
        if problems:
            raise ConfigError("; ".join(problems))


def ignored_parameters(config: AwsSqsQueueConfig) -> list[str]:
    """Warnings for parameters the configuration makes useless (KEDA ignores them silently)."""
    notes = []
    keys = [
        name
        for name, value in (
            ("awsAccessKeyID", config.aws_access_key_id),
            ("awsAccessKeyId", config.aws_access_key_id_lower),
            ("awsSecretAccessKey", config.aws_secret_access_key),
            ("awsSessionToken", config.aws_session_token),
        )
        if value
    ]
    if keys and config.credentials is CredentialSource.ASSUME_ROLE:
        listed = ", ".join(f'"{k}"' for k in keys)
        notes.append(
            f'{listed} ignored: with "awsRoleArn" the role is assumed with the operator\'s '
            "own identity, as in KEDA"
        )
    elif keys and config.identity_owner is IdentityOwner.OPERATOR:
        listed = ", ".join(f'"{k}"' for k in keys)
        notes.append(f'{listed} ignored: "identityOwner: operator" uses the operator\'s identity')
    if config.aws_external_id and not config.aws_role_arn:
        notes.append('auth param "awsExternalId" is ignored without "awsRoleArn"')
    url_region = config.queue.region
    if config.aws_region and url_region and url_region != config.aws_region:
        notes.append(
            f'parameter "awsRegion" is not the region of queueURL ({url_region}): '
            "requests go to awsRegion's endpoint"
        )
    if config.activation_queue_length < 0:
        notes.append('parameter "activationQueueLength" is negative: the trigger is always active')
    return notes


# ---------------------------------------------------------------------------------------------
# Interpretation (pure)


def attribute_names(config: AwsSqsQueueConfig) -> tuple[str, ...]:
    """The queue attributes the trigger adds up, in KEDA's order."""
    names = [VISIBLE]
    if config.scale_on_in_flight:
        names.append(IN_FLIGHT)
    if config.scale_on_delayed:
        names.append(DELAYED)
    return tuple(names)


def queue_length(attributes: Mapping[str, str], config: AwsSqsQueueConfig) -> int:
    """The sum of the attributes `config` asks for; ScalerQueryError if one is missing or is
    not a count."""
    total = 0
    for name in attribute_names(config):
        raw = attributes.get(name)
        if raw is None:
            raise ScalerQueryError(f"SQS returned no {name} attribute")
        text = raw.strip()
        if not text.isascii() or not text.isdigit():
            shown = raw if len(raw) <= 40 else raw[:40] + "..."
            raise ScalerQueryError(f'SQS returned {name} "{shown}", not a count')
        total += int(text)
    return total


def sample_from_attributes(
    attributes: Mapping[str, str],
    config: AwsSqsQueueConfig,
    *,
    name: str,
    metric_type: MetricType = MetricType.AVERAGE_VALUE,
) -> MetricSample:
    """The trigger's sample: the message count against queueLength and activationQueueLength."""
    return MetricSample(
        name=name,
        value=float(queue_length(attributes, config)),
        target=float(config.queue_length),
        activation_target=float(config.activation_queue_length),
        metric_type=metric_type,
    )


# ---------------------------------------------------------------------------------------------
# Clients


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """botocore's limits for one client: every request is bounded."""

    connect_timeout: float = CONNECT_TIMEOUT
    read_timeout: float = READ_TIMEOUT
    max_attempts: int = MAX_ATTEMPTS

    def botocore_config(self, **extra: Any) -> Config:
        return Config(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries={"mode": "standard", "total_max_attempts": self.max_attempts},
            max_pool_connections=max(10, MAX_WORKERS),
            user_agent_extra="autoscale",
            **extra,
        )


DEFAULT_SETTINGS: Final = ClientSettings()


@dataclass(frozen=True, slots=True)
class SqsClientKey:
    """The key of a shared client: equal keys share one. Digests, never secrets."""

    region: str
    endpoint: str | None
    credentials: CredentialSource
    keys_digest: str | None = None  # of access key id, secret key and session token
    role_arn: str | None = None
    external_id_digest: str | None = None
    settings: ClientSettings = DEFAULT_SETTINGS

    @classmethod
    def of(cls, config: AwsSqsQueueConfig, settings: ClientSettings) -> SqsClientKey:
        source = config.credentials
        keys = role = external = None
        if source is CredentialSource.ACCESS_KEYS:
            parts = (config.access_key_id, config.aws_secret_access_key, config.aws_session_token)
            keys = secret_digest("\0".join(p or "" for p in parts))
        elif source is CredentialSource.ASSUME_ROLE:
            role = config.aws_role_arn
            external = secret_digest(config.aws_external_id)
        return cls(
            region=config.region,
            endpoint=config.aws_endpoint,
            credentials=source,
            keys_digest=keys,
            role_arn=role,
            external_id_digest=external,
            settings=settings,
        )

    def __str__(self) -> str:
        return f"{self.region}, {self.endpoint}" if self.endpoint else self.region


@dataclass(slots=True, eq=False)
class SqsHandle:
    """A shared SQS client, and the STS clients its credentials refresh with."""

    sqs: SQSClient
    helpers: tuple[Any, ...] = ()

    def close(self) -> None:
        for client in (self.sqs, *self.helpers):
            client.close()


class _RoleError(Exception):
    """Assuming the role failed; the message is ours and names no secret."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class _Fixed(CredentialProvider):
    """A credential resolver entry that always yields the given credentials."""

    METHOD = "autoscale-assume-role"
    CANONICAL_NAME = "custom-autoscale-assume-role"

    def __init__(self, credentials: Credentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> Credentials:
        return self._credentials


def role_credentials(
    *,
    sts: STSClient,
    role_arn: str,
    external_id: str | None = None,
    web_identity_sts: STSClient | None = None,
    token_file: str | None = None,
    session_name: str = ROLE_SESSION_NAME,
    settings: ClientSettings | None = None,
    time_fetcher: Callable[[], datetime.datetime] | None = None,
) -> DeferredRefreshableCredentials:
    """Credentials of `role_arn`, fetched on first use and renewed before they expire.

    Each fetch tries AssumeRoleWithWebIdentity with the token in `token_file` first (through
    the unsigned `web_identity_sts`), when both are given, then AssumeRole through `sts`
    (signed with the operator's identity), as KEDA does. Failures raise _RoleError.
    """
    limits = settings or DEFAULT_SETTINGS

    def fetch() -> dict[str, str]:
        reply: Any = None
        if token_file and web_identity_sts is not None:
            try:
                with open(token_file, encoding="utf-8") as file:
                    token = file.read().strip()
                reply = web_identity_sts.assume_role_with_web_identity(
                    RoleArn=role_arn, RoleSessionName=session_name, WebIdentityToken=token
                )
            except OSError as exc:
                log.debug(
                    "web identity token unreadable (%s); trying AssumeRole", type(exc).__name__
                )
            except (ClientError, BotoCoreError) as exc:
                log.debug(
                    "AssumeRoleWithWebIdentity into %s failed (%s); trying AssumeRole",
                    role_arn,
                    _describe(exc, limits, service="STS")[1],
                )
        if reply is None:
            try:
                if external_id:
                    reply = sts.assume_role(
                        RoleArn=role_arn, RoleSessionName=session_name, ExternalId=external_id
                    )
                else:
                    reply = sts.assume_role(RoleArn=role_arn, RoleSessionName=session_name)
            except (ClientError, BotoCoreError) as exc:
                transient, reason = _describe(exc, limits, service="STS")
                raise _RoleError(
                    f'assuming role "{role_arn}" failed: {reason}', transient=transient
                ) from exc
        credentials = reply["Credentials"]
        return {
            "access_key": credentials["AccessKeyId"],
            "secret_key": credentials["SecretAccessKey"],
            "token": credentials["SessionToken"],
            "expiry_time": credentials["Expiration"].isoformat(),
        }

    if time_fetcher is None:
        return DeferredRefreshableCredentials(refresh_using=fetch, method="assume-role")
    return DeferredRefreshableCredentials(
        refresh_using=fetch, method="assume-role", time_fetcher=time_fetcher
    )


def _open_client(config: AwsSqsQueueConfig, settings: ClientSettings) -> SqsHandle:
    """Build the client (blocking: loads botocore's models; may query the credential chain).

    Runs in the thread pool. No request is sent to SQS here.
    """
    region, endpoint = config.region, config.aws_endpoint
    botocore_config = settings.botocore_config()
    source = config.credentials
    if source is CredentialSource.ACCESS_KEYS:
        session = boto3.session.Session(
            aws_access_key_id=config.access_key_id,
            aws_secret_access_key=config.aws_secret_access_key,
            aws_session_token=config.aws_session_token,
            region_name=region,
        )
        sqs = session.client(
            "sqs", region_name=region, endpoint_url=endpoint, config=botocore_config
        )
        return SqsHandle(sqs)
    operator = boto3.session.Session(region_name=region)  # the default credential chain
    if source is CredentialSource.OPERATOR:
        if operator.get_credentials() is None:
            raise NoCredentialsError()  # do not keep a client that can never sign
        sqs = operator.client(
            "sqs", region_name=region, endpoint_url=endpoint, config=botocore_config
        )
        return SqsHandle(sqs)
    assert config.aws_role_arn is not None  # the source says so
    sts = operator.client("sts", region_name=region, config=botocore_config)
    token_file = os.environ.get("AWS_WEB_IDENTITY_TOKEN_FILE") or None
    unsigned = None
    if token_file:
        unsigned = operator.client(
            "sts",
            region_name=region,
            config=settings.botocore_config(signature_version=UNSIGNED),
        )
    credentials = role_credentials(
        sts=sts,
        role_arn=config.aws_role_arn,
        external_id=config.aws_external_id,
        web_identity_sts=unsigned,
        token_file=token_file,
        settings=settings,
    )
    role_session = botocore.session.Session()
    role_session.register_component(
        "credential_provider", CredentialResolver([_Fixed(credentials)])
    )
    sqs = boto3.session.Session(botocore_session=role_session, region_name=region).client(
        "sqs", region_name=region, endpoint_url=endpoint, config=botocore_config
    )
    return SqsHandle(sqs, (sts,) if unsigned is None else (sts, unsigned))


def _get_attributes(client: SQSClient, queue_url: str, names: Sequence[str]) -> dict[str, str]:
    """One GetQueueAttributes call (blocking)."""
    wanted = cast("list[QueueAttributeNameType]", list(names))
    reply = client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=wanted)
    return {str(name): value for name, value in reply.get("Attributes", {}).items()}


# ---------------------------------------------------------------------------------------------
# Errors

_NOT_FOUND: Final = frozenset(
    {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"}
)
_NOT_AUTHORIZED: Final = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AuthFailure",
        "ExpiredToken",
        "ExpiredTokenException",
        "IncompleteSignature",
        "InvalidClientTokenId",
        "InvalidSecurity",
        "MissingAuthenticationToken",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
    }
)
_TRANSIENT: Final = frozenset(
    {
        "InternalError",
        "InternalFailure",
        "RequestThrottled",
        "RequestTimeout",
        "RequestTimeoutException",
        "ServiceUnavailable",
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
    }
)
_CODE = re.compile(r"[A-Za-z][A-Za-z0-9.:_-]{0,79}")
_XML_CODE = re.compile(r"<Code>([A-Za-z][A-Za-z0-9.:_-]{0,79})</Code>")


def _client_error(exc: ClientError) -> tuple[str, int | None]:
    """The error code (only if it looks like one) and the HTTP status of an AWS error."""
    error: Mapping[str, Any] = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = str(error.get("Code", ""))
    if code.isdigit():  # an XML error body read by a JSON client (moto, some proxies)
        match = _XML_CODE.search(str(error.get("Message", "")))
        code = match.group(1) if match else ""
    return (code if _CODE.fullmatch(code) else ""), status if isinstance(status, int) else None


def _describe(
    exc: BaseException, settings: ClientSettings, *, service: str = "SQS"
) -> tuple[bool, str]:
    """(transient, reason) for a botocore exception, in our words: no text of theirs."""
    if isinstance(exc, _RoleError):
        return exc.transient, str(exc)
    if isinstance(exc, ReadTimeoutError):
        return True, f"no answer from {service} within {settings.read_timeout:g}s"
    if isinstance(exc, ConnectTimeoutError):
        return True, f"no connection to {service} within {settings.connect_timeout:g}s"
    if isinstance(exc, SSLError):
        return True, f"TLS with {service} failed"
    if isinstance(exc, ConnectionClosedError):
        return True, f"{service} closed the connection"
    if isinstance(exc, (BotocoreConnectionError, HTTPClientError)):
        return True, f"cannot connect to {service}"
    if isinstance(exc, NoCredentialsError):
        return False, "no AWS credentials: the operator's default credential chain has none"
    if isinstance(exc, PartialCredentialsError):
        return False, "incomplete AWS credentials in the operator's environment"
    if isinstance(exc, CredentialRetrievalError):
        return True, "the operator's AWS credentials could not be fetched"
    if isinstance(exc, (InvalidConfigError, ProfileNotFound, ConfigParseError)):
        return False, f"the operator's AWS configuration is unusable ({type(exc).__name__})"
    if isinstance(exc, ClientError):
        code, status = _client_error(exc)
        what = ", ".join(p for p in (code, f"HTTP {status}" if status else "") if p) or "?"
        if code in _NOT_FOUND:
            return False, f"the queue does not exist ({what})"
        if code in _NOT_AUTHORIZED or status in (401, 403):
            return False, f"not authorized ({what})"
        if code in _TRANSIENT or (status is not None and (status == 429 or status >= 500)):
            return True, f"{service} is unavailable ({what})"
        return False, f"{service} refused the request ({what})"
    if isinstance(exc, OSError):
        return True, f"cannot reach {service} ({type(exc).__name__})"
    return False, f"{type(exc).__name__} from botocore"


# ---------------------------------------------------------------------------------------------
# The scaler


class AwsSqsQueueScaler:
    """One aws-sqs-queue trigger; see the module docstring."""

    type_name: ClassVar[str] = "aws-sqs-queue"
    aliases: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        config: AwsSqsQueueConfig,
        *,
        trigger_index: int,
        trigger_name: str | None = None,
        connections: SharedClients,
        metric_type: MetricType = MetricType.AVERAGE_VALUE,
        timeout: float = POLL_TIMEOUT,
        settings: ClientSettings | None = None,
    ) -> None:
        settings = settings or DEFAULT_SETTINGS
        self.config = config
        self.metric_name = registry.metric_name(trigger_index, f"aws-sqs-{config.queue.name}")
        self.metric_type = metric_type
        self.key = SqsClientKey.of(config, settings)
        self.label = registry.trigger_label(
            index=trigger_index, name=trigger_name, type_name=self.type_name
        )
        self._attributes = attribute_names(config)
        self._connections = connections
        self._timeout = timeout
        self._settings = settings
        self._lease: Lease[SqsHandle] | None = None
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
            AwsSqsQueueConfig,
            metadata=metadata,
            auth_params=auth_params,
            resolved_env=resolved_env,
            trigger_label=label,
            warnings=warnings,
        )
        if warnings is not None:
            warnings.extend(f"{label}: {note}" for note in ignored_parameters(config))
        return cls(
            config,
            trigger_index=trigger_index,
            trigger_name=trigger_name,
            connections=connections,
            metric_type=metric_type,
        )

    def __repr__(self) -> str:
        source = self.key.credentials.value
        return f"<AwsSqsQueueScaler {self.metric_name} ({self.key}, {source})>"

    async def sample(self) -> MetricSample:
        """One poll: ScalerUnavailableError if SQS (or STS) cannot be reached in time,
        ScalerQueryError if it answers with a refusal or something that is not a count."""
        with self._translate_errors():
            async with asyncio.timeout(self._timeout):
                handle = await self._client()
                attributes = await run_blocking(
                    _get_attributes, handle.sqs, self.config.queue.url, self._attributes
                )
        with self._translate_errors():
            return sample_from_attributes(
                attributes, self.config, name=self.metric_name, metric_type=self.metric_type
            )

    async def aclose(self) -> None:
        """Release the shared client (closed if this was its last user); idempotent."""
        lease, self._lease = self._lease, None
        if lease is not None:
            await lease.release()

    async def _client(self) -> SqsHandle:
        async with self._leasing:
            if self._lease is None:
                config, settings = self.config, self._settings
                self._lease = await self._connections.acquire(
                    self.key,
                    lambda: run_blocking(_open_client, config, settings),
                    _close_client,
                )
            return self._lease.client

    @contextlib.contextmanager
    def _translate_errors(self) -> Iterator[None]:
        """botocore's exceptions become ours, with messages of our own."""
        where = f'{self.label}: queue "{self.config.queue.name}" ({self.key})'
        try:
            yield
        except ScalerError as exc:
            raise type(exc)(f"{where}: {exc}") from None
        except TimeoutError as exc:  # asyncio.timeout around the whole poll
            raise ScalerUnavailableError(f"{where}: no answer within {self._timeout:g}s") from exc
        except (_RoleError, BotoCoreError, ClientError, OSError) as exc:
            transient, reason = _describe(exc, self._settings)
            error = ScalerUnavailableError if transient else ScalerQueryError
            raise error(f"{where}: {reason}") from exc


async def _close_client(handle: SqsHandle) -> None:
    await run_blocking(handle.close)
