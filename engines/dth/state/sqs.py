"""The work queue on Amazon SQS: a standard queue and its dead-letter queue.

The interface's semantics map onto SQS directly: a received message is hidden for its visibility
timeout and comes back unless deleted, its `ApproximateReceiveCount` is the receive count, and SQS
itself moves a message received `maxReceiveCount` times to the dead-letter queue (the queue's
RedrivePolicy). A message dead-lettered on purpose is sent to the dead-letter queue with the reason
in a message attribute, then deleted from the work queue.

Differences from the SQLite queue that callers may notice:

- SQS speaks whole seconds: visibility timeouts and waits are rounded up (0.3 s hides a message for 1 s),
  and a long poll lasts up to `ceil(wait_seconds)` (at most 20 s).
- A standard queue does not promise order, and `send` is not atomic: a batch can fail in part. Entries
  that fail for a transient reason are retried; what still fails is named in `QueueSendError`, after
  every other message was sent.
- Whether an older receipt of a redelivered message still deletes it is up to SQS (it may).
- `dead_letters` reads the dead-letter queue without consuming it, by receiving and then making the
  messages visible again; readers at the same time may see part of it.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from dth.errors import DthError
from dth.state.queue import REDRIVE_REASON, DeadLetter, Message, QueueDepth, WorkQueue

log = logging.getLogger(__name__)

#: SQS limits: entries per batch request, the longest long poll, the longest visibility timeout.
MAX_BATCH = 10
MAX_WAIT_SECONDS = 20
MAX_VISIBILITY_SECONDS = 43_200
#: Bytes of message bodies per SendMessageBatch: the classic 256 KiB payload limit, which every region
#: accepts (larger single messages are sent alone, and the queue's MaximumMessageSize decides).
MAX_BATCH_BYTES = 256 * 1024

REASON_ATTRIBUTE = "dth-reason"
RECEIVE_COUNT_ATTRIBUTE = "dth-receive-count"
#: How long `dead_letters` hides the dead letters it reads before making them visible again.
PEEK_VISIBILITY_SECONDS = 30
#: How many dead letters a sweep looks at, per dead letter it may record.
SWEEP_LOOK_FACTOR = 10
#: Message attribute values count towards the message size: keep long reasons short.
MAX_REASON_CHARS = 4096

# Request-level errors that are about the entries of a batch (one of them is too large or malformed):
# the batch is split to find which.
_ENTRY_ERROR_CODES = frozenset(
    {
        "InvalidParameterValue",
        "InvalidParameterValueException",
        "InvalidMessageContents",
        "MessageTooLong",
        "BatchRequestTooLong",
        "AWS.SimpleQueueService.BatchRequestTooLong",
    }
)
# Errors that mean the receipt no longer acts on a message (deleted, or received again since).
_STALE_RECEIPT_CODES = frozenset(
    {
        "ReceiptHandleIsInvalid",
        "InvalidReceiptHandle",
        "MessageNotInflight",
        "AWS.SimpleQueueService.MessageNotInflight",
    }
)


class QueueSendError(DthError):
    """Some messages could not be sent; every other message of the call was sent."""

    def __init__(self, queue_url: str, total: int, failures: Sequence[tuple[int, int, str]]) -> None:
        self.failures = list(failures)  # (index in the bodies sent, size in bytes, reason)
        shown = "; ".join(f"message #{index} ({size} bytes): {reason}" for index, size, reason in failures[:5])
        more = f"; and {len(failures) - 5} more" if len(failures) > 5 else ""
        super().__init__(f"{len(failures)} of {total} messages were not sent to {queue_url}: {shown}{more}")


@dataclass
class _Entry:
    index: int
    body: str

    @property
    def size(self) -> int:
        return len(self.body.encode("utf-8"))


def _seconds(value: float, maximum: int) -> int:
    """SQS takes whole seconds: round up, so that nothing becomes visible earlier than asked."""
    return max(0, min(maximum, math.ceil(value)))


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _describe(error: ClientError) -> str:
    details = error.response.get("Error", {})
    code, message = details.get("Code", ""), details.get("Message", "")
    return f"{code}: {message}" if message else str(code)


def _stale_receipt(error: ClientError) -> bool:
    code = _code(error)
    if code in _STALE_RECEIPT_CODES:
        return True
    # Real SQS: "Value ... for parameter ReceiptHandle is invalid. Reason: Message does not exist or is not
    # available for visibility timeout change."
    message = str(error.response.get("Error", {}).get("Message", "")).lower().replace(" ", "")
    return code == "InvalidParameterValue" and "receipthandle" in message


def _beyond_visibility_limit(error: ClientError) -> bool:
    message = str(error.response.get("Error", {}).get("Message", ""))
    return _code(error) == "InvalidParameterValue" and "VisibilityTimeout" in message and "limit" in message


class SqsQueue(WorkQueue):
    """A work queue on SQS, built from a boto3 SQS client and the URLs of the queue and its dead-letter queue.

    boto3 clients are thread-safe: one `SqsQueue` serves every worker thread.
    """

    def __init__(
        self,
        client: Any,
        queue_url: str,
        dead_letter_queue_url: str,
        *,
        send_attempts: int = 5,
        retry_delay: float = 0.2,
        close_client: bool = False,
    ) -> None:
        self._client = client
        self.queue_url = queue_url
        self.dead_letter_queue_url = dead_letter_queue_url
        self._send_attempts = max(1, send_attempts)
        self._retry_delay = retry_delay
        self._close_client = close_client
        self._max_receive_count: int | None = None

    # --- sending ------------------------------------------------------------------------------

    def send(self, bodies: Sequence[str]) -> None:
        failures: list[tuple[int, int, str]] = []
        batch: list[_Entry] = []
        batch_bytes = 0
        for index, body in enumerate(bodies):
            entry = _Entry(index, body)
            if batch and (len(batch) == MAX_BATCH or batch_bytes + entry.size > MAX_BATCH_BYTES):
                failures.extend(self._send_batch(batch))
                batch, batch_bytes = [], 0
            batch.append(entry)
            batch_bytes += entry.size
        if batch:
            failures.extend(self._send_batch(batch))
        if failures:
            raise QueueSendError(self.queue_url, len(bodies), sorted(failures))

    def _send_batch(self, entries: list[_Entry]) -> list[tuple[int, int, str]]:
        """Send one batch; returns the entries that could not be sent, with the reason."""
        failures: list[tuple[int, int, str]] = []
        pending = entries
        reasons: dict[int, str] = {}
        for attempt in range(self._send_attempts):
            if attempt:
                self._sleep(attempt)
            try:
                response = self._client.send_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[{"Id": str(entry.index), "MessageBody": entry.body} for entry in pending],
                )
            except ClientError as error:
                if _code(error) not in _ENTRY_ERROR_CODES:
                    raise
                # The whole request was refused because of some entry: split the batch to find which.
                if len(pending) == 1:
                    (entry,) = pending
                    return [*failures, (entry.index, entry.size, _describe(error))]
                middle = len(pending) // 2
                return [*failures, *self._send_batch(pending[:middle]), *self._send_batch(pending[middle:])]
            by_id = {str(entry.index): entry for entry in pending}
            retry: list[_Entry] = []
            for failed in response.get("Failed", []):
                entry = by_id[failed["Id"]]
                reason = f"{failed.get('Code', 'unknown')}: {failed.get('Message', '')}".rstrip(": ")
                if failed.get("SenderFault"):
                    failures.append((entry.index, entry.size, reason))
                else:
                    reasons[entry.index] = reason
                    retry.append(entry)
            if not retry:
                return failures
            log.warning(
                "messages not sent, will retry",
                extra={"queue": self.queue_url, "messages": len(retry), "attempt": attempt + 1},
            )
            pending = retry
        return [*failures, *((entry.index, entry.size, reasons[entry.index]) for entry in pending)]

    def _sleep(self, attempt: int) -> None:
        time.sleep(min(5.0, self._retry_delay * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0))

    # --- receiving ----------------------------------------------------------------------------

    def receive(self, max_messages: int, visibility_timeout: float, wait_seconds: float = 0) -> list[Message]:
        if max_messages < 1:
            return []
        response = self._client.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=min(MAX_BATCH, max_messages),
            VisibilityTimeout=_seconds(visibility_timeout, MAX_VISIBILITY_SECONDS),
            WaitTimeSeconds=_seconds(wait_seconds, MAX_WAIT_SECONDS),
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        return [
            Message(
                message_id=raw["MessageId"],
                receipt=raw["ReceiptHandle"],
                body=raw["Body"],
                receive_count=int(raw.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
            )
            for raw in response.get("Messages", [])
        ]

    def delete(self, messages: Iterable[Message]) -> None:
        # SQS refuses a batch that names one receipt twice.
        receipts = list(dict.fromkeys(message.receipt for message in messages))
        for start in range(0, len(receipts), MAX_BATCH):
            self._delete_batch(self.queue_url, receipts[start : start + MAX_BATCH])

    def _delete_batch(self, queue_url: str, receipts: list[str]) -> None:
        pending = dict(enumerate(receipts))
        for attempt in range(self._send_attempts):
            if attempt:
                self._sleep(attempt)
            response = self._client.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(number), "ReceiptHandle": receipt} for number, receipt in pending.items()],
            )
            retry: dict[int, str] = {}
            for failed in response.get("Failed", []):
                number = int(failed["Id"])
                if failed.get("SenderFault") or failed.get("Code") in _STALE_RECEIPT_CODES:
                    # Deleted already, or received again by someone else: nothing of ours to delete.
                    log.info(
                        "message not deleted: its receipt no longer acts on it",
                        extra={"queue": queue_url, "error": failed.get("Code")},
                    )
                else:
                    retry[number] = pending[number]
            if not retry:
                return
            pending = retry
        log.warning("messages not deleted; they will be delivered again", extra={"queue": queue_url})

    def change_visibility(self, message: Message, timeout: float) -> None:
        try:
            self._client.change_message_visibility(
                QueueUrl=self.queue_url,
                ReceiptHandle=message.receipt,
                VisibilityTimeout=_seconds(timeout, MAX_VISIBILITY_SECONDS),
            )
        except ClientError as error:
            if _stale_receipt(error):
                log.info(
                    "visibility not changed: the receipt no longer acts on the message",
                    extra={"queue": self.queue_url, "message_id": message.message_id, "error": _describe(error)},
                )
            elif _beyond_visibility_limit(error):
                # SQS hides a message at most 12 hours after it was received: a heartbeat cannot go on.
                log.warning(
                    "visibility not changed: the message was received 12 hours ago, it will be delivered again",
                    extra={"queue": self.queue_url, "message_id": message.message_id},
                )
            else:
                raise

    # --- dead letters -------------------------------------------------------------------------

    def dead_letter(self, message: Message, reason: str) -> None:
        # First make sure the receipt still acts on the message (not deleted, not dead-lettered already),
        # so that a late caller does not add a second dead letter.
        try:
            self._client.change_message_visibility(
                QueueUrl=self.queue_url, ReceiptHandle=message.receipt, VisibilityTimeout=PEEK_VISIBILITY_SECONDS
            )
        except ClientError as error:
            if not _stale_receipt(error):
                raise
            log.info(
                "not dead-lettered: the receipt no longer acts on the message",
                extra={"queue": self.queue_url, "message_id": message.message_id},
            )
            return
        # Send before deleting: a crash in between leaves the message twice, never nowhere.
        self._client.send_message(
            QueueUrl=self.dead_letter_queue_url,
            MessageBody=message.body,
            MessageAttributes={
                REASON_ATTRIBUTE: {"DataType": "String", "StringValue": reason[:MAX_REASON_CHARS] or "(no reason)"},
                RECEIVE_COUNT_ATTRIBUTE: {"DataType": "Number", "StringValue": str(message.receive_count)},
            },
        )
        self._delete_batch(self.queue_url, [message.receipt])

    def depth(self) -> QueueDepth:
        work = self._attributes(
            self.queue_url,
            [
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )
        dead = self._attributes(
            self.dead_letter_queue_url,
            ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        return QueueDepth(
            visible=int(work.get("ApproximateNumberOfMessages", 0)),
            # Delayed messages are not visible yet but still to be worked on: pending, like in-flight ones.
            in_flight=int(work.get("ApproximateNumberOfMessagesNotVisible", 0))
            + int(work.get("ApproximateNumberOfMessagesDelayed", 0)),
            # Dead letters being read by `dead_letters` are hidden for a moment: still dead letters.
            dead=int(dead.get("ApproximateNumberOfMessages", 0))
            + int(dead.get("ApproximateNumberOfMessagesNotVisible", 0)),
        )

    def _attributes(self, queue_url: str, names: list[str]) -> dict[str, str]:
        response = self._client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)
        attributes: dict[str, str] = response.get("Attributes", {})
        return attributes

    def dead_letters(self, limit: int = 1000) -> list[DeadLetter]:
        """The dead letters, oldest first, without consuming them: received with a short visibility
        timeout, then made visible again at once."""
        if limit < 1:
            return []
        counted = self._attributes(self.dead_letter_queue_url, ["ApproximateNumberOfMessages"])
        expected = min(limit, int(counted.get("ApproximateNumberOfMessages", 0)))
        received: dict[str, dict[str, Any]] = {}
        wait = 0
        try:
            while len(received) < limit:
                response = self._client.receive_message(
                    QueueUrl=self.dead_letter_queue_url,
                    MaxNumberOfMessages=min(MAX_BATCH, limit - len(received)),
                    VisibilityTimeout=PEEK_VISIBILITY_SECONDS,
                    WaitTimeSeconds=wait,
                    MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
                    MessageAttributeNames=[REASON_ATTRIBUTE, RECEIVE_COUNT_ATTRIBUTE],
                )
                fresh = [raw for raw in response.get("Messages", []) if raw["MessageId"] not in received]
                received.update((raw["MessageId"], raw) for raw in fresh)
                if fresh:
                    continue
                if wait or len(received) >= expected:
                    break
                # Fewer than SQS counted: short polls sample some of its servers, a long poll asks all.
                wait = 1
        finally:
            self._restore_visibility([raw["ReceiptHandle"] for raw in received.values()])
        ordered = sorted(received.values(), key=lambda raw: int(raw.get("Attributes", {}).get("SentTimestamp", 0)))
        return [self._dead_letter_of(raw) for raw in ordered]

    def sweep_dead_letters(self, record: Callable[[list[DeadLetter]], None], limit: int = 100) -> int:
        """Dead letters SQS's redrive moved carry no reason attribute: each is handed to `record`, then sent
        again with the reason (which marks it recorded) and the original deleted. A crash in between leaves it
        twice or unmarked, never unrecorded; recording twice counts once. Looks at most at
        `SWEEP_LOOK_FACTOR * limit` dead letters, the marked ones hidden meanwhile and made visible at the end."""
        swept = looked = 0
        marked: list[str] = []
        try:
            while swept < limit and looked < SWEEP_LOOK_FACTOR * limit:
                response = self._client.receive_message(
                    QueueUrl=self.dead_letter_queue_url,
                    MaxNumberOfMessages=MAX_BATCH,
                    VisibilityTimeout=PEEK_VISIBILITY_SECONDS,
                    MessageSystemAttributeNames=["ApproximateReceiveCount"],
                    MessageAttributeNames=[REASON_ATTRIBUTE, RECEIVE_COUNT_ATTRIBUTE],
                )
                received = response.get("Messages", [])
                if not received:
                    break
                looked += len(received)
                unmarked = [raw for raw in received if REASON_ATTRIBUTE not in raw.get("MessageAttributes", {})]
                marked += [
                    raw["ReceiptHandle"] for raw in received if REASON_ATTRIBUTE in raw.get("MessageAttributes", {})
                ]
                if not unmarked:
                    continue
                letters = [self._dead_letter_of(raw) for raw in unmarked]
                try:
                    record(letters)
                except BaseException:
                    marked += [raw["ReceiptHandle"] for raw in unmarked]  # for the next sweep, at once
                    raise
                for raw, letter in zip(unmarked, letters, strict=True):
                    self._client.send_message(
                        QueueUrl=self.dead_letter_queue_url,
                        MessageBody=letter.body,
                        MessageAttributes={
                            REASON_ATTRIBUTE: {"DataType": "String", "StringValue": letter.reason},
                            RECEIVE_COUNT_ATTRIBUTE: {"DataType": "Number", "StringValue": str(letter.receive_count)},
                        },
                    )
                    self._delete_batch(self.dead_letter_queue_url, [raw["ReceiptHandle"]])
                swept += len(unmarked)
        finally:
            self._restore_visibility(marked)
        return swept

    def _dead_letter_of(self, raw: dict[str, Any]) -> DeadLetter:
        attributes = raw.get("MessageAttributes", {})
        reason = attributes.get(REASON_ATTRIBUTE, {}).get("StringValue")
        count = attributes.get(RECEIVE_COUNT_ATTRIBUTE, {}).get("StringValue")
        if reason is not None and count is not None:
            return DeadLetter(raw["Body"], reason, int(count))
        # Moved here by the RedrivePolicy: received exactly maxReceiveCount times.
        redrive = self._redrive_max_receive_count()
        if redrive is None:
            redrive = max(0, int(raw.get("Attributes", {}).get("ApproximateReceiveCount", 1)) - 1)
        return DeadLetter(raw["Body"], reason or REDRIVE_REASON, int(count) if count is not None else redrive)

    def _redrive_max_receive_count(self) -> int | None:
        if self._max_receive_count is None:
            policy = self._attributes(self.queue_url, ["RedrivePolicy"]).get("RedrivePolicy")
            if policy:
                self._max_receive_count = int(json.loads(policy)["maxReceiveCount"])
        return self._max_receive_count

    def _restore_visibility(self, receipts: list[str]) -> None:
        for start in range(0, len(receipts), MAX_BATCH):
            chunk = receipts[start : start + MAX_BATCH]
            try:
                response = self._client.change_message_visibility_batch(
                    QueueUrl=self.dead_letter_queue_url,
                    Entries=[
                        {"Id": str(number), "ReceiptHandle": receipt, "VisibilityTimeout": 0}
                        for number, receipt in enumerate(chunk)
                    ],
                )
            except ClientError as error:
                log.warning(
                    "dead letters stay hidden until their visibility timeout",
                    extra={"queue": self.dead_letter_queue_url, "error": _describe(error)},
                )
                continue
            if response.get("Failed"):
                log.warning(
                    "some dead letters stay hidden until their visibility timeout",
                    extra={"queue": self.dead_letter_queue_url, "failed": len(response["Failed"])},
                )

    def close(self) -> None:
        if self._close_client:
            self._client.close()


def create_queues(
    client: Any,
    name: str,
    max_receive_count: int = 6,
    visibility_timeout: int = 300,
    *,
    maximum_message_size: int | None = None,
) -> tuple[str, str]:
    """Create the work queue `name` and its dead-letter queue `name-dlq` (SSE with SQS-managed keys,
    14 days' retention, redrive after `max_receive_count` receives); returns (queue URL, DLQ URL).

    For tests and standalone use: in production the CloudFormation template creates them. Creating
    queues that exist with the same attributes is harmless.
    """
    common = {"SqsManagedSseEnabled": "true", "MessageRetentionPeriod": str(14 * 24 * 3600)}
    if maximum_message_size is not None:
        common["MaximumMessageSize"] = str(maximum_message_size)
    dlq_url: str = client.create_queue(QueueName=f"{name}-dlq", Attributes=common)["QueueUrl"]
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_url: str = client.create_queue(
        QueueName=name,
        Attributes={
            **common,
            "VisibilityTimeout": str(visibility_timeout),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}),
        },
    )["QueueUrl"]
    return queue_url, dlq_url
