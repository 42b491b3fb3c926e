"""The bench's Kafka is a real Apache Kafka broker: topics with partitions, consumer groups,
committed offsets and end offsets, read through aiokafka as the Kafka scaler will."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

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
