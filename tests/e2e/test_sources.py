"""KEDA's own examples for Kafka, RabbitMQ and SQS, end to end: the manifest as a KEDA user
writes it (credentials in a Secret, referenced through a TriggerAuthentication), with only the
apiVersion changed; a Deployment goes 0 -> N -> 0 on the real broker and kube-apiserver."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import aio_pika
import boto3
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.e2e.harness import Operator, remember_secret, wait_for
from tests.e2e.workloads import apply, deployment, replicas
from tests.testbed.kube import KubeAPIServer
from tests.testbed.services import SQS, Kafka, RabbitMQ

pytestmark = [pytest.mark.testbed, pytest.mark.e2e]


SECRET_KEYS = {"password", "host", "awsSecretAccessKey"}  # the rest (user names...) may show


def secret(name: str, values: dict[str, str]) -> dict[str, Any]:
    for key, value in values.items():
        if key in SECRET_KEYS:
            remember_secret(value)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


def trigger_auth(name: str, secret_name: str, parameters: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "autoscale.dev/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": {"name": name},
        "spec": {
            "secretTargetRef": [{"parameter": p, "name": secret_name, "key": p} for p in parameters]
        },
    }


def keda_scaled_object(name: str, trigger: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "autoscale.dev/v1alpha1",  # the one change from a KEDA manifest
        "kind": "ScaledObject",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"name": name},
            "pollingInterval": 1,
            "cooldownPeriod": 3,
            "maxReplicaCount": 10,
            "triggers": [trigger],
            **spec,
        },
    }


def wait_replicas(kube: KubeAPIServer, namespace: str, count: int, what: str) -> None:
    wait_for(
        lambda: replicas(kube, namespace, "deployment", "orders-worker") == count,
        timeout=30,
        what=what,
    )


def test_kafka_example_with_sasl_credentials(
    crds: KubeAPIServer,
    namespace: str,
    kafka: Kafka,
    unique_name: str,
    operator: Callable[..., Operator],
) -> None:
    topic, group = f"orders-{unique_name}", f"orders-{unique_name}"
    user, password = "alice", Kafka.USERS["alice"]
    sasl = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": user,
        "sasl_plain_password": password,
    }

    async def produce(count: int) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        try:
            if topic not in await admin.list_topics():
                await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
        await producer.start()
        try:
            for i in range(count):
                await producer.send_and_wait(topic, b"order", partition=i % 3)
        finally:
            await producer.stop()

    async def consume_all() -> None:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka.sasl_bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **sasl,
        )
        await consumer.start()
        try:
            seen = 0
            while seen < 45:
                batch = await consumer.getmany(timeout_ms=2000)
                seen += sum(len(records) for records in batch.values())
            await consumer.commit()
        finally:
            await consumer.stop()

    asyncio.run(produce(0))
    apply(
        crds,
        namespace,
        secret(
            "kafka-credentials", {"sasl": "scram_sha512", "username": user, "password": password}
        ),
    )
    apply(
        crds,
        namespace,
        trigger_auth("kafka-auth", "kafka-credentials", ["sasl", "username", "password"]),
    )
    apply(crds, namespace, deployment("orders-worker", replicas=0))
    apply(
        crds,
        namespace,
        keda_scaled_object(
            "orders-worker",
            {
                "type": "kafka",
                "metadata": {
                    "bootstrapServers": kafka.sasl_bootstrap,
                    "consumerGroup": group,
                    "topic": topic,
                    "lagThreshold": "10",
                    "offsetResetPolicy": "earliest",
                },
                "authenticationRef": {"name": "kafka-auth"},
            },
        ),
    )
    operator()
    asyncio.run(produce(45))  # lag 45 / 10 -> 5, within 3 partitions -> capped at 3
    wait_replicas(crds, namespace, 3, "0 -> 3 on consumer lag (capped at the partition count)")
    asyncio.run(consume_all())
    wait_replicas(crds, namespace, 0, "3 -> 0 once the group has caught up")


def test_rabbitmq_example_with_host_from_a_secret(
    crds: KubeAPIServer,
    namespace: str,
    rabbitmq: RabbitMQ,
    unique_name: str,
    operator: Callable[..., Operator],
) -> None:
    queue = f"tasks-{unique_name}"

    async def publish(count: int) -> None:
        connection = await aio_pika.connect(rabbitmq.amqp)
        async with connection:
            channel = await connection.channel()
            await channel.declare_queue(queue, durable=True)
            for _ in range(count):
                await channel.default_exchange.publish(aio_pika.Message(b"task"), routing_key=queue)

    async def drain() -> None:
        connection = await aio_pika.connect(rabbitmq.amqp)
        async with connection:
            channel = await connection.channel()
            await (await channel.get_queue(queue)).purge()

    asyncio.run(publish(0))
    apply(crds, namespace, secret("rabbitmq-credentials", {"host": rabbitmq.amqp}))
    apply(crds, namespace, trigger_auth("rabbitmq-auth", "rabbitmq-credentials", ["host"]))
    apply(crds, namespace, deployment("orders-worker", replicas=0))
    apply(
        crds,
        namespace,
        keda_scaled_object(
            "orders-worker",
            {
                "type": "rabbitmq",
                "metadata": {
                    "protocol": "amqp",
                    "queueName": queue,
                    "mode": "QueueLength",
                    "value": "5",
                },
                "authenticationRef": {"name": "rabbitmq-auth"},
            },
        ),
    )
    operator()
    asyncio.run(publish(23))  # 23 / 5 -> 5
    wait_replicas(crds, namespace, 5, "0 -> 5 on queue length")
    asyncio.run(drain())
    wait_replicas(crds, namespace, 0, "5 -> 0 once the queue is empty")


def test_sqs_example_with_keys_from_a_secret(
    crds: KubeAPIServer,
    namespace: str,
    sqs: SQS,
    unique_name: str,
    operator: Callable[..., Operator],
) -> None:
    client = boto3.client(
        "sqs",
        endpoint_url=sqs.url,
        region_name="eu-west-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="not-a-secret",
    )
    url = client.create_queue(QueueName=unique_name)["QueueUrl"]
    apply(
        crds,
        namespace,
        secret(
            "aws-credentials",
            {"awsAccessKeyID": "AKIDEXAMPLE", "awsSecretAccessKey": "not-a-secret"},
        ),
    )
    apply(
        crds,
        namespace,
        trigger_auth("aws-auth", "aws-credentials", ["awsAccessKeyID", "awsSecretAccessKey"]),
    )
    apply(crds, namespace, deployment("orders-worker", replicas=0))
    apply(
        crds,
        namespace,
        keda_scaled_object(
            "orders-worker",
            {
                "type": "aws-sqs-queue",
                "metadata": {
                    "queueURL": url,
                    "queueLength": "4",
                    "awsRegion": "eu-west-1",
                    "awsEndpoint": sqs.url,
                },
                "authenticationRef": {"name": "aws-auth"},
            },
        ),
    )
    operator()
    for i in range(10):
        client.send_message(QueueUrl=url, MessageBody=f"order {i}")
    wait_replicas(crds, namespace, 3, "0 -> 3 on queue length (10 / 4)")
    while True:  # the workers take and finish every message
        received = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
        messages = received.get("Messages", [])
        if not messages:
            break
        for message in messages:
            client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    wait_replicas(crds, namespace, 0, "3 -> 0 once the queue is empty")
