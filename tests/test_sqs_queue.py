"""What only the SQS queue does: partial batch failures, SQS's own redrive, its queues and limits.

Against the session's moto server, with fresh queues for every test (the shared contract is in test_queue.py).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from dth.devtools.moto import MotoServer
from dth.state.queue import Message, QueueDepth
from dth.state.sqs import MAX_BATCH_BYTES, QueueSendError, SqsQueue, create_queues


@pytest.fixture
def client(moto_server: MotoServer) -> Iterator[Any]:
    sqs = boto3.client(
        "sqs",
        endpoint_url=moto_server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=moto_server.access_key,
        aws_secret_access_key=moto_server.secret_key,
        config=Config(retries={"mode": "standard"}),
    )
    yield sqs
    sqs.close()


@pytest.fixture
def name() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def drain(queue: SqsQueue) -> list[str]:
    received: list[Message] = []
    while batch := queue.receive(10, visibility_timeout=60):
        received.extend(batch)
    return sorted(m.body for m in received)


class FlakyBatches:
    """A client whose SendMessageBatch reports some entries as failed (without sending them) instead of
    passing them on to the server: as SQS does when part of a batch fails on its side."""

    def __init__(self, client: Any, fail: dict[str, int], sender_fault: bool = False) -> None:
        self._client = client
        self.fail = fail  # body -> how many more times it fails
        self.sender_fault = sender_fault
        self.calls: list[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        self.calls.append([entry["MessageBody"] for entry in Entries])
        passed, failed = [], []
        for entry in Entries:
            if self.fail.get(entry["MessageBody"], 0) > 0:
                self.fail[entry["MessageBody"]] -= 1
                code = "InvalidMessageContents" if self.sender_fault else "InternalError"
                failed.append({"Id": entry["Id"], "SenderFault": self.sender_fault, "Code": code, "Message": "no"})
            else:
                passed.append(entry)
        response: dict[str, Any] = {"Successful": [], "Failed": failed}
        if passed:
            sent = self._client.send_message_batch(QueueUrl=QueueUrl, Entries=passed)
            response["Successful"] = sent.get("Successful", [])
            response["Failed"] += sent.get("Failed", [])
        return response


def test_create_queues_sets_redrive_encryption_and_visibility(client: Any, name: str) -> None:
    queue_url, dlq_url = create_queues(client, name, max_receive_count=4, visibility_timeout=120)
    assert queue_url.endswith(f"/{name}")
    assert dlq_url.endswith(f"/{name}-dlq")
    attributes = client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.loads(attributes["RedrivePolicy"])
    assert policy["deadLetterTargetArn"] == dlq_arn
    assert int(policy["maxReceiveCount"]) == 4
    assert attributes["VisibilityTimeout"] == "120"
    assert attributes["SqsManagedSseEnabled"] == "true"
    dlq_attributes = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["All"])["Attributes"]
    assert dlq_attributes["SqsManagedSseEnabled"] == "true"
    assert dlq_attributes["MessageRetentionPeriod"] == str(14 * 24 * 3600)
    assert "RedrivePolicy" not in dlq_attributes
    # Creating them again with the same attributes is harmless.
    assert create_queues(client, name, max_receive_count=4, visibility_timeout=120) == (queue_url, dlq_url)


def test_sqs_itself_moves_a_message_to_the_dead_letter_queue(client: Any, name: str) -> None:
    queue_url, dlq_url = create_queues(client, name, max_receive_count=2)
    queue = SqsQueue(client, queue_url, dlq_url)
    queue.send(["poison"])
    assert [m.receive_count for m in queue.receive(10, visibility_timeout=0)] == [1]
    assert [m.receive_count for m in queue.receive(10, visibility_timeout=0)] == [2]
    assert queue.receive(10, visibility_timeout=0) == []
    assert queue.depth() == QueueDepth(visible=0, in_flight=0, dead=1)
    # It is in the dead-letter queue itself, where an operator (or a redrive) finds it.
    raw = client.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=0)["Messages"]
    assert [m["Body"] for m in raw] == ["poison"]
    (letter,) = queue.dead_letters()
    assert (letter.body, letter.receive_count) == ("poison", 2)
    assert "received too many times" in letter.reason


def test_a_body_over_256_kib_is_named_and_the_rest_are_sent(client: Any, name: str) -> None:
    queue_url, dlq_url = create_queues(client, name, maximum_message_size=256 * 1024)
    queue = SqsQueue(client, queue_url, dlq_url)
    big = "x" * (256 * 1024 + 1)
    with pytest.raises(QueueSendError) as raised:
        queue.send(["first", big, "last"])
    assert raised.value.failures[0][:2] == (1, len(big))
    assert len(raised.value.failures) == 1
    message = str(raised.value)
    assert f"1 of 3 messages were not sent to {queue_url}" in message
    assert f"message #1 ({len(big)} bytes)" in message
    assert "InvalidParameterValue" in message
    assert drain(queue) == ["first", "last"]


def test_an_entry_that_fails_a_whole_batch_is_found_by_splitting_it(client: Any, name: str) -> None:
    # moto (like SQS for some errors) refuses the whole request when one entry is too long.
    queue_url, dlq_url = create_queues(client, name, maximum_message_size=1024)
    queue = SqsQueue(client, queue_url, dlq_url)
    bodies = [f"m{i}" for i in range(10)]
    bodies[6] = "y" * 2000
    with pytest.raises(QueueSendError) as raised:
        queue.send(bodies)
    assert [(index, size) for index, size, _ in raised.value.failures] == [(6, 2000)]
    assert "message #6 (2000 bytes)" in str(raised.value)
    assert drain(queue) == sorted(b for b in bodies if len(b) < 100)


def test_entries_that_fail_on_the_server_side_are_retried(client: Any, name: str) -> None:
    queue_url, dlq_url = create_queues(client, name)
    flaky = FlakyBatches(client, {"m3": 2, "m11": 1})
    queue = SqsQueue(flaky, queue_url, dlq_url, retry_delay=0.01)
    bodies = [f"m{i}" for i in range(15)]
    queue.send(bodies)
    assert drain(queue) == sorted(bodies)  # each exactly once
    # A batch of 10, its failed entry again (twice), then the batch of 5 and its failed entry.
    assert flaky.calls == [bodies[:10], ["m3"], ["m3"], bodies[10:], ["m11"]]


def test_entries_that_keep_failing_are_named_after_the_rest_are_sent(client: Any, name: str) -> None:
    queue_url, dlq_url = create_queues(client, name)
    flaky = FlakyBatches(client, {"m2": 100})
    queue = SqsQueue(flaky, queue_url, dlq_url, send_attempts=3, retry_delay=0.01)
    with pytest.raises(QueueSendError) as raised:
        queue.send(["m0", "m1", "m2", "m3"])
    assert [(index, reason) for index, _, reason in raised.value.failures] == [(2, "InternalError: no")]
    assert "message #2 (2 bytes): InternalError: no" in str(raised.value)
    assert flaky.calls == [["m0", "m1", "m2", "m3"], ["m2"], ["m2"]]  # three attempts
    assert drain(queue) == ["m0", "m1", "m3"]


def test_entries_refused_as_the_senders_fault_are_not_retried(client: Any, name: str) -> None:
    queue_url, dlq_url = create_queues(client, name)
    flaky = FlakyBatches(client, {"bad": 100}, sender_fault=True)
    queue = SqsQueue(flaky, queue_url, dlq_url, retry_delay=0.01)
    with pytest.raises(QueueSendError, match=r"message #1 \(3 bytes\): InvalidMessageContents"):
        queue.send(["ok", "bad"])
    assert flaky.calls == [["ok", "bad"]]
    assert drain(queue) == ["ok"]


def test_batches_stay_under_the_batch_size_limit(client: Any, name: str) -> None:
    queue_url, dlq_url = create_queues(client, name)
    flaky = FlakyBatches(client, {})
    queue = SqsQueue(flaky, queue_url, dlq_url)
    bodies = [f"{i:02d}" + "z" * (100 * 1024) for i in range(5)]  # 100 KiB each
    queue.send(bodies)
    assert [len(call) for call in flaky.calls] == [2, 2, 1]
    assert all(sum(len(body) for body in call) <= MAX_BATCH_BYTES for call in flaky.calls)
    assert drain(queue) == bodies


def test_timeouts_are_whole_seconds_rounded_up(client: Any, name: str) -> None:
    queue_url, dlq_url = create_queues(client, name)
    calls: list[dict[str, Any]] = []

    class Recording:
        def __getattr__(self, attribute: str) -> Any:
            return getattr(client, attribute)

        def receive_message(self, **kwargs: Any) -> Any:
            calls.append(kwargs)
            return client.receive_message(**kwargs)

    queue = SqsQueue(Recording(), queue_url, dlq_url)
    queue.send(["a"])
    (message,) = queue.receive(25, visibility_timeout=0.3, wait_seconds=0.2)
    assert (calls[0]["MaxNumberOfMessages"], calls[0]["VisibilityTimeout"], calls[0]["WaitTimeSeconds"]) == (10, 1, 1)
    queue.delete([message])
    queue.send(["b"])
    assert [m.body for m in queue.receive(1, visibility_timeout=1e9, wait_seconds=100)] == ["b"]
    assert (calls[1]["VisibilityTimeout"], calls[1]["WaitTimeSeconds"]) == (43_200, 20)


def test_a_stale_receipt_is_logged_and_other_errors_raise(
    client: Any, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    queue_url, dlq_url = create_queues(client, name)
    queue = SqsQueue(client, queue_url, dlq_url)
    queue.send(["a"])
    (message,) = queue.receive(1, visibility_timeout=30)
    queue.delete([message])
    with caplog.at_level(logging.INFO, logger="dth.state.sqs"):
        queue.change_visibility(message, 0)
    assert "the receipt no longer acts on the message" in caplog.text
    gone = SqsQueue(client, queue_url + "-missing", dlq_url)
    with pytest.raises(ClientError):
        gone.change_visibility(message, 0)
    with pytest.raises(ClientError):
        gone.send(["x"])


def test_a_heartbeat_past_sqs_12_hour_limit_is_logged_not_raised(
    client: Any, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    queue_url, dlq_url = create_queues(client, name)
    queue = SqsQueue(client, queue_url, dlq_url)
    queue.send(["long copy"])
    (message,) = queue.receive(1, visibility_timeout=30)
    with caplog.at_level(logging.WARNING, logger="dth.state.sqs"):
        queue.change_visibility(message, 43_200)  # 12 hours from now: past 12 hours since it was received
    assert "received 12 hours ago" in caplog.text
    queue.change_visibility(message, 0)  # within the limit it still works
    assert [m.body for m in queue.receive(1, visibility_timeout=30)] == ["long copy"]
