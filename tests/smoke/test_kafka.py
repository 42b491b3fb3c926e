"""The bench's Kafka is a real Apache Kafka broker: topics with partitions, consumer groups,
committed offsets and end offsets, read through aiokafka as the Kafka scaler will."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError

from tests.testbed.services import Kafka

pytestmark = pytest.mark.testbed


async def test_consumer_group_lag(kafka: Kafka, unique_name: str) -> None:
    """lag = produced - committed, per partition and in total."""
    topic, group = unique_name, f"{unique_name}-group"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
        await producer.start()
        try:
            for i in range(30):
                await producer.send_and_wait(topic, f"m{i}".encode(), partition=i % 3)
        finally:
            await producer.stop()

        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka.bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            consumed = 0
            while consumed < 12:
                batch = await consumer.getmany(timeout_ms=2000, max_records=12 - consumed)
                consumed += sum(len(records) for records in batch.values())
            await consumer.commit()
        finally:
            await consumer.stop()

        committed = await admin.list_consumer_group_offsets(group)
        partitions = [TopicPartition(topic, p) for p in range(3)]
        reader = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=None)
        await reader.start()
        try:
            ends = await reader.end_offsets(partitions)
        finally:
            await reader.stop()
    finally:
        await admin.close()

    assert set(committed) <= set(partitions)
    assert sum(ends.values()) == 30
    assert sum(meta.offset for meta in committed.values()) == 12
    lag = sum(ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in partitions)
    assert lag == 30 - 12


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_sasl_listener_checks_credentials(kafka: Kafka, mechanism: str) -> None:
    """The SASL_PLAINTEXT listener admits the bench's users and refuses a wrong password."""
    user, password = next(iter(Kafka.USERS.items()))

    async def topics(secret: str) -> int:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=kafka.sasl_bootstrap,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism=mechanism,
            sasl_plain_username=user,
            sasl_plain_password=secret,
            request_timeout_ms=5000,
        )
        try:
            await admin.start()
            return len(await admin.list_topics())
        finally:
            await admin.close()

    assert await topics(password) >= 1
    with pytest.raises(KafkaConnectionError):
        await topics("wrong-password")
