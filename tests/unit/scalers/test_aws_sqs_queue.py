"""aws-sqs-queue without a server: parameters and credentials choice, the attributes->sample
function, client keys, secrets kept out of text, and botocore errors translated at the
boundary. The real SQS and STS behaviour is in tests/integration/test_aws_sqs_queue.py."""

from __future__ import annotations

import hashlib
import logging
import traceback
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    InvalidConfigError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
    SSLError,
)

from autoscale.errors import ConfigError, ScalerQueryError, ScalerUnavailableError
from autoscale.scalers import aws_sqs_queue
from autoscale.scalers.aws_sqs_queue import (
    DEFAULT_SETTINGS,
    AwsSqsQueueConfig,
    AwsSqsQueueScaler,
    CredentialSource,
    IdentityOwner,
    QueueRef,
    SqsClientKey,
    attribute_names,
    queue_length,
    region_of_url,
    sample_from_attributes,
)
from autoscale.scalers.base import MetricSample, MetricType
from autoscale.scalers.connections import SharedClients, secret_digest
from autoscale.scalers.registry import ScalerRegistry

LABEL = "trigger[0] (aws-sqs-queue)"
URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/orders"
BASE = {"queueURL": URL}
KEY_ID = "AKIAEXAMPLEKEYID0001"
SECRET = "wJalrXUtnFEMI/K7MDENG/never-shown-SECRET"
TOKEN = "FwoGZXIvYXdzEXAMPLE-session-TOKEN-never-shown"
KEYS = {"awsAccessKeyID": KEY_ID, "awsSecretAccessKey": SECRET}


def scaler(
    metadata: dict[str, str],
    auth: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    warnings: list[str] | None = None,
    *,
    index: int = 0,
    name: str | None = None,
) -> AwsSqsQueueScaler:
    return AwsSqsQueueScaler.from_trigger(
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
) -> AwsSqsQueueConfig:
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
# Parameters


def test_defaults_are_kedas() -> None:
    """queueLength 5, activation 0, in-flight counted, delayed not, identityOwner pod."""
    parsed = config(BASE)
    assert (parsed.queue_length, parsed.activation_queue_length) == (5, 0)
    assert (parsed.scale_on_in_flight, parsed.scale_on_delayed) == (True, False)
    assert parsed.identity_owner is IdentityOwner.POD
    assert parsed.aws_endpoint is None
    assert parsed.queue == QueueRef(URL, "orders")
    assert parsed.region == "eu-west-1"
    assert parsed.credentials is CredentialSource.OPERATOR


@pytest.mark.parametrize(
    ("metadata", "auth", "env", "attr", "expected"),
    [
        pytest.param({"queueLength": "10"}, {}, {}, "queue_length", 10, id="queue-length"),
        pytest.param(
            {"activationQueueLength": "3"}, {}, {}, "activation_queue_length", 3, id="activation"
        ),
        pytest.param(
            {"scaleOnInFlight": "false"}, {}, {}, "scale_on_in_flight", False, id="in-flight-off"
        ),
        pytest.param({"scaleOnDelayed": "true"}, {}, {}, "scale_on_delayed", True, id="delayed-on"),
        pytest.param(
            {"queueURL": "", "queueURLFromEnv": "Q"},
            {},
            {"Q": URL},
            "queue",
            QueueRef(URL, "orders"),
            id="queue-url-from-env",
        ),
        pytest.param(
            {"queueURLFromEnv": "Q"},
            {},
            {"Q": "https://sqs.us-east-1.amazonaws.com/1/other"},
            "queue",
            QueueRef(URL, "orders"),
            id="queue-url-metadata-wins-over-env",
        ),
        pytest.param(
            {"queueURL": "orders", "awsRegion": "eu-west-1"},
            {},
            {},
            "queue",
            QueueRef("orders", "orders"),
            id="bare-name",
        ),
        pytest.param(
            {"queueURL": "jobs.fifo", "awsRegion": "eu-west-1"},
            {},
            {},
            "queue",
            QueueRef("jobs.fifo", "jobs.fifo"),
            id="bare-fifo-name",
        ),
        pytest.param(
            {"queueURL": "http://127.0.0.1:4566/000000000000/q_1", "awsRegion": "us-east-1"},
            {},
            {},
            "queue",
            QueueRef("http://127.0.0.1:4566/000000000000/q_1", "q_1"),
            id="local-endpoint-url",
        ),
        pytest.param({"awsRegion": "us-west-2"}, {}, {}, "region", "us-west-2", id="region-wins"),
        pytest.param({}, {"awsRegion": "ap-south-1"}, {}, "region", "ap-south-1", id="region-auth"),
        pytest.param(
            {"awsRegion": "us-west-2"},
            {"awsRegion": "ap-south-1"},
            {},
            "region",
            "us-west-2",
            id="region-metadata-before-auth",
        ),
        pytest.param({}, {}, {}, "region", "eu-west-1", id="region-from-url"),
        pytest.param(
            {"awsEndpoint": "http://127.0.0.1:5000/"},
            {},
            {},
            "aws_endpoint",
            "http://127.0.0.1:5000",
            id="endpoint",
        ),
        pytest.param(
            {"identityOwner": "operator"},
            {},
            {},
            "identity_owner",
            IdentityOwner.OPERATOR,
            id="identity-owner-operator",
        ),
        pytest.param({}, KEYS, {}, "access_key_id", KEY_ID, id="key-id-auth"),
        pytest.param(
            {},
            {"awsAccessKeyId": KEY_ID, "awsSecretAccessKey": SECRET},
            {},
            "access_key_id",
            KEY_ID,
            id="key-id-auth-lower-d",
        ),
        pytest.param(
            {"awsAccessKeyID": KEY_ID, "awsSecretAccessKeyFromEnv": "S"},
            {},
            {"S": SECRET},
            "access_key_id",
            KEY_ID,
            id="key-id-metadata-legacy",
        ),
        pytest.param(
            {"awsAccessKeyIDFromEnv": "K", "awsSecretAccessKeyFromEnv": "S"},
            {},
            {"K": KEY_ID, "S": SECRET},
            "aws_secret_access_key",
            SECRET,
            id="keys-from-env-legacy",
        ),
        pytest.param(
            {}, {**KEYS, "awsSessionToken": TOKEN}, {}, "aws_session_token", TOKEN, id="tok"
        ),
        pytest.param(
            {},
            {"awsRoleArn": "arn:aws:iam::1:role/r"},
            {},
            "aws_role_arn",
            "arn:aws:iam::1:role/r",
            id="role",
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
    """Each parameter, from each source KEDA reads it from."""
    assert getattr(config({**BASE, **metadata}, auth, env), attr) == expected


ROLE = "arn:aws:iam::123456789012:role/queue-reader"


@pytest.mark.parametrize(
    ("metadata", "auth", "env", "expected"),
    [
        pytest.param({}, {}, {}, CredentialSource.OPERATOR, id="nothing-operator-identity"),
        pytest.param({}, KEYS, {}, CredentialSource.ACCESS_KEYS, id="keys"),
        pytest.param({}, {"awsRoleArn": ROLE}, {}, CredentialSource.ASSUME_ROLE, id="role"),
        pytest.param(
            {}, {**KEYS, "awsRoleArn": ROLE}, {}, CredentialSource.ASSUME_ROLE, id="role-wins"
        ),
        pytest.param(
            {"identityOwner": "operator"},
            KEYS,
            {},
            CredentialSource.OPERATOR,
            id="operator-no-keys",
        ),
        pytest.param(
            {"identityOwner": "operator"},
            {"awsRoleArn": ROLE},
            {},
            CredentialSource.ASSUME_ROLE,
            id="operator-role",
        ),
        pytest.param(
            {"awsAccessKeyIDFromEnv": "K", "awsSecretAccessKeyFromEnv": "S"},
            {},
            {"K": KEY_ID, "S": SECRET},
            CredentialSource.ACCESS_KEYS,
            id="legacy-env-keys",
        ),
    ],
)
def test_credentials_as_keda_picks_them(
    metadata: dict[str, str],
    auth: dict[str, str],
    env: dict[str, str],
    expected: CredentialSource,
) -> None:
    """A role first; access keys unless identityOwner is operator; else the operator's own."""
    assert config({**BASE, **metadata}, auth, env).credentials is expected


@pytest.mark.parametrize(
    ("metadata", "auth", "env", "message"),
    [
        pytest.param(
            {"queueURL": ""},
            {},
            {},
            'missing required parameter "queueURL" (looked in metadata, env via "queueURLFromEnv")',
            id="missing-queue-url",
        ),
        pytest.param(
            {"queueURL": "orders"},
            {},
            {},
            'missing required parameter "awsRegion" (looked in metadata, auth params; '
            "queueURL names no region)",
            id="name-without-region",
        ),
        pytest.param(
            {"queueURL": "http://127.0.0.1:4566/000000000000/q"},
            {},
            {},
            'missing required parameter "awsRegion" (looked in metadata, auth params; '
            "queueURL names no region)",
            id="local-url-without-region",
        ),
        pytest.param(
            {"queueLength": "0"},
            {},
            {},
            'parameter "queueLength" must be greater than 0',
            id="queue-length-zero",
        ),
        pytest.param(
            {"queueLength": "-3"},
            {},
            {},
            'parameter "queueLength" must be greater than 0',
            id="queue-length-negative",
        ),
        pytest.param(
            {"queueLength": "2.5"},
            {},
            {},
            'parameter "queueLength" value "2.5" is not an integer',
            id="queue-length-float",
        ),
        pytest.param(
            {"activationQueueLength": "many"},
            {},
            {},
            'parameter "activationQueueLength" value "many" is not an integer',
            id="activation-word",
        ),
        pytest.param(
            {"scaleOnInFlight": "yes"},
            {},
            {},
            'parameter "scaleOnInFlight" value "yes" is not a boolean (true or false)',
            id="in-flight-word",
        ),
        pytest.param(
            {"scaleOnDelayed": "1x"},
            {},
            {},
            'parameter "scaleOnDelayed" value "1x" is not a boolean (true or false)',
            id="delayed-word",
        ),
        pytest.param(
            {"identityOwner": "keda"},
            {},
            {},
            'parameter "identityOwner" value "keda" must be one of "pod", "operator"',
            id="identity-owner-word",
        ),
        pytest.param(
            {"queueURL": "https://sqs.eu-west-1.amazonaws.com/orders"},
            {},
            {},
            'parameter "queueURL" value "https://sqs.eu-west-1.amazonaws.com/orders" is invalid: '
            "the path of a queue URL is /<account id>/<queue name>",
            id="url-without-account",
        ),
        pytest.param(
            {"queueURL": "https://sqs.eu-west-1.amazonaws.com/1/orders/"},
            {},
            {},
            "the path of a queue URL is /<account id>/<queue name>",
            id="url-trailing-slash",
        ),
        pytest.param(
            {"queueURL": "ftp://sqs.eu-west-1.amazonaws.com/1/orders"},
            {},
            {},
            "a queue URL starts with https:// (or http://) and a host",
            id="url-scheme",
        ),
        pytest.param(
            {"queueURL": "sqs.eu-west-1.amazonaws.com/1/orders", "awsRegion": "eu-west-1"},
            {},
            {},
            'parameter "queueURL" value "sqs.eu-west-1.amazonaws.com/1/orders" is invalid: '
            "expected a queue URL (https://sqs.<region>.amazonaws.com/<account id>/<name>) or "
            "a queue name (up to 80 letters, digits, hyphens or underscores, ending in .fifo "
            "for a FIFO queue)",
            id="url-without-scheme",
        ),
        pytest.param(
            {"queueURL": "x" * 81, "awsRegion": "eu-west-1"},
            {},
            {},
            "expected a queue URL",
            id="name-too-long",
        ),
        pytest.param(
            {"queueURL": "", "queueURLFromEnv": "Q", "awsRegion": "eu-west-1"},
            {},
            {"Q": "not a url"},
            'parameter "queueURL" is invalid (value not shown)',
            id="env-value-not-shown",
        ),
        pytest.param(
            {"awsRegion": "eu west"},
            {},
            {},
            'parameter "awsRegion" value "eu west" is invalid: a region is letters, digits '
            "and hyphens, such as eu-west-1",
            id="region-word",
        ),
        pytest.param(
            {"awsEndpoint": "localhost:4566"},
            {},
            {},
            'parameter "awsEndpoint" value "localhost:4566" is invalid: expected http:// or '
            "https:// and a host",
            id="endpoint-without-scheme",
        ),
        pytest.param(
            {},
            {"awsAccessKeyID": KEY_ID},
            {},
            'missing parameter "awsSecretAccessKey" (looked in auth params, env via '
            '"awsSecretAccessKeyFromEnv"), which "awsAccessKeyID" needs',
            id="key-without-secret",
        ),
        pytest.param(
            {"awsAccessKeyID": KEY_ID},
            {},
            {},
            'missing parameter "awsSecretAccessKey"',
            id="metadata-key-without-secret",
        ),
        pytest.param(
            {},
            {"awsSecretAccessKey": SECRET},
            {},
            'missing parameter "awsAccessKeyID" (looked in auth params, metadata, env via '
            '"awsAccessKeyIDFromEnv"), which "awsSecretAccessKey" needs',
            id="secret-without-key",
        ),
        pytest.param(
            {},
            {"awsSessionToken": TOKEN},
            {},
            'auth param "awsSessionToken" needs "awsAccessKeyID" and "awsSecretAccessKey"',
            id="token-alone",
        ),
    ],
)
def test_errors_name_the_field(
    metadata: dict[str, str], auth: dict[str, str], env: dict[str, str], message: str
) -> None:
    """Each bad parameter gives a ConfigError with a fixed wording, prefixed by the trigger."""
    assert message in error({**BASE, **metadata}, auth, env)


def test_every_error_is_reported_at_once() -> None:
    """Field errors are collected into one message; cross-field rules follow once fields are
    fine."""
    assert error({"queueURL": "a/b", "queueLength": "x", "identityOwner": "me"}) == (
        'parameter "queueURL" value "a/b" is invalid: expected a queue URL '
        "(https://sqs.<region>.amazonaws.com/<account id>/<name>) or a queue name (up to 80 "
        "letters, digits, hyphens or underscores, ending in .fifo for a FIFO queue); "
        'parameter "queueLength" value "x" is not an integer; '
        'parameter "identityOwner" value "me" must be one of "pod", "operator"'
    )
    assert error({**BASE, "queueLength": "0"}, {"awsSecretAccessKey": SECRET}) == (
        'parameter "queueLength" must be greater than 0; missing parameter "awsAccessKeyID" '
        '(looked in auth params, metadata, env via "awsAccessKeyIDFromEnv"), which '
        '"awsSecretAccessKey" needs'
    )


def test_error_names_trigger_by_index_and_name() -> None:
    """The label carries the index and the trigger's name."""
    with pytest.raises(ConfigError, match=r'^trigger\[2\] "jobs" \(aws-sqs-queue\): missing'):
        scaler({}, index=2, name="jobs")


@pytest.mark.parametrize(
    ("metadata", "auth", "expected"),
    [
        pytest.param({}, {}, [], id="none"),
        pytest.param({}, KEYS, [], id="keys-none"),
        pytest.param(
            {},
            {**KEYS, "awsRoleArn": ROLE},
            [
                '"awsAccessKeyID", "awsSecretAccessKey" ignored: with "awsRoleArn" the role is '
                "assumed with the operator's own identity, as in KEDA"
            ],
            id="keys-beside-role",
        ),
        pytest.param(
            {"identityOwner": "operator"},
            {**KEYS, "awsSessionToken": TOKEN},
            [
                'parameter "identityOwner" is deprecated: KEDA deprecates it; use a '
                "TriggerAuthentication",
                '"awsAccessKeyID", "awsSecretAccessKey", "awsSessionToken" ignored: '
                '"identityOwner: operator" uses the operator\'s identity',
            ],
            id="keys-with-operator",
        ),
        pytest.param(
            {},
            {"awsExternalId": "ext"},
            ['auth param "awsExternalId" is ignored without "awsRoleArn"'],
            id="external-id-without-role",
        ),
        pytest.param({}, {"awsRoleArn": ROLE, "awsExternalId": "ext"}, [], id="external-id"),
        pytest.param(
            {"awsRegion": "us-east-1"},
            {},
            [
                'parameter "awsRegion" is not the region of queueURL (eu-west-1): requests go '
                "to awsRegion's endpoint"
            ],
            id="region-mismatch",
        ),
        pytest.param(
            {"activationQueueLength": "-1"},
            {},
            ['parameter "activationQueueLength" is negative: the trigger is always active'],
            id="activation-negative",
        ),
        pytest.param(
            {"awsSecretAccessKey": SECRET},
            KEYS,
            [
                'parameter "awsSecretAccessKey" is ignored in metadata; it is read from auth '
                'params, env via "awsSecretAccessKeyFromEnv"'
            ],
            id="plaintext-secret-in-metadata-ignored",
        ),
        pytest.param(
            {"queueUrl": "x"},
            {},
            ['unknown parameter "queueUrl" (did you mean "queueURL"?)'],
            id="typo",
        ),
    ],
)
def test_warnings(metadata: dict[str, str], auth: dict[str, str], expected: list[str]) -> None:
    """Parameters that end up unused are reported, never silently dropped."""
    assert warnings_of({**BASE, **metadata}, auth) == expected


def test_plaintext_secret_in_metadata_is_not_used() -> None:
    """KEDA never reads awsSecretAccessKey from metadata; neither do we."""
    parsed = config(
        {**BASE, "awsAccessKeyID": KEY_ID, "awsSecretAccessKeyFromEnv": "S"}, env={"S": "from-env"}
    )
    assert parsed.aws_secret_access_key == "from-env"
    assert "missing parameter" in error(
        {**BASE, "awsAccessKeyID": KEY_ID, "awsSecretAccessKey": SECRET}
    )


@pytest.mark.parametrize(
    ("url", "region"),
    [
        pytest.param(URL, "eu-west-1", id="standard"),
        pytest.param("https://sqs.us-gov-west-1.amazonaws.com/1/q", "us-gov-west-1", id="gov"),
        pytest.param("https://sqs.cn-north-1.amazonaws.com.cn/1/q", "cn-north-1", id="china"),
        pytest.param("https://sqs-fips.us-east-2.amazonaws.com/1/q", "us-east-2", id="fips"),
        pytest.param(
            "https://vpce-0abc-xyz.sqs.ap-southeast-2.vpce.amazonaws.com/1/q",
            "ap-southeast-2",
            id="vpc-endpoint",
        ),
        pytest.param("https://eu-central-1.queue.amazonaws.com/1/q", "eu-central-1", id="legacy"),
        pytest.param("http://127.0.0.1:4566/000000000000/q", None, id="local"),
        pytest.param("https://sqs.amazonaws.com/1/q", None, id="no-region"),
        pytest.param("https://sqs.eu-west-1.example.com/1/q", None, id="not-aws"),
        pytest.param("orders", None, id="name"),
    ],
)
def test_region_of_url(url: str, region: str | None) -> None:
    """Only AWS's own SQS hosts name a region."""
    assert region_of_url(url) == region


def test_metric_name_is_kedas() -> None:
    """`s{index}-aws-sqs-{queue name}`, with KEDA's normalisation of "."."""
    assert scaler(BASE, index=2).metric_name == "s2-aws-sqs-orders"
    fifo = scaler({"queueURL": "https://sqs.eu-west-1.amazonaws.com/1/jobs.fifo"})
    assert fifo.metric_name == "s0-aws-sqs-jobs-fifo"


def test_building_does_no_io() -> None:
    """from_trigger opens nothing: the client is leased on the first poll."""
    connections = SharedClients()
    AwsSqsQueueScaler.from_trigger(
        trigger_index=0,
        trigger_name=None,
        metadata=BASE,
        auth_params=KEYS,
        resolved_env={},
        connections=connections,
        warnings=None,
    )
    assert len(connections) == 0


def test_registry_builds_it() -> None:
    """The built-in line in BUILTIN_SCALERS resolves to this class."""
    built = ScalerRegistry(entry_point_group=None).build_scaler(
        "aws-sqs-queue", trigger_index=1, metadata=BASE, connections=SharedClients()
    )
    assert isinstance(built, AwsSqsQueueScaler)
    assert built.metric_name == "s1-aws-sqs-orders"


# ---------------------------------------------------------------------------------------------
# Attributes -> sample (pure)

ATTRIBUTES = {
    "ApproximateNumberOfMessages": "4",
    "ApproximateNumberOfMessagesNotVisible": "2",
    "ApproximateNumberOfMessagesDelayed": "1",
}


@pytest.mark.parametrize(
    ("in_flight", "delayed", "names", "expected"),
    [
        pytest.param(
            "true",
            "false",
            ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"),
            6,
            id="default-visible-plus-in-flight",
        ),
        pytest.param("false", "false", ("ApproximateNumberOfMessages",), 4, id="visible-only"),
        pytest.param(
            "true",
            "true",
            (
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ),
            7,
            id="all-three",
        ),
        pytest.param(
            "false",
            "true",
            ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"),
            5,
            id="visible-plus-delayed",
        ),
    ],
)
def test_queue_length_adds_the_switched_on_attributes(
    in_flight: str, delayed: str, names: tuple[str, ...], expected: int
) -> None:
    """Visible always; in flight with scaleOnInFlight; delayed with scaleOnDelayed."""
    cfg = config({**BASE, "scaleOnInFlight": in_flight, "scaleOnDelayed": delayed})
    assert attribute_names(cfg) == names
    assert queue_length(ATTRIBUTES, cfg) == expected


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        pytest.param(
            {"ApproximateNumberOfMessages": "4"},
            "SQS returned no ApproximateNumberOfMessagesNotVisible attribute",
            id="missing",
        ),
        pytest.param(
            {**ATTRIBUTES, "ApproximateNumberOfMessages": "four"},
            'SQS returned ApproximateNumberOfMessages "four", not a count',
            id="word",
        ),
        pytest.param(
            {**ATTRIBUTES, "ApproximateNumberOfMessagesNotVisible": "-1"},
            'SQS returned ApproximateNumberOfMessagesNotVisible "-1", not a count',
            id="negative",
        ),
        pytest.param(
            {**ATTRIBUTES, "ApproximateNumberOfMessages": "1.5"},
            'SQS returned ApproximateNumberOfMessages "1.5", not a count',
            id="fraction",
        ),
        pytest.param(
            {**ATTRIBUTES, "ApproximateNumberOfMessages": ""},
            'SQS returned ApproximateNumberOfMessages "", not a count',
            id="empty",
        ),
        pytest.param(
            {**ATTRIBUTES, "ApproximateNumberOfMessages": "\u0663"},
            'SQS returned ApproximateNumberOfMessages "\u0663", not a count',
            id="non-ascii-digit",
        ),
        pytest.param(
            {**ATTRIBUTES, "ApproximateNumberOfMessages": "9" * 49 + "x"},
            f'SQS returned ApproximateNumberOfMessages "{"9" * 40}...", not a count',
            id="long-value-cut",
        ),
    ],
)
def test_queue_length_refuses_what_is_not_a_count(attributes: dict[str, str], message: str) -> None:
    """A missing or malformed attribute is a ScalerQueryError, never a silent 0."""
    with pytest.raises(ScalerQueryError) as info:
        queue_length(attributes, config(BASE))
    assert str(info.value) == message


def test_unrequested_attributes_are_ignored() -> None:
    """Delayed messages do not count unless scaleOnDelayed is true, even if returned."""
    assert queue_length(ATTRIBUTES, config({**BASE, "scaleOnInFlight": "false"})) == 4


def test_whitespace_around_a_count_is_tolerated() -> None:
    assert (
        queue_length(
            {"ApproximateNumberOfMessages": " 12 "}, config({**BASE, "scaleOnInFlight": "false"})
        )
        == 12
    )


def test_sample_carries_target_activation_and_type() -> None:
    """Value against queueLength; active above activationQueueLength; the trigger's type."""
    cfg = config({**BASE, "queueLength": "3", "activationQueueLength": "2"})
    sample = sample_from_attributes(
        ATTRIBUTES, cfg, name="s0-aws-sqs-orders", metric_type=MetricType.VALUE
    )
    assert sample == MetricSample(
        name="s0-aws-sqs-orders",
        value=6.0,
        target=3.0,
        activation_target=2.0,
        metric_type=MetricType.VALUE,
    )


# ---------------------------------------------------------------------------------------------
# Client keys and secrets


def test_secrets_stay_out_of_reprs_and_keys() -> None:
    """Secret key, session token and external id appear in no repr, str or client key."""
    s = scaler(BASE, {**KEYS, "awsSessionToken": TOKEN})
    role = scaler(BASE, {"awsRoleArn": ROLE, "awsExternalId": "ext-" + SECRET})
    texts = [repr(x) for x in (s, s.config, s.key, role, role.config, role.key)]
    texts += [str(s.key), str(role.key)]
    assert s.config.aws_secret_access_key == SECRET
    for text in texts:
        assert SECRET not in text
        assert TOKEN not in text
        assert KEY_ID not in repr(s.key)
    assert s.key.keys_digest == secret_digest(f"{KEY_ID}\0{SECRET}\0{TOKEN}")
    assert s.key.keys_digest != hashlib.sha256(SECRET.encode()).hexdigest()
    assert repr(s) == "<AwsSqsQueueScaler s0-aws-sqs-orders (eu-west-1, access-keys)>"


def test_secret_values_from_auth_or_env_are_never_quoted() -> None:
    """A bad value from auth params or env is named, never shown."""
    message = error({**BASE, "awsRegion": ""}, {"awsRegion": SECRET})
    assert message == 'parameter "awsRegion" is invalid (value not shown)'


def test_clients_are_shared_exactly_when_everything_matches() -> None:
    """Equal region, endpoint, credentials and role: one key; any difference: another."""
    one = scaler(BASE, KEYS).key
    assert one == scaler({"queueURL": URL.replace("orders", "other")}, KEYS).key
    assert one == scaler({**BASE, "queueLength": "9", "scaleOnDelayed": "true"}, KEYS).key
    assert one == scaler({**BASE, "awsRegion": "eu-west-1"}, KEYS).key
    differing = [
        scaler(BASE, {**KEYS, "awsSecretAccessKey": SECRET + "!"}),
        scaler(BASE, {**KEYS, "awsSessionToken": TOKEN}),
        scaler(BASE, {**KEYS, "awsAccessKeyID": KEY_ID[:-1] + "2"}),
        scaler(BASE),
        scaler({**BASE, "awsRegion": "eu-west-2"}, KEYS),
        scaler({**BASE, "awsEndpoint": "http://127.0.0.1:4566"}, KEYS),
        scaler(BASE, {"awsRoleArn": ROLE}),
        scaler(BASE, {"awsRoleArn": ROLE, "awsExternalId": "e"}),
        scaler(BASE, {"awsRoleArn": ROLE + "2"}),
    ]
    keys = {one, *(s.key for s in differing)}
    assert len(keys) == 1 + len(differing)
    assert scaler(BASE, {"awsRoleArn": ROLE}).key == scaler(BASE, {**KEYS, "awsRoleArn": ROLE}).key
    assert scaler(BASE).key == scaler({**BASE, "identityOwner": "operator"}, KEYS).key


def test_client_settings_are_bounded() -> None:
    """Connect and read timeouts and at most two attempts, in botocore's config."""
    cfg: Any = DEFAULT_SETTINGS.botocore_config()
    assert (cfg.connect_timeout, cfg.read_timeout) == (2.0, 3.0)
    assert cfg.retries == {"mode": "standard", "total_max_attempts": 2}
    assert SqsClientKey.of(config(BASE), DEFAULT_SETTINGS).settings is DEFAULT_SETTINGS


def test_botocore_debug_logging_is_held_back() -> None:
    """Importing the scaler keeps botocore (which logs request headers and STS replies at
    DEBUG) at INFO or above."""
    assert logging.getLogger("botocore").getEffectiveLevel() >= logging.INFO
    assert logging.getLogger("botocore.parsers").getEffectiveLevel() >= logging.INFO
    assert aws_sqs_queue.log.name == "autoscale.scalers.aws_sqs_queue"


# ---------------------------------------------------------------------------------------------
# Error translation at the boundary


def client_error(code: str, status: int, message: str = "AWS says " + SECRET) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "GetQueueAttributes")


ENDPOINT = "https://sqs.eu-west-1.amazonaws.com/?token=" + TOKEN


@pytest.mark.parametrize(
    ("raised", "kind", "text"),
    [
        pytest.param(
            client_error("AWS.SimpleQueueService.NonExistentQueue", 400),
            ScalerQueryError,
            "the queue does not exist (AWS.SimpleQueueService.NonExistentQueue, HTTP 400)",
            id="no-queue",
        ),
        pytest.param(
            client_error("QueueDoesNotExist", 400),
            ScalerQueryError,
            "the queue does not exist (QueueDoesNotExist, HTTP 400)",
            id="no-queue-json-code",
        ),
        pytest.param(
            client_error("AccessDenied", 403),
            ScalerQueryError,
            "not authorized (AccessDenied, HTTP 403)",
            id="access-denied",
        ),
        pytest.param(
            client_error("InvalidClientTokenId", 403),
            ScalerQueryError,
            "not authorized (InvalidClientTokenId, HTTP 403)",
            id="unknown-key",
        ),
        pytest.param(
            client_error("SignatureDoesNotMatch", 403),
            ScalerQueryError,
            "not authorized (SignatureDoesNotMatch, HTTP 403)",
            id="wrong-secret",
        ),
        pytest.param(
            client_error("ExpiredToken", 400),
            ScalerQueryError,
            "not authorized (ExpiredToken, HTTP 400)",
            id="expired-token",
        ),
        pytest.param(
            client_error(
                "403",
                403,
                "<ErrorResponse><Error><Code>AccessDenied</Code><Message>no</Message>",
            ),
            ScalerQueryError,
            "not authorized (AccessDenied, HTTP 403)",
            id="xml-body-to-json-client",
        ),
        pytest.param(
            client_error("Throttling", 400),
            ScalerUnavailableError,
            "SQS is unavailable (Throttling, HTTP 400)",
            id="throttled",
        ),
        pytest.param(
            client_error("InternalError", 500),
            ScalerUnavailableError,
            "SQS is unavailable (InternalError, HTTP 500)",
            id="server-error",
        ),
        pytest.param(
            client_error("Odd", 503),
            ScalerUnavailableError,
            "SQS is unavailable (Odd, HTTP 503)",
            id="any-5xx",
        ),
        pytest.param(
            client_error("InvalidAddress", 404),
            ScalerQueryError,
            "SQS refused the request (InvalidAddress, HTTP 404)",
            id="other-refusal",
        ),
        pytest.param(
            client_error(SECRET + " weird code", 400),
            ScalerQueryError,
            "SQS refused the request (HTTP 400)",
            id="code-that-is-not-a-code-is-dropped",
        ),
        pytest.param(
            EndpointConnectionError(endpoint_url=ENDPOINT),
            ScalerUnavailableError,
            "cannot connect to SQS",
            id="refused",
        ),
        pytest.param(
            ConnectTimeoutError(endpoint_url=ENDPOINT),
            ScalerUnavailableError,
            "no connection to SQS within 2s",
            id="connect-timeout",
        ),
        pytest.param(
            ReadTimeoutError(endpoint_url=ENDPOINT),
            ScalerUnavailableError,
            "no answer from SQS within 3s",
            id="read-timeout",
        ),
        pytest.param(
            ConnectionClosedError(endpoint_url=ENDPOINT),
            ScalerUnavailableError,
            "SQS closed the connection",
            id="closed",
        ),
        pytest.param(
            SSLError(endpoint_url=ENDPOINT, error=ValueError(TOKEN)),
            ScalerUnavailableError,
            "TLS with SQS failed",
            id="tls",
        ),
        pytest.param(
            NoCredentialsError(),
            ScalerQueryError,
            "no AWS credentials: the operator's default credential chain has none",
            id="no-credentials",
        ),
        pytest.param(
            PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"),
            ScalerQueryError,
            "incomplete AWS credentials in the operator's environment",
            id="partial-credentials",
        ),
        pytest.param(
            CredentialRetrievalError(provider="container-role", error_msg=TOKEN),
            ScalerUnavailableError,
            "the operator's AWS credentials could not be fetched",
            id="credential-fetch",
        ),
        pytest.param(
            InvalidConfigError(error_msg="role_arn missing"),
            ScalerQueryError,
            "the operator's AWS configuration is unusable (InvalidConfigError)",
            id="operator-config",
        ),
        pytest.param(
            ParamValidationError(report="Invalid length for parameter QueueUrl"),
            ScalerQueryError,
            "ParamValidationError from botocore",
            id="other-botocore-error",
        ),
        pytest.param(
            TimeoutError(), ScalerUnavailableError, "no answer within 8s", id="poll-timeout"
        ),
        pytest.param(
            ConnectionResetError(104, "reset"),
            ScalerUnavailableError,
            "cannot reach SQS (ConnectionResetError)",
            id="os-error",
        ),
        pytest.param(
            aws_sqs_queue._RoleError(f'assuming role "{ROLE}" failed: x', transient=False),
            ScalerQueryError,
            f'assuming role "{ROLE}" failed: x',
            id="role",
        ),
        pytest.param(
            aws_sqs_queue._RoleError("assuming role failed: y", transient=True),
            ScalerUnavailableError,
            "assuming role failed: y",
            id="role-transient",
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
    """Connection trouble and throttling are transient; refusals and missing queues are not;
    the message is ours, names the trigger, queue and region, and carries no text of AWS's."""
    s = scaler(BASE, {**KEYS, "awsSessionToken": TOKEN})
    with pytest.raises(kind) as info, s._translate_errors():
        raise raised
    assert type(info.value) is kind
    assert str(info.value) == f'{LABEL}: queue "orders" (eu-west-1): {text}'
    assert SECRET not in str(info.value)
    assert TOKEN not in str(info.value)
    assert "AWS says" not in str(info.value)
    if not isinstance(raised, (ScalerQueryError, TimeoutError)):
        assert info.value.__cause__ is raised  # kept for debugging; the test below checks it


def test_translated_tracebacks_carry_no_secret() -> None:
    """Even the chained botocore exception of a failed request shows no key or token."""
    s = scaler(BASE, {**KEYS, "awsSessionToken": TOKEN})
    with pytest.raises(ScalerUnavailableError) as info, s._translate_errors():
        raise EndpointConnectionError(endpoint_url="https://sqs.eu-west-1.amazonaws.com/")
    text = "".join(traceback.format_exception(info.value))
    assert SECRET not in text
    assert TOKEN not in text
    assert KEY_ID not in text
