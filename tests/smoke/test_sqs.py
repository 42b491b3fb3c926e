"""The bench's SQS endpoint (moto's server, a separate process) speaks the SQS API: queue
attributes for visible and in-flight messages, read with boto3 as the SQS scaler does."""

from __future__ import annotations

import boto3
import pytest

from tests.testbed.services import SQS

pytestmark = pytest.mark.testbed


def test_visible_and_in_flight_counts(sqs: SQS, unique_name: str) -> None:
    client = boto3.client(
        "sqs",
        endpoint_url=sqs.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    url = client.create_queue(QueueName=unique_name)["QueueUrl"]
    for i in range(7):
        client.send_message(QueueUrl=url, MessageBody=f"job {i}")
    received = client.receive_message(QueueUrl=url, MaxNumberOfMessages=3, VisibilityTimeout=60)
    assert len(received["Messages"]) == 3
    attributes = client.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert int(attributes["ApproximateNumberOfMessages"]) == 4
    assert int(attributes["ApproximateNumberOfMessagesNotVisible"]) == 3
    client.delete_queue(QueueUrl=url)
