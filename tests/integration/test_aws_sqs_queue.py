"""aws-sqs-queue against moto's server: the bench's (SQS and STS on one endpoint), plus one this
module starts itself with IAM enforcement on, to get real refusals.

Exact counts of visible, in-flight and delayed messages under each switch combination,
activation, a missing queue, an unreachable and a stalled endpoint (with the event loop kept
free while boto3 waits), one client shared by scalers of one endpoint and credentials, the
operator's default credential chain, STS AssumeRole (with renewal) and AssumeRoleWithWebIdentity,
and no secret in any text.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import socket
import sys
import time
import traceback
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.credentials import Credentials

from autoscale.errors import ScalerQueryError, ScalerUnavailableError
from autoscale.scalers.aws_sqs_queue import (
    POLL_TIMEOUT,
    ROLE_SESSION_NAME,
    AwsSqsQueueScaler,
    ClientSettings,
    CredentialSource,
    SqsHandle,
    role_credentials,
)
from autoscale.scalers.base import MetricSample
from autoscale.scalers.connections import SharedClients
from tests.testbed.procs import LOOPBACK, ManagedProcess, free_port, http_ok, wait_until
from tests.testbed.services import SQS

pytestmark = pytest.mark.testbed

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
KEYS = {"awsAccessKeyID": "AKIATESTINGKEY000001", "awsSecretAccessKey": "testing-secret"}
SECRET = "s3cret/Key+for-the-TEST-never-shown"
TOKEN = "FwoGZXIvYXdzE-session-token-for-the-TEST-never-shown"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/queue-reader"


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """The operator's AWS environment, empty: no keys, profiles, files or instance metadata,
    whatever the machine running the tests has. Tests add what they need."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


@pytest.fixture
async def connections() -> AsyncIterator[SharedClients]:
    pool = SharedClients()
    yield pool
    await pool.aclose()


def client(
    service: str,
    endpoint: str,
    *,
    key: str | None = "testing",
    secret: str | None = "testing",
    token: str | None = None,
) -> Any:
    """A plain boto3 client of the test itself (not the scaler's)."""
    create: Any = boto3.client
    return create(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=token,
    )


@pytest.fixture
def admin(sqs: SQS) -> Any:
    return client("sqs", sqs.url)


@pytest.fixture
def queue(admin: Any, unique_name: str) -> Iterator[str]:
    """This test's queue URL; the queue is deleted afterwards."""
    url: str = admin.create_queue(QueueName=unique_name)["QueueUrl"]
    yield url
    admin.delete_queue(QueueUrl=url)


def make(
    endpoint: str,
    connections: SharedClients,
    metadata: dict[str, str],
    auth: dict[str, str] | None = None,
    *,
    index: int = 0,
    timeout: float = POLL_TIMEOUT,
    settings: ClientSettings | None = None,
) -> AwsSqsQueueScaler:
    built = AwsSqsQueueScaler.from_trigger(
        trigger_index=index,
        trigger_name=None,
        metadata={"awsEndpoint": endpoint, "awsRegion": REGION, **metadata},
        auth_params=KEYS if auth is None else auth,
        resolved_env={},
        connections=connections,
        warnings=None,
    )
    if timeout == POLL_TIMEOUT and settings is None:
        return built
    return AwsSqsQueueScaler(
        built.config,
        trigger_index=index,
        connections=connections,
        timeout=timeout,
        settings=settings,
    )


async def sample_once(scaler: AwsSqsQueueScaler) -> MetricSample:
    try:
        return await scaler.sample()
    finally:
        await scaler.aclose()


def receive(admin: Any, url: str, count: int) -> None:
    """Take `count` messages in flight for ten minutes (moto may hand out fewer per call)."""
    taken = 0
    while taken < count:
        reply = admin.receive_message(
            QueueUrl=url, MaxNumberOfMessages=count - taken, VisibilityTimeout=600
        )
        taken += len(reply.get("Messages", []))


def fill(admin: Any, url: str, *, visible: int, in_flight: int = 0, delayed: int = 0) -> None:
    for i in range(visible + in_flight):
        admin.send_message(QueueUrl=url, MessageBody=f"job {i}")
    receive(admin, url, in_flight)
    for i in range(delayed):
        admin.send_message(QueueUrl=url, MessageBody=f"later {i}", DelaySeconds=900)


def handle_of(connections: SharedClients, scaler: AwsSqsQueueScaler) -> SqsHandle:
    handle: SqsHandle = connections._entries[scaler.key].client
    return handle


def signing_credentials(handle: SqsHandle) -> Credentials:
    """What the shared SQS client signs with (botocore keeps it on the request signer)."""
    sqs: Any = handle.sqs
    credentials: Credentials = sqs._request_signer._credentials
    return credentials


def sts_calls(handle: SqsHandle) -> list[tuple[str, str | None]]:
    """The STS operations (and external ID) the handle's credential refreshes call from now
    on, in order: a botocore event hook on the real clients, the calls still reach moto."""
    calls: list[tuple[str, str | None]] = []

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        calls.append((model.name, params.get("ExternalId")))

    for sts in handle.helpers:
        sts.meta.events.register("before-parameter-build.sts.*", record)
    return calls


def caller_arn(sqs: SQS, credentials: Credentials) -> str:
    """Who moto's STS says these credentials are."""
    frozen = credentials.get_frozen_credentials()
    sts = client(
        "sts", sqs.url, key=frozen.access_key, secret=frozen.secret_key, token=frozen.token
    )
    arn: str = sts.get_caller_identity()["Arn"]
    return arn


def all_text(exc: BaseException) -> str:
    """Everything an exception can put in a log: messages and reprs of the whole chain."""
    return "".join(traceback.format_exception(exc)) + repr(exc) + repr(exc.__cause__)


# ---------------------------------------------------------------------------------------------
# Counts


@pytest.mark.parametrize(
    ("switches", "expected"),
    [
        pytest.param({}, 6.0, id="default-visible-and-in-flight"),
        pytest.param({"scaleOnInFlight": "false"}, 4.0, id="visible-only"),
        pytest.param({"scaleOnDelayed": "true"}, 7.0, id="all-three"),
        pytest.param(
            {"scaleOnInFlight": "false", "scaleOnDelayed": "true"}, 5.0, id="visible-and-delayed"
        ),
    ],
)
async def test_counts_under_each_switch_combination(
    sqs: SQS,
    connections: SharedClients,
    admin: Any,
    queue: str,
    unique_name: str,
    switches: dict[str, str],
    expected: float,
) -> None:
    """4 visible, 2 received (in flight), 1 sent with DelaySeconds: the switches pick the sum."""
    fill(admin, queue, visible=4, in_flight=2, delayed=1)
    scaler = make(sqs.url, connections, {"queueURL": queue, "queueLength": "3", **switches})
    sample = await sample_once(scaler)
    assert sample == MetricSample(name=f"s0-aws-sqs-{unique_name}", value=expected, target=3.0)


async def test_empty_queue_is_zero(sqs: SQS, connections: SharedClients, queue: str) -> None:
    scaler = make(sqs.url, connections, {"queueURL": queue, "scaleOnDelayed": "true"})
    assert (await sample_once(scaler)).value == 0.0


async def test_activation_threshold(
    sqs: SQS, connections: SharedClients, admin: Any, queue: str
) -> None:
    """Active only when the count exceeds activationQueueLength."""
    fill(admin, queue, visible=2, in_flight=1)
    scaler = make(sqs.url, connections, {"queueURL": queue, "activationQueueLength": "3"})
    try:
        first = await scaler.sample()
        assert (first.value, first.activation_target) == (3.0, 3.0)
        assert not first.value > first.activation_target
        fill(admin, queue, visible=1)
        second = await scaler.sample()
        assert second.value == 4.0
        assert second.value > second.activation_target
    finally:
        await scaler.aclose()


async def test_queue_name_and_queue_url_from_env(
    sqs: SQS, connections: SharedClients, admin: Any, queue: str, unique_name: str
) -> None:
    """A bare queue name (with awsRegion) and queueURLFromEnv read the same queue."""
    fill(admin, queue, visible=3)
    by_name = make(sqs.url, connections, {"queueURL": unique_name})
    assert (await sample_once(by_name)).value == 3.0
    from_env = AwsSqsQueueScaler.from_trigger(
        trigger_index=0,
        trigger_name=None,
        metadata={"queueURLFromEnv": "QUEUE", "awsRegion": REGION, "awsEndpoint": sqs.url},
        auth_params=KEYS,
        resolved_env={"QUEUE": queue},
        connections=connections,
        warnings=None,
    )
    assert (await sample_once(from_env)).value == 3.0


# ---------------------------------------------------------------------------------------------
# Missing, unreachable, stalled


async def test_missing_queue_is_a_query_error(
    sqs: SQS, connections: SharedClients, unique_name: str
) -> None:
    """SQS answers NonExistentQueue: not transient, and said in our words."""
    url = f"{sqs.url}/{ACCOUNT}/{unique_name}"
    with pytest.raises(ScalerQueryError) as info:
        await sample_once(make(sqs.url, connections, {"queueURL": url}))
    assert str(info.value) == (
        f'trigger[0] (aws-sqs-queue): queue "{unique_name}" ({REGION}, {sqs.url}): '
        "the queue does not exist (AWS.SimpleQueueService.NonExistentQueue, HTTP 400)"
    )
    assert not info.value.transient


async def test_unreachable_endpoint_is_unavailable_quickly(connections: SharedClients) -> None:
    """Nobody listens on the port: ScalerUnavailableError (transient), well within the poll
    timeout, with the default client settings."""
    endpoint = f"http://{LOOPBACK}:{free_port()}"
    scaler = make(endpoint, connections, {"queueURL": f"{endpoint}/{ACCOUNT}/q"})
    started = time.monotonic()
    with pytest.raises(ScalerUnavailableError) as info:
        await sample_once(scaler)
    assert time.monotonic() - started < POLL_TIMEOUT
    assert info.value.transient
    assert str(info.value) == (
        f'trigger[0] (aws-sqs-queue): queue "q" ({REGION}, {endpoint}): cannot connect to SQS'
    )


class Ticker:
    """A coroutine that wakes every 10 ms and records how late each wake-up was."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while not self._stop.is_set():
            await asyncio.sleep(0.01)
            now = loop.time()
            self.gaps.append(now - last)
            last = now


async def test_stalled_endpoint_times_out_and_never_blocks_the_loop(
    connections: SharedClients,
) -> None:
    """A server that accepts connections and never answers: botocore's read timeout ends each
    of the two attempts; meanwhile the event loop keeps running (boto3 waits in the pool)."""
    with socket.create_server((LOOPBACK, 0)) as silent:
        endpoint = f"http://{LOOPBACK}:{silent.getsockname()[1]}"
        scaler = make(
            endpoint,
            connections,
            {"queueURL": f"{endpoint}/{ACCOUNT}/q"},
            settings=ClientSettings(connect_timeout=0.5, read_timeout=0.5, max_attempts=2),
            timeout=5.0,
        )
        async with Ticker() as ticker:
            started = time.monotonic()
            with pytest.raises(ScalerUnavailableError) as info:
                await sample_once(scaler)
            elapsed = time.monotonic() - started
    assert str(info.value).endswith(": no answer from SQS within 0.5s")
    assert 0.9 < elapsed < 4.0  # two reads of 0.5 s, one backoff of at most 1 s
    assert max(ticker.gaps) < 0.25, f"the event loop stalled for {max(ticker.gaps):.3f}s"
    assert len(ticker.gaps) > elapsed / 0.01 / 3


async def test_poll_timeout_bounds_the_whole_poll(connections: SharedClients) -> None:
    """With botocore allowed longer than the poll, the poll's own timeout answers first, and
    the loop is free all along."""
    with socket.create_server((LOOPBACK, 0)) as silent:
        endpoint = f"http://{LOOPBACK}:{silent.getsockname()[1]}"
        scaler = make(
            endpoint,
            connections,
            {"queueURL": f"{endpoint}/{ACCOUNT}/q"},
            settings=ClientSettings(connect_timeout=1.0, read_timeout=3.0, max_attempts=1),
            timeout=0.8,
        )
        async with Ticker() as ticker:
            started = time.monotonic()
            with pytest.raises(ScalerUnavailableError) as info:
                await sample_once(scaler)
            elapsed = time.monotonic() - started
    assert str(info.value).endswith(": no answer within 0.8s")
    assert 0.7 < elapsed < 1.5
    # A blocked loop would show one gap as long as the poll (0.8 s); a loaded machine alone
    # showed gaps up to 0.27 s, so the line sits between the two.
    assert max(ticker.gaps) < 0.6


# ---------------------------------------------------------------------------------------------
# One client per endpoint and credentials


async def test_scalers_share_one_client(
    sqs: SQS, connections: SharedClients, admin: Any, queue: str, unique_name: str
) -> None:
    """Two triggers on two queues with the same endpoint and keys: one boto3 client, created
    once even when both poll at once; other keys get their own; the last release closes it."""
    other: str = admin.create_queue(QueueName=unique_name + "-b")["QueueUrl"]
    try:
        fill(admin, queue, visible=2)
        fill(admin, other, visible=5)
        first = make(sqs.url, connections, {"queueURL": queue}, index=0)
        second = make(sqs.url, connections, {"queueURL": other}, index=1)
        values = await asyncio.gather(first.sample(), second.sample())
        assert [s.value for s in values] == [2.0, 5.0]
        assert first.key == second.key
        assert len(connections) == 1
        assert connections.leases(first.key) == 2

        other_keys = {**KEYS, "awsSecretAccessKey": "another-secret"}
        third = make(sqs.url, connections, {"queueURL": queue}, other_keys)
        assert (await third.sample()).value == 2.0
        assert len(connections) == 2
        await third.aclose()
        assert len(connections) == 1

        handle = handle_of(connections, first)
        await first.aclose()
        assert handle_of(connections, second) is handle  # still open for the other trigger
        assert (await second.sample()).value == 5.0
        await second.aclose()
        assert len(connections) == 0
    finally:
        admin.delete_queue(QueueUrl=other)


# ---------------------------------------------------------------------------------------------
# The operator's identity, and roles


async def test_no_credentials_uses_the_operators_identity(
    sqs: SQS, connections: SharedClients, admin: Any, queue: str, aws_env: pytest.MonkeyPatch
) -> None:
    """No auth params: AWS's default credential chain of the operator (here, its environment).
    With nothing there, a non-transient error, and no client kept: once credentials appear,
    the next poll works."""
    fill(admin, queue, visible=1)
    scaler = make(sqs.url, connections, {"queueURL": queue}, auth={})
    assert scaler.key.credentials is CredentialSource.OPERATOR
    with pytest.raises(ScalerQueryError) as info:
        await scaler.sample()
    assert str(info.value).endswith(
        ": no AWS credentials: the operator's default credential chain has none"
    )
    assert len(connections) == 0
    aws_env.setenv("AWS_ACCESS_KEY_ID", "AKIAOPERATOR00000001")
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    assert (await sample_once(scaler)).value == 1.0


async def test_assume_role_through_sts(
    sqs: SQS,
    connections: SharedClients,
    admin: Any,
    queue: str,
    aws_env: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """awsRoleArn (and awsExternalId): STS AssumeRole with the operator's identity; SQS is read
    with the role's temporary credentials, which no log line shows."""
    caplog.set_level("DEBUG")
    aws_env.setenv("AWS_ENDPOINT_URL_STS", sqs.url)  # botocore's standard per-service override
    aws_env.setenv("AWS_ACCESS_KEY_ID", "AKIAOPERATOR00000001")
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    fill(admin, queue, visible=2, in_flight=1)
    auth = {"awsRoleArn": ROLE, "awsExternalId": "ext-id-1"}
    scaler = make(sqs.url, connections, {"queueURL": queue}, auth)
    try:
        calls = sts_calls(await scaler._client())
        assert (await scaler.sample()).value == 3.0
        assert (await scaler.sample()).value == 3.0  # the credentials are reused, not refetched
        assert calls == [("AssumeRole", "ext-id-1")]
        credentials = signing_credentials(handle_of(connections, scaler))
        frozen = credentials.get_frozen_credentials()
        assert frozen.access_key is not None
        assert frozen.access_key.startswith("ASIA")  # temporary credentials from STS
        assert caller_arn(sqs, credentials) == (
            f"arn:aws:sts::{ACCOUNT}:assumed-role/queue-reader/{ROLE_SESSION_NAME}"
        )
        for secret in (SECRET, frozen.secret_key, frozen.token):
            assert secret
            assert secret not in caplog.text
    finally:
        await scaler.aclose()


def test_role_credentials_are_renewed_before_they_expire(sqs: SQS) -> None:
    """The role's credentials are fetched once, kept while valid, and fetched again from STS
    before they expire, so a long-running operator keeps reading."""
    clock = [datetime.datetime.now(datetime.UTC)]
    sts = client("sts", sqs.url)
    credentials = role_credentials(sts=sts, role_arn=ROLE, time_fetcher=lambda: clock[0])
    first = credentials.get_frozen_credentials()
    clock[0] += datetime.timedelta(minutes=10)
    assert credentials.get_frozen_credentials() == first
    clock[0] += datetime.timedelta(minutes=45)  # within 15 minutes of the 1 h expiry
    second = credentials.get_frozen_credentials()
    assert second.access_key != first.access_key
    assert caller_arn(sqs, credentials).endswith(f"assumed-role/queue-reader/{ROLE_SESSION_NAME}")
    sts.close()


async def test_web_identity_is_tried_first(
    sqs: SQS,
    connections: SharedClients,
    admin: Any,
    queue: str,
    aws_env: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """In an IRSA pod (a web identity token file and the operator's own role in AWS_ROLE_ARN),
    AssumeRoleWithWebIdentity straight into awsRoleArn comes first, as in KEDA; no AssumeRole
    call is made while it works."""
    token_file = tmp_path / "token"
    token_file.write_text("eyJhbGciOiJSUzI1NiJ9.a-service-account-token.sig")
    aws_env.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
    aws_env.setenv("AWS_ROLE_ARN", f"arn:aws:iam::{ACCOUNT}:role/autoscale-operator")
    aws_env.setenv("AWS_ENDPOINT_URL_STS", sqs.url)
    fill(admin, queue, visible=4)
    scaler = make(sqs.url, connections, {"queueURL": queue}, {"awsRoleArn": ROLE})
    try:
        handle = await scaler._client()  # built, but no STS call yet: credentials are deferred
        calls = sts_calls(handle)
        assert (await scaler.sample()).value == 4.0
        assert calls == [("AssumeRoleWithWebIdentity", None)]
        credentials = signing_credentials(handle)
        assert caller_arn(sqs, credentials) == (
            f"arn:aws:sts::{ACCOUNT}:assumed-role/queue-reader/{ROLE_SESSION_NAME}"
        )
    finally:
        await scaler.aclose()


async def test_unusable_web_identity_falls_back_to_assume_role(
    sqs: SQS, connections: SharedClients, queue: str, aws_env: pytest.MonkeyPatch
) -> None:
    """A token file that cannot be read: AssumeRole with the operator's keys, as KEDA does."""
    aws_env.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "/nonexistent/token")
    aws_env.setenv("AWS_ENDPOINT_URL_STS", sqs.url)
    aws_env.setenv("AWS_ACCESS_KEY_ID", "AKIAOPERATOR00000001")
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    scaler = make(sqs.url, connections, {"queueURL": queue}, {"awsRoleArn": ROLE})
    try:
        calls = sts_calls(await scaler._client())
        assert (await scaler.sample()).value == 0.0
        assert calls == [("AssumeRole", None)]
    finally:
        await scaler.aclose()


@pytest.mark.parametrize(
    "sts_up",
    [pytest.param(False, id="sts-unreachable"), pytest.param(True, id="no-source-credentials")],
)
async def test_role_failures_are_reported(
    sqs: SQS,
    connections: SharedClients,
    queue: str,
    unique_name: str,
    aws_env: pytest.MonkeyPatch,
    sts_up: bool,
) -> None:
    """STS unreachable: transient. No identity to assume the role with: not transient."""
    if sts_up:
        aws_env.setenv("AWS_ENDPOINT_URL_STS", sqs.url)
    else:
        aws_env.setenv("AWS_ENDPOINT_URL_STS", f"http://{LOOPBACK}:{free_port()}")
        aws_env.setenv("AWS_ACCESS_KEY_ID", "AKIAOPERATOR00000001")
        aws_env.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    scaler = make(sqs.url, connections, {"queueURL": queue}, {"awsRoleArn": ROLE})
    with pytest.raises((ScalerQueryError, ScalerUnavailableError)) as info:
        await sample_once(scaler)
    where = f'trigger[0] (aws-sqs-queue): queue "{unique_name}" ({REGION}, {sqs.url})'
    if sts_up:
        assert type(info.value) is ScalerQueryError
        assert str(info.value) == (
            f'{where}: assuming role "{ROLE}" failed: '
            "no AWS credentials: the operator's default credential chain has none"
        )
    else:
        assert type(info.value) is ScalerUnavailableError
        assert str(info.value) == f'{where}: assuming role "{ROLE}" failed: cannot connect to STS'


# ---------------------------------------------------------------------------------------------
# Refusals, from a moto server that enforces IAM


@pytest.fixture(scope="module")
def iam_sqs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """moto with IAM enforcement after its first three requests, which create an admin user
    with every right; this fixture then makes a queue of 3 messages and a user without rights."""
    workdir = tmp_path_factory.mktemp("iam-moto")
    port = free_port()
    endpoint = f"http://{LOOPBACK}:{port}"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    process = ManagedProcess(
        "moto_server",
        [str(Path(sys.executable).parent / "moto_server"), "-H", LOOPBACK, "-p", str(port)],
        log_path=workdir / "moto.log",
        env={**environment, "INITIAL_NO_AUTH_ACTION_COUNT": "3"},
    )
    try:
        wait_until(process, lambda: http_ok(f"{endpoint}/moto-api/"), timeout=60, what="HTTP")
        iam = client("iam", endpoint)
        iam.create_user(UserName="admin")
        everything = {"Effect": "Allow", "Action": "*", "Resource": "*"}
        iam.put_user_policy(
            UserName="admin",
            PolicyName="all",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [everything]}),
        )
        key = iam.create_access_key(UserName="admin")["AccessKey"]
        admin_keys = {"key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
        iam = client("iam", endpoint, **admin_keys)
        sqs = client("sqs", endpoint, **admin_keys)
        url = sqs.create_queue(QueueName="guarded")["QueueUrl"]
        for i in range(3):
            sqs.send_message(QueueUrl=url, MessageBody=str(i))
        iam.create_user(UserName="reader")
        reader = iam.create_access_key(UserName="reader")["AccessKey"]
        yield {
            "endpoint": endpoint,
            "url": url,
            "reader_key": reader["AccessKeyId"],
            "reader_secret": reader["SecretAccessKey"],
            **{f"admin_{k}": v for k, v in admin_keys.items()},
        }
    finally:
        process.stop()


@pytest.mark.parametrize(
    ("which", "code"),
    [
        pytest.param("unknown-key", "InvalidClientTokenId", id="unknown-key"),
        pytest.param("wrong-secret", "SignatureDoesNotMatch", id="wrong-secret"),
        pytest.param("no-rights", "AccessDenied", id="no-rights"),
    ],
)
async def test_refusals_are_query_errors(
    iam_sqs: dict[str, str], connections: SharedClients, which: str, code: str
) -> None:
    """Bad keys or missing rights: ScalerQueryError naming AWS's code, never a transient one,
    and no secret in any text."""
    key, secret = iam_sqs["reader_key"], iam_sqs["reader_secret"]
    if which == "unknown-key":
        key = "AKIANOBODYKNOWS00001"
    elif which == "wrong-secret":
        secret = SECRET
    auth = {"awsAccessKeyID": key, "awsSecretAccessKey": secret, "awsSessionToken": TOKEN}
    if which != "unknown-key":
        del auth["awsSessionToken"]  # moto checks the token against the key it was issued with
    scaler = make(iam_sqs["endpoint"], connections, {"queueURL": iam_sqs["url"]}, auth)
    with pytest.raises(ScalerQueryError) as info:
        await sample_once(scaler)
    assert str(info.value).endswith(f": not authorized ({code}, HTTP 403)")
    assert not info.value.transient
    text = all_text(info.value) + repr(scaler) + repr(scaler.config) + repr(scaler.key)
    for hidden in (secret, TOKEN, iam_sqs["reader_secret"]):
        assert hidden not in text


async def test_granted_rights_read_the_queue(
    iam_sqs: dict[str, str], connections: SharedClients
) -> None:
    """The same reader, once allowed sqs:GetQueueAttributes, reads the exact count."""
    iam = client(
        "iam", iam_sqs["endpoint"], key=iam_sqs["admin_key"], secret=iam_sqs["admin_secret"]
    )
    allow = {"Effect": "Allow", "Action": "sqs:GetQueueAttributes", "Resource": "*"}
    iam.put_user_policy(
        UserName="reader",
        PolicyName="read-queue-attributes",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [allow]}),
    )
    try:
        auth = {
            "awsAccessKeyID": iam_sqs["reader_key"],
            "awsSecretAccessKey": iam_sqs["reader_secret"],
        }
        scaler = make(iam_sqs["endpoint"], connections, {"queueURL": iam_sqs["url"]}, auth)
        assert (await sample_once(scaler)).value == 3.0
    finally:
        iam.delete_user_policy(UserName="reader", PolicyName="read-queue-attributes")


# ---------------------------------------------------------------------------------------------
# Secrets


async def test_no_secret_in_any_text(
    sqs: SQS,
    connections: SharedClients,
    queue: str,
    unique_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A secret key and session token: through a successful poll, a missing queue and an
    unreachable endpoint, neither appears in any exception, repr or log line (DEBUG on)."""
    caplog.set_level("DEBUG")
    auth = {**KEYS, "awsSecretAccessKey": SECRET, "awsSessionToken": TOKEN}
    good = make(sqs.url, connections, {"queueURL": queue}, auth)
    missing = make(sqs.url, connections, {"queueURL": f"{sqs.url}/{ACCOUNT}/{unique_name}-x"}, auth)
    endpoint = f"http://{LOOPBACK}:{free_port()}"
    unreachable = make(endpoint, connections, {"queueURL": f"{endpoint}/{ACCOUNT}/q"}, auth)
    text = ""
    try:
        assert (await good.sample()).value == 0.0
        text += repr(handle_of(connections, good).sqs) + repr(connections)
        for scaler in (missing, unreachable):
            with pytest.raises((ScalerQueryError, ScalerUnavailableError)) as info:
                await scaler.sample()
            text += all_text(info.value) + repr(scaler) + repr(scaler.config) + repr(scaler.key)
    finally:
        for scaler in (good, missing, unreachable):
            await scaler.aclose()
    text += caplog.text
    assert SECRET not in text
    assert TOKEN not in text
