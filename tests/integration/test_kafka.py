"""kafka against real Apache Kafka 4.3 brokers: the bench's, and one this module starts with
TLS and SASL_SSL/OAUTHBEARER listeners.

Each test creates its own topics (3 partitions unless said otherwise), produces a known number
of records to each partition and commits known offsets for its own consumer group, then checks
the exact values a poll returns: plain lag, partitions without a committed offset under both
reset policies (and after records were deleted), persistent lag across polls, the replica
caps, partitionLimitation, every topic of a group, activation. Then: a missing or deleted topic
(never created by a poll), scalers of one cluster sharing one client, an unreachable or silent
cluster (ScalerUnavailableError within the poll timeout), SASL PLAIN and SCRAM on the bench's
SASL listener, TLS with client certificates, and OAUTHBEARER with a real token endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import socket
import time
import traceback
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.records_to_delete import RecordsToDelete
from aiokafka.errors import GroupCoordinatorNotAvailableError
from cryptography.hazmat.primitives import serialization

from autoscale.errors import ScalerError, ScalerQueryError, ScalerUnavailableError
from autoscale.scalers.base import MetricSample
from autoscale.scalers.connections import SharedClients
from autoscale.scalers.kafka import POLL_TIMEOUT, KafkaScaler
from tests.testbed.install import paths
from tests.testbed.pki import TinyCA
from tests.testbed.procs import LOOPBACK, ManagedProcess, free_port, port_open, wait_until
from tests.testbed.services import KAFKA_JVM_FLAGS, KAFKA_LOG4J2, Kafka

pytestmark = pytest.mark.testbed


@dataclass
class Cluster:
    """Test data on the bench's broker: topics, records and committed offsets."""

    bootstrap: str
    admin: AIOKafkaAdminClient
    producer: AIOKafkaProducer
    topics: list[str] = field(default_factory=list)

    async def topic(self, name: str, counts: Sequence[int]) -> str:
        """A topic with len(counts) partitions holding counts[p] records in partition p."""
        await self.admin.create_topics([NewTopic(name, len(counts), 1)])
        self.topics.append(name)
        sends = [
            await self.producer.send(name, f"{p}-{i}".encode(), partition=p)
            for p, count in enumerate(counts)
            for i in range(count)
        ]
        await self.producer.flush()
        await asyncio.gather(*sends)
        return name

    async def commit(self, group: str, offsets: Mapping[tuple[str, int], int]) -> None:
        """Commit exactly these offsets for `group`, as a consumer of it would."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign([TopicPartition(t, p) for t, p in offsets])
            await consumer.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()})
        finally:
            await consumer.stop()


async def coordinator_ready(admin: AIOKafkaAdminClient) -> None:
    """Wait until the broker has a group coordinator: a fresh broker answers
    COORDINATOR_NOT_AVAILABLE until it has created its offsets topic."""
    deadline = time.monotonic() + 30
    while True:
        try:
            await admin.find_coordinator("coordinator-probe")
            return
        except GroupCoordinatorNotAvailableError:
            assert time.monotonic() < deadline, "no group coordinator after 30s"
            await asyncio.sleep(0.2)


@pytest.fixture
async def cluster(kafka: Kafka) -> AsyncIterator[Cluster]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=5)
    await admin.start()
    await producer.start()
    await coordinator_ready(admin)
    state = Cluster(kafka.bootstrap, admin, producer)
    try:
        yield state
    finally:
        await producer.stop()
        if state.topics:
            with contextlib.suppress(Exception):
                await admin.delete_topics(state.topics)
        await admin.close()


@pytest.fixture
async def connections() -> AsyncIterator[SharedClients]:
    pool = SharedClients()
    yield pool
    await pool.aclose()


def make(
    bootstrap: str,
    connections: SharedClients,
    metadata: Mapping[str, str],
    auth: Mapping[str, str] | None = None,
    *,
    index: int = 0,
    timeout: float = POLL_TIMEOUT,
) -> KafkaScaler:
    built = KafkaScaler.from_trigger(
        trigger_index=index,
        trigger_name=None,
        metadata={"bootstrapServers": bootstrap, **metadata},
        auth_params=auth or {},
        resolved_env={},
        connections=connections,
    )
    if timeout == POLL_TIMEOUT:
        return built
    return KafkaScaler(built.config, trigger_index=index, connections=connections, timeout=timeout)


async def sample_once(scaler: KafkaScaler) -> MetricSample:
    try:
        return await scaler.sample()
    finally:
        await scaler.aclose()


def active(sample: MetricSample) -> bool:
    return sample.value > sample.activation_target


# ---------------------------------------------------------------------------------------------
# Lag, exactly


async def test_lag_is_end_minus_committed(
    cluster: Cluster, connections: SharedClients, unique_name: str
) -> None:
    """Records (10, 5, 3), committed (4, 5, 0): lag 6 + 0 + 3 = 9, capped at 3 replicas."""
    topic = await cluster.topic(unique_name, [10, 5, 3])
    group = f"{unique_name}-g"
    await cluster.commit(group, {(topic, 0): 4, (topic, 1): 5, (topic, 2): 0})
    metadata = {"consumerGroup": group, "topic": topic, "lagThreshold": "4"}
    sample = await sample_once(make(cluster.bootstrap, connections, metadata, index=2))
    assert sample == MetricSample(
        name=f"s2-kafka-{topic}", value=9.0, target=4.0, activation_target=0.0, replica_cap=3
    )


@pytest.mark.parametrize(
    ("metadata", "value"),
    [
        pytest.param({}, 2.0, id="latest-1-per-uncommitted-partition"),
        pytest.param({"scaleToZeroOnInvalidOffset": "true"}, 0.0, id="latest-scale-to-zero"),
        pytest.param({"offsetResetPolicy": "earliest"}, 13.0, id="earliest-whole-log"),
        pytest.param(
            {"offsetResetPolicy": "earliest", "scaleToZeroOnInvalidOffset": "true"},
            0.0,
            id="earliest-scale-to-zero",
        ),
    ],
)
async def test_partitions_without_a_committed_offset(
    cluster: Cluster,
    connections: SharedClients,
    unique_name: str,
    metadata: dict[str, str],
    value: float,
) -> None:
    """Records (10, 5, 3), only partition 1 committed (at its end): partitions 0 and 2 follow
    offsetResetPolicy and scaleToZeroOnInvalidOffset, as in KEDA."""
    topic = await cluster.topic(unique_name, [10, 5, 3])
    group = f"{unique_name}-g"
    await cluster.commit(group, {(topic, 1): 5})
    scaler = make(
        cluster.bootstrap, connections, {"consumerGroup": group, "topic": topic, **metadata}
    )
    sample = await sample_once(scaler)
    assert (sample.value, active(sample)) == (value, value > 0)


async def test_earliest_counts_from_the_log_start_not_from_zero(
    cluster: Cluster, connections: SharedClients, unique_name: str
) -> None:
    """Records before offset 4 of partition 0 deleted (as retention would): a consumer starting
    at the earliest offset has 6 + 3 records to read there, not 10 + 3."""
    topic = await cluster.topic(unique_name, [10, 5, 3])
    group = f"{unique_name}-g"
    await cluster.commit(group, {(topic, 1): 5})
    await cluster.admin.delete_records({TopicPartition(topic, 0): RecordsToDelete(4)})
    metadata = {"consumerGroup": group, "topic": topic, "offsetResetPolicy": "earliest"}
    assert (await sample_once(make(cluster.bootstrap, connections, metadata))).value == 9.0


async def test_group_without_commits(
    cluster: Cluster, connections: SharedClients, unique_name: str
) -> None:
    """A group that never committed: with `topic`, each partition counts 1 (latest), so one
    consumer runs to commit; without `topic` it has no topics and no lag (KEDA's edge case)."""
    topic = await cluster.topic(unique_name, [10, 5, 3])
    group = f"{unique_name}-never"
    with_topic = await sample_once(
        make(cluster.bootstrap, connections, {"consumerGroup": group, "topic": topic})
    )
    assert (with_topic.value, with_topic.replica_cap, active(with_topic)) == (3.0, 3, True)
    without = await sample_once(make(cluster.bootstrap, connections, {"consumerGroup": group}))
    assert without == MetricSample(
        name=f"s0-kafka-{group}-topics", value=0.0, target=10.0, replica_cap=0
    )
    assert not active(without)


async def test_persistent_lag_across_polls(
    cluster: Cluster, connections: SharedClients, unique_name: str
) -> None:
    """excludePersistentLag on one scaler across three polls: records (10, 10, 10), committed
    (2, 5, 10). Poll 1 counts everything (8 + 5). Poll 2, nothing moved: the value drops to 0
    but the trigger stays active. Then partition 0 commits up to 6 and partition 1 gets 4 more
    records without progress: poll 3 counts partition 0 (4) and still excludes partition 1."""
    topic = await cluster.topic(unique_name, [10, 10, 10])
    group = f"{unique_name}-g"
    await cluster.commit(group, {(topic, 0): 2, (topic, 1): 5, (topic, 2): 10})
    metadata = {"consumerGroup": group, "topic": topic, "excludePersistentLag": "true"}
    scaler = make(cluster.bootstrap, connections, metadata)
    try:
        first = await scaler.sample()
        assert (first.value, active(first)) == (13.0, True)
        second = await scaler.sample()
        assert (second.value, active(second)) == (0.0, True)
        await cluster.commit(group, {(topic, 0): 6})
        for _ in range(4):
            await cluster.producer.send(topic, b"more", partition=1)
        await cluster.producer.flush()
        third = await scaler.sample()
        assert (third.value, active(third)) == (4.0, True)
    finally:
        await scaler.aclose()


@pytest.mark.parametrize(
    ("metadata", "value", "cap"),
    [
        pytest.param({}, 140.0, 3, id="default-cap-partitions"),
        pytest.param({"allowIdleConsumers": "true"}, 140.0, None, id="idle-consumers-no-cap"),
        pytest.param({"limitToPartitionsWithLag": "true"}, 140.0, 2, id="cap-partitions-with-lag"),
        pytest.param(
            {"ensureEvenDistributionOfPartitions": "true"}, 30.0, 3, id="even-all-partitions"
        ),
        pytest.param(
            {"ensureEvenDistributionOfPartitions": "true", "lagThreshold": "200"},
            200.0,
            3,
            id="even-one-replica",
        ),
    ],
)
async def test_replica_caps(
    cluster: Cluster,
    connections: SharedClients,
    unique_name: str,
    metadata: dict[str, str],
    value: float,
    cap: int | None,
) -> None:
    """Lag (100, 40, 0) at lagThreshold 10: 14 replicas wanted. Capped at the 3 partitions,
    or at the 2 with lag; uncapped with allowIdleConsumers; with even distribution the value
    becomes 3 * 10 (1 and 3 divide 3 partitions; 1 replica covers a threshold of 200)."""
    topic = await cluster.topic(unique_name, [100, 40, 0])
    group = f"{unique_name}-g"
    await cluster.commit(group, {(topic, 0): 0, (topic, 1): 0, (topic, 2): 0})
    scaler = make(
        cluster.bootstrap, connections, {"consumerGroup": group, "topic": topic, **metadata}
    )
    sample = await sample_once(scaler)
    assert (sample.value, sample.replica_cap) == (value, cap)


@pytest.mark.parametrize(
    ("limitation", "value", "cap"),
    [
        pytest.param("0,2", 9.0, 2, id="two-of-three"),
        pytest.param("1-2", 3.0, 2, id="range"),
        pytest.param("2,7-9", 3.0, 1, id="ids-beyond-the-topic-ignored"),
    ],
)
async def test_partition_limitation(
    cluster: Cluster,
    connections: SharedClients,
    unique_name: str,
    limitation: str,
    value: float,
    cap: int,
) -> None:
    """Lag (6, 0, 3): only the listed partitions count, for the lag and for the cap."""
    topic = await cluster.topic(unique_name, [10, 5, 3])
    group = f"{unique_name}-g"
    await cluster.commit(group, {(topic, 0): 4, (topic, 1): 5, (topic, 2): 0})
    metadata = {"consumerGroup": group, "topic": topic, "partitionLimitation": limitation}
    sample = await sample_once(make(cluster.bootstrap, connections, metadata))
    assert (sample.value, sample.replica_cap) == (value, cap)


async def test_partition_limitation_matching_nothing_is_a_query_error(
    cluster: Cluster, connections: SharedClients, unique_name: str
) -> None:
    """Partitions 5-7 of a 3-partition topic: an error, not a silent 0 (KEDA)."""
    topic = await cluster.topic(unique_name, [1, 1, 1])
    metadata = {"consumerGroup": "g", "topic": topic, "partitionLimitation": "5-7"}
    with pytest.raises(ScalerQueryError) as info:
        await sample_once(make(cluster.bootstrap, connections, metadata))
    assert str(info.value).endswith(
        f'none of the partitions in "partitionLimitation" exist in topic "{topic}"'
    )


@pytest.mark.parametrize(
    ("metadata", "value"),
    [
        pytest.param({}, 12.0, id="latest"),
        pytest.param({"offsetResetPolicy": "earliest"}, 14.0, id="earliest"),
    ],
)
async def test_every_topic_of_the_group_without_topic(
    cluster: Cluster,
    connections: SharedClients,
    unique_name: str,
    metadata: dict[str, str],
    value: float,
) -> None:
    """No `topic`: every partition of every topic the group committed offsets for. Topic A
    (10, 5, 3) committed (4, 5, -), topic B (7) committed (2); a third topic the group never
    committed to does not count. Partition A/2 follows the reset policy."""
    a = await cluster.topic(f"{unique_name}-a", [10, 5, 3])
    b = await cluster.topic(f"{unique_name}-b", [7])
    await cluster.topic(f"{unique_name}-c", [50])
    group = f"{unique_name}-g"
    await cluster.commit(group, {(a, 0): 4, (a, 1): 5, (b, 0): 2})
    scaler = make(cluster.bootstrap, connections, {"consumerGroup": group, **metadata})
    sample = await sample_once(scaler)
    assert sample == MetricSample(
        name=f"s0-kafka-{group}-topics", value=value, target=10.0, replica_cap=4
    )


async def test_activation_threshold(
    cluster: Cluster, connections: SharedClients, unique_name: str
) -> None:
    """Lag 9: inactive at activationLagThreshold 9, active at 8."""
    topic = await cluster.topic(unique_name, [10, 5, 3])
    group = f"{unique_name}-g"
    await cluster.commit(group, {(topic, 0): 4, (topic, 1): 5, (topic, 2): 0})
    for threshold, expected in (("9", False), ("8", True)):
        metadata = {"consumerGroup": group, "topic": topic, "activationLagThreshold": threshold}
        sample = await sample_once(make(cluster.bootstrap, connections, metadata))
        assert (sample.value, sample.activation_target, active(sample)) == (
            9.0,
            float(threshold),
            expected,
        )


# ---------------------------------------------------------------------------------------------
# Missing topics, sharing, unreachable clusters


async def test_missing_topic_is_a_query_error_and_is_not_created(
    cluster: Cluster, connections: SharedClients, unique_name: str
) -> None:
    """The bench's broker auto-creates topics on request; a poll must not: a misspelt topic is
    reported, never turned into an empty topic with no lag."""
    missing = f"{unique_name}-typo"
    scaler = make(cluster.bootstrap, connections, {"consumerGroup": "g", "topic": missing})
    for _ in range(2):  # the second poll reuses the client
        with pytest.raises(ScalerQueryError) as info:
            await scaler.sample()
        assert str(info.value) == (
            f'trigger[0] (kafka): plaintext://{cluster.bootstrap}: topic "{missing}" does not exist'
        )
        assert not info.value.transient
    await scaler.aclose()
    assert missing not in await cluster.admin.list_topics()


async def test_deleted_topic_is_not_recreated(
    cluster: Cluster, connections: SharedClients, unique_name: str
) -> None:
    """A topic read once and then deleted stays deleted, through the shared client's metadata
    refreshes too (an aiokafka consumer that had read it would ask the broker to recreate it),
    and the trigger reports it missing."""
    topic = await cluster.topic(unique_name, [2])
    scaler = make(cluster.bootstrap, connections, {"consumerGroup": "g", "topic": topic})
    try:
        assert (await scaler.sample()).value == 1.0
        await cluster.admin.delete_topics([topic])
        cluster.topics.remove(topic)
        assert scaler._lease is not None
        deadline = time.monotonic() + 15
        while topic in await cluster.admin.list_topics():
            assert time.monotonic() < deadline, "the deletion never showed"
            await asyncio.sleep(0.2)
        await scaler._lease.client.client.force_metadata_update()
        with pytest.raises(ScalerQueryError, match=f'topic "{topic}" does not exist$'):
            await scaler.sample()
        await scaler._lease.client.client.force_metadata_update()
        await asyncio.sleep(0.5)
        assert topic not in await cluster.admin.list_topics()
    finally:
        await scaler.aclose()


async def test_scalers_of_one_cluster_share_one_client(
    cluster: Cluster, connections: SharedClients, unique_name: str
) -> None:
    """Two triggers (other topics, groups and settings) on one cluster: one client, leased
    twice, closed with the last lease. Another SharedClients (another operator) has its own."""
    a = await cluster.topic(f"{unique_name}-a", [3, 3, 3])
    b = await cluster.topic(f"{unique_name}-b", [2])
    first = make(cluster.bootstrap, connections, {"consumerGroup": "g1", "topic": a})
    second = make(
        cluster.bootstrap,
        connections,
        {"consumerGroup": "g2", "topic": b, "offsetResetPolicy": "earliest"},
        index=1,
    )
    assert [(await s.sample()).value for s in (first, second)] == [3.0, 2.0]
    assert first.endpoint == second.endpoint
    assert len(connections) == 1
    assert connections.leases(first.endpoint) == 2
    assert first._lease is not None
    assert second._lease is not None
    assert first._lease.client is second._lease.client

    elsewhere = SharedClients()
    other = make(cluster.bootstrap, elsewhere, {"consumerGroup": "g1", "topic": a})
    assert (await other.sample()).value == 3.0
    assert other._lease is not None
    assert other._lease.client is not first._lease.client
    await other.aclose()
    assert len(elsewhere) == 0

    await first.aclose()
    assert (await second.sample()).value == 2.0  # the same client, still open
    await second.aclose()
    assert len(connections) == 0


async def test_unreachable_cluster_is_unavailable_within_the_timeout(
    connections: SharedClients,
) -> None:
    """Nobody listens on the port: ScalerUnavailableError (transient), quickly."""
    port = free_port()
    scaler = make(f"{LOOPBACK}:{port}", connections, {"consumerGroup": "g", "topic": "t"})
    started = time.monotonic()
    with pytest.raises(ScalerUnavailableError) as info:
        await sample_once(scaler)
    assert time.monotonic() - started < POLL_TIMEOUT
    assert info.value.transient
    assert str(info.value).startswith(
        f"trigger[0] (kafka): plaintext://{LOOPBACK}:{port}: unavailable: "
        "KafkaConnectionError: Unable to bootstrap from"
    )
    assert len(connections) == 0


async def test_silent_server_times_out(connections: SharedClients) -> None:
    """A server that accepts connections but never answers: the poll timeout bounds it."""
    with socket.create_server((LOOPBACK, 0)) as silent:
        port = silent.getsockname()[1]
        scaler = make(
            f"{LOOPBACK}:{port}", connections, {"consumerGroup": "g", "topic": "t"}, timeout=1.0
        )
        started = time.monotonic()
        with pytest.raises(ScalerUnavailableError) as info:
            await sample_once(scaler)
        elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 2.5
    assert str(info.value).endswith(": no answer within 1s")
    assert len(connections) == 0


# ---------------------------------------------------------------------------------------------
# SASL on the bench's SASL_PLAINTEXT listener


def all_text(exc: BaseException) -> str:
    """Everything an exception can put in a log: messages and reprs of the whole chain."""
    return "".join(traceback.format_exception(exc)) + repr(exc) + repr(exc.__cause__)


@pytest.mark.parametrize("mechanism", ["plaintext", "scram_sha256", "scram_sha512"])
async def test_sasl_mechanisms(
    kafka: Kafka,
    cluster: Cluster,
    connections: SharedClients,
    unique_name: str,
    mechanism: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 with the bench's user: the same lag as over
    PLAINTEXT; the password in no log line."""
    caplog.set_level(logging.DEBUG)
    topic = await cluster.topic(unique_name, [10, 5, 3])
    group = f"{unique_name}-g"
    await cluster.commit(group, {(topic, 0): 4, (topic, 1): 5, (topic, 2): 0})
    password = Kafka.USERS["alice"]
    auth = {"sasl": mechanism, "username": "alice", "password": password}
    scaler = make(kafka.sasl_bootstrap, connections, {"consumerGroup": group, "topic": topic}, auth)
    assert str(scaler.endpoint) == f"sasl_plaintext://alice@{kafka.sasl_bootstrap}"
    assert (await sample_once(scaler)).value == 9.0
    assert password not in caplog.text


@pytest.mark.parametrize("mechanism", ["plaintext", "scram_sha512"])
async def test_wrong_password_is_a_query_error(
    kafka: Kafka, connections: SharedClients, mechanism: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Refused credentials are not transient, and neither password shows anywhere."""
    caplog.set_level(logging.DEBUG)
    right = Kafka.USERS["alice"]
    wrong = right + "-wrong"
    auth = {"sasl": mechanism, "username": "alice", "password": wrong}
    scaler = make(kafka.sasl_bootstrap, connections, {"consumerGroup": "g", "topic": "t"}, auth)
    with pytest.raises(ScalerError) as info:
        await sample_once(scaler)
    assert isinstance(info.value, ScalerQueryError)
    assert not info.value.transient
    assert "authentication failed: " in str(info.value)
    text = all_text(info.value) + repr(scaler) + repr(scaler.config) + caplog.text
    assert right not in text  # also covers the wrong one, which starts with it
    assert len(connections) == 0


async def test_sasl_credentials_do_not_share_a_client(
    kafka: Kafka, cluster: Cluster, connections: SharedClients, unique_name: str
) -> None:
    """alice and bob on one cluster: two clients; two triggers of alice: one."""
    topic = await cluster.topic(unique_name, [1])
    scalers = [
        make(
            kafka.sasl_bootstrap,
            connections,
            {"consumerGroup": f"g{i}", "topic": topic},
            {"sasl": "scram_sha512", "username": user, "password": Kafka.USERS[user]},
        )
        for i, user in enumerate(("alice", "alice", "bob"))
    ]
    try:
        for scaler in scalers:
            assert (await scaler.sample()).value == 1.0
        assert len(connections) == 2
        assert connections.leases(scalers[0].endpoint) == 2
    finally:
        for scaler in scalers:
            await scaler.aclose()


# ---------------------------------------------------------------------------------------------
# TLS and SASL OAUTHBEARER, on a broker of this module's own
#
# The bench's broker has no TLS listener yet, so this module starts one more Kafka 4.3 (from the
# bench's installation) with three client listeners: PLAINTEXT (to set data up), SSL requiring
# a client certificate, and SASL_SSL with OAUTHBEARER. The OAUTHBEARER listener uses Kafka's
# built-in validator of unsecured JWTs; the token endpoint is an aiohttp server in this test
# process that issues them to the right client id and secret, so the whole client-credentials
# flow runs for real.

OAUTH_CLIENT = "scaler-client"
OAUTH_SECRET = "oauth-Sécret-never-shown"


def _unsecured_jwt(subject: str, lifetime: int = 3600) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    now = int(time.time())
    return f"{part({'alg': 'none'})}.{part({'sub': subject, 'iat': now, 'exp': now + lifetime})}."


@dataclass
class SecureKafka:
    plaintext: str
    ssl: str
    sasl_ssl: str
    ca: str
    client_cert: str
    client_key: str
    other_ca: str


@pytest.fixture(scope="module")
def secure_kafka(kafka: Kafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """A single-node Kafka with SSL (client certificate required) and SASL_SSL OAUTHBEARER
    listeners; `kafka` is only asked for so that the bench is known to be installed."""
    where = paths()
    workdir = tmp_path_factory.mktemp("secure-kafka")
    ca = TinyCA("kafka-test-ca")
    server = ca.issue(LOOPBACK, hosts=(LOOPBACK,), server=True)
    client = ca.issue("scaler", client=True)
    (workdir / "server.pem").write_bytes(server.key_pem + server.cert_pem)
    (workdir / "ca.pem").write_bytes(ca.cert_pem)
    plain, ssl_port, sasl_port, controller = (free_port() for _ in range(4))
    properties = workdir / "server.properties"
    properties.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@{LOOPBACK}:{controller}",
                f"listeners=PLAINTEXT://{LOOPBACK}:{plain},SSL://{LOOPBACK}:{ssl_port},"
                f"SASL_SSL://{LOOPBACK}:{sasl_port},CONTROLLER://{LOOPBACK}:{controller}",
                f"advertised.listeners=PLAINTEXT://{LOOPBACK}:{plain},SSL://{LOOPBACK}:{ssl_port},"
                f"SASL_SSL://{LOOPBACK}:{sasl_port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,"
                "SSL:SSL,SASL_SSL:SASL_SSL",
                "ssl.keystore.type=PEM",
                f"ssl.keystore.location={workdir / 'server.pem'}",
                "ssl.truststore.type=PEM",
                f"ssl.truststore.location={workdir / 'ca.pem'}",
                "listener.name.ssl.ssl.client.auth=required",
                "listener.name.sasl_ssl.ssl.client.auth=none",
                "sasl.enabled.mechanisms=OAUTHBEARER",
                "listener.name.sasl_ssl.oauthbearer.sasl.jaas.config="
                "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;",
                f"log.dirs={workdir / 'data'}",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "num.network.threads=2",
                "num.io.threads=2",
                "auto.create.topics.enable=false",
                "",
            ]
        )
    )
    (workdir / "log4j2.yaml").write_text(KAFKA_LOG4J2)
    java = [
        "java",
        *KAFKA_JVM_FLAGS,
        f"-Dlog4j2.configurationFile={workdir / 'log4j2.yaml'}",
        "-cp",
        f"{where.kafka_libs}/*",
    ]
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    formatter = ManagedProcess(
        "secure-kafka-format",
        [*java, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties)],
        log_path=workdir / "format.log",
    )
    if formatter.popen.wait(timeout=120) != 0:
        raise formatter.fail("storage format failed")
    formatter.stop()
    process = ManagedProcess(
        "secure-kafka", [*java, "kafka.Kafka", str(properties)], log_path=workdir / "kafka.log"
    )
    try:
        for port in (plain, ssl_port, sasl_port):
            wait_until(process, lambda p=port: port_open(p), timeout=90, what="listening")
        yield SecureKafka(
            plaintext=f"{LOOPBACK}:{plain}",
            ssl=f"{LOOPBACK}:{ssl_port}",
            sasl_ssl=f"{LOOPBACK}:{sasl_port}",
            ca=ca.cert_pem.decode(),
            client_cert=client.cert_pem.decode(),
            client_key=client.key_pem.decode(),
            other_ca=TinyCA("not-kafkas-ca").cert_pem.decode(),
        )
    finally:
        process.stop()


@dataclass
class TokenServer:
    url: str
    issued: int = 0


@pytest.fixture
async def token_server() -> AsyncIterator[TokenServer]:
    """OAuth 2 client credentials: unsecured JWTs for OAUTH_CLIENT / OAUTH_SECRET."""
    state = TokenServer(url="")

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            user, _, secret = base64.b64decode(header[6:]).decode().partition(":")
            user, secret = urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(secret)
        else:
            user, secret = str(form.get("client_id")), str(form.get("client_secret"))
        if form.get("grant_type") != "client_credentials" or (user, secret) != (
            OAUTH_CLIENT,
            OAUTH_SECRET,
        ):
            return web.json_response({"error": "invalid_client"}, status=401)
        state.issued += 1
        return web.json_response(
            {"access_token": _unsecured_jwt(user), "token_type": "bearer", "expires_in": 3600}
        )

    app = web.Application()
    app.router.add_post("/oauth/token", token)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    state.url = f"http://{LOOPBACK}:{runner.addresses[0][1]}/oauth/token"
    yield state
    await runner.cleanup()


@pytest.fixture
async def secure_cluster(secure_kafka: SecureKafka) -> AsyncIterator[Cluster]:
    admin = AIOKafkaAdminClient(bootstrap_servers=secure_kafka.plaintext)
    producer = AIOKafkaProducer(bootstrap_servers=secure_kafka.plaintext, linger_ms=5)
    await admin.start()
    await producer.start()
    await coordinator_ready(admin)
    state = Cluster(secure_kafka.plaintext, admin, producer)
    try:
        yield state
    finally:
        await producer.stop()
        if state.topics:
            with contextlib.suppress(Exception):
                await admin.delete_topics(state.topics)
        await admin.close()


async def lagging_topic(cluster: Cluster, name: str) -> dict[str, str]:
    """Records (10, 5, 3), committed (4, 5, 0): lag 9. Returns the trigger's metadata."""
    topic = await cluster.topic(name, [10, 5, 3])
    await cluster.commit(f"{name}-g", {(topic, 0): 4, (topic, 1): 5, (topic, 2): 0})
    return {"consumerGroup": f"{name}-g", "topic": topic}


def encrypted(key_pem: str, password: str) -> str:
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password.encode()),
    ).decode()


@pytest.mark.parametrize(
    ("metadata", "material"),
    [
        pytest.param({"tls": "enable"}, ("ca", "cert", "key"), id="tls-in-metadata"),
        pytest.param({}, ("tls", "ca", "cert", "key"), id="tls-in-auth-params"),
        pytest.param(
            {"tls": "enable"}, ("ca", "cert", "encrypted-key"), id="encrypted-key-with-password"
        ),
        pytest.param(
            {"tls": "enable", "unsafeSsl": "true"}, ("cert", "key"), id="unsafe-ssl-without-ca"
        ),
    ],
)
async def test_tls_with_client_certificate(
    secure_kafka: SecureKafka,
    secure_cluster: Cluster,
    connections: SharedClients,
    unique_name: str,
    metadata: dict[str, str],
    material: tuple[str, ...],
) -> None:
    """The SSL listener, which requires a client certificate: ca, cert and key (or an
    encrypted key and keyPassword); unsafeSsl trusts the broker without a CA."""
    trigger = await lagging_topic(secure_cluster, unique_name)
    key_password = "key-Pässword"
    available = {
        "tls": {"tls": "enable"},
        "ca": {"ca": secure_kafka.ca},
        "cert": {"cert": secure_kafka.client_cert},
        "key": {"key": secure_kafka.client_key},
        "encrypted-key": {
            "key": encrypted(secure_kafka.client_key, key_password),
            "keyPassword": key_password,
        },
    }
    auth = {k: v for name in material for k, v in available[name].items()}
    scaler = make(secure_kafka.ssl, connections, {**trigger, **metadata}, auth)
    assert str(scaler.endpoint) == f"ssl://{secure_kafka.ssl}"
    assert (await sample_once(scaler)).value == 9.0


@pytest.mark.parametrize(
    ("auth", "reason"),
    [
        pytest.param(
            {"ca": "other_ca", "cert": "client_cert", "key": "client_key"},
            "CERTIFICATE_VERIFY_FAILED",
            id="broker-not-trusted",
        ),
        # Under TLS 1.3 the broker refuses a missing certificate after the handshake, so the
        # client sees no TLS error of its own, only a connection that failed.
        pytest.param({"ca": "ca"}, "Unable to bootstrap", id="no-client-certificate"),
    ],
)
async def test_tls_failures_are_unavailable(
    secure_kafka: SecureKafka,
    connections: SharedClients,
    auth: dict[str, str],
    reason: str,
) -> None:
    """An untrusted broker or a refused client: ScalerUnavailableError, naming the TLS check
    where there is one, within the poll timeout."""
    material = {k: getattr(secure_kafka, v) for k, v in auth.items()}
    scaler = make(
        secure_kafka.ssl,
        connections,
        {"consumerGroup": "g", "topic": "t", "tls": "enable"},
        material,
    )
    started = time.monotonic()
    with pytest.raises(ScalerUnavailableError, match=reason):
        await sample_once(scaler)
    assert time.monotonic() - started < POLL_TIMEOUT
    assert len(connections) == 0


async def test_oauthbearer_over_tls(
    secure_kafka: SecureKafka,
    secure_cluster: Cluster,
    connections: SharedClients,
    token_server: TokenServer,
    unique_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """sasl: oauthbearer with the bearer token provider, over SASL_SSL: the client secret buys
    a token at oauthTokenEndpointUri, the broker accepts it, the lag is read. Two triggers
    share the client and the token; neither secret nor token reaches a log line."""
    caplog.set_level(logging.DEBUG)
    trigger = await lagging_topic(secure_cluster, unique_name)
    auth = {
        "sasl": "oauthbearer",
        "username": OAUTH_CLIENT,
        "password": OAUTH_SECRET,
        "oauthTokenEndpointUri": token_server.url,
        "scopes": "kafka",
        "tls": "enable",
        "ca": secure_kafka.ca,
    }
    scalers = [make(secure_kafka.sasl_ssl, connections, trigger, auth, index=i) for i in (0, 1)]
    try:
        assert [(await s.sample()).value for s in scalers] == [9.0, 9.0]
        assert len(connections) == 1
        assert token_server.issued == 1  # one token, cached for every connection
    finally:
        for scaler in scalers:
            await scaler.aclose()
    assert OAUTH_SECRET not in caplog.text
    assert "auth=Bearer" not in caplog.text  # the token as aiokafka would send it


async def test_oauthbearer_refused_client_secret_is_a_query_error(
    secure_kafka: SecureKafka, connections: SharedClients, token_server: TokenServer
) -> None:
    """The token endpoint refuses the client: a non-transient error that says so."""
    auth = {
        "sasl": "oauthbearer",
        "username": OAUTH_CLIENT,
        "password": OAUTH_SECRET + "-wrong",
        "oauthTokenEndpointUri": token_server.url,
        "tls": "enable",
        "ca": secure_kafka.ca,
    }
    scaler = make(secure_kafka.sasl_ssl, connections, {"consumerGroup": "g", "topic": "t"}, auth)
    with pytest.raises(ScalerQueryError) as info:
        await sample_once(scaler)
    assert str(info.value).endswith(
        f"SASL OAUTHBEARER: OAuthTokenError: the OAuth token endpoint {token_server.url} "
        "answered HTTP 401"
    )
    assert OAUTH_SECRET not in all_text(info.value)
    assert token_server.issued == 0


# ---------------------------------------------------------------------------------------------
# Coalescing: the reads of many scalers on one shared client

API_NAMES: dict[int, str] = {
    2: "ListOffsets",
    3: "Metadata",
    9: "OffsetFetch",
    10: "FindCoordinator",
}


def count_requests(scaler: KafkaScaler) -> dict[str, int]:
    """Count what the scaler's shared client sends from now on, by request type (replacing the
    client's own `send`, which every request of the scalers goes through)."""
    assert scaler._lease is not None
    client = scaler._lease.client.client
    counts: dict[str, int] = {}
    original = client.send

    async def counted(node_id: int, request: Any, **kwargs: Any) -> Any:
        name = API_NAMES.get(request.API_KEY, str(request.API_KEY))
        counts[name] = counts.get(name, 0) + 1
        return await original(node_id, request, **kwargs)

    client.send = counted
    return counts


async def test_concurrent_polls_share_one_request_per_broker_and_group(
    cluster: Cluster, connections: SharedClients, unique_name: str
) -> None:
    """19 scalers on one cluster (three of each of six triggers, four groups, two topics, and
    one trigger on a missing topic), polled at once: each gets its own exact lag, the missing
    topic fails only its own poll, and the cluster gets one OffsetFetch per group, one
    ListOffsets per broker and kind of offset, and a Metadata request only for the topic the
    cache cannot hold (the missing one): 7 requests for 19 polls."""
    a = await cluster.topic(f"{unique_name}-a", [10, 5, 3])
    b = await cluster.topic(f"{unique_name}-b", [4, 4])
    g1, g2, g3, g0 = (f"{unique_name}-g{i}" for i in (1, 2, 3, 0))
    await cluster.commit(g1, {(a, 0): 4, (a, 1): 5, (a, 2): 0})
    await cluster.commit(g2, {(a, 0): 10, (a, 1): 0, (a, 2): 3})
    await cluster.commit(g3, {(b, 0): 1, (b, 1): 4})
    triggers: list[tuple[dict[str, str], float]] = [
        ({"consumerGroup": g1, "topic": a}, 6 + 0 + 3),
        ({"consumerGroup": g2, "topic": a}, 0 + 5 + 0),
        ({"consumerGroup": g3, "topic": b}, 3 + 0),
        ({"consumerGroup": g0, "topic": a}, 3),  # no commits, latest: 1 per partition
        ({"consumerGroup": g0, "topic": a, "offsetResetPolicy": "earliest"}, 18),
        ({"consumerGroup": g1}, 9),  # every topic g1 has committed offsets for
    ]
    cases: list[tuple[dict[str, str], float | None]] = [*triggers, *triggers, *triggers]
    cases.append(({"consumerGroup": g1, "topic": f"{unique_name}-missing"}, None))
    scalers = [
        make(cluster.bootstrap, connections, {"lagThreshold": "1000", **metadata}, index=i)
        for i, (metadata, _) in enumerate(cases)
    ]
    try:
        await asyncio.gather(*(s.sample() for s in scalers), return_exceptions=True)
        assert len(connections) == 1
        assert scalers[0]._lease is not None
        scalers[0]._lease.client.batcher._topic_ttl = 3600.0  # no expiry within this test
        requests = count_requests(scalers[0])

        results = await asyncio.gather(*(s.sample() for s in scalers), return_exceptions=True)

        for result, (_, want) in zip(results, cases, strict=True):
            if want is None:
                assert isinstance(result, ScalerQueryError), result
                assert f'topic "{unique_name}-missing" does not exist' in str(result)
            else:
                assert isinstance(result, MetricSample), result
                assert result.value == want
        assert requests == {"OffsetFetch": 4, "ListOffsets": 2, "Metadata": 1}
    finally:
        await asyncio.gather(*(s.aclose() for s in scalers))


async def test_partitions_added_behind_the_cache_are_counted(
    cluster: Cluster, connections: SharedClients, unique_name: str
) -> None:
    """A topic layout from the cache that lacks a partition the group has committed is read
    again within the poll: the new partition's lag counts at once."""
    topic = await cluster.topic(unique_name, [2])
    group = f"{unique_name}-g"
    await cluster.commit(group, {(topic, 0): 2})
    scaler = make(cluster.bootstrap, connections, {"consumerGroup": group, "topic": topic})
    try:
        assert (await scaler.sample()).value == 0.0
        assert scaler._lease is not None
        scaler._lease.client.batcher._topic_ttl = 3600.0  # the layout stays cached
        await cluster.admin.create_partitions({topic: NewPartitions(total_count=2)})
        producer = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap)
        await producer.start()
        try:
            for _ in range(3):
                await producer.send_and_wait(topic, b"x", partition=1)
        finally:
            await producer.stop()
        await cluster.commit(group, {(topic, 0): 2, (topic, 1): 1})
        assert (await scaler.sample()).value == 2.0
    finally:
        await scaler.aclose()
