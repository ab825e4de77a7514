"""The work queue's contract, with the semantics of SQS, against both implementations: the embedded
SQLite queue and SQS (on the session's moto server, fresh queues for every test).

Tests that only make sense for SQLite (several queues in one file, strict order, stale receipts) are
SQLite-only; SQS-only behaviour (partial batch failures, redrive by SQS, limits) is in test_sqs_queue.py.

moto's server runs requests in threads without isolating them, and its ReceiveMessage is not atomic:
receivers racing each other sometimes get the same message (51 deliveries of 50 messages, in about one
run of three). SQS receives atomically (a standard queue may still, rarely, deliver a message twice: the
store's counters absorb that), so the concurrency test gives the SQS queue a client that sends one request
at a time: the receivers still interleave in every order.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from dth.devtools.moto import MotoServer
from dth.state.queue import DeadLetter, Message, QueueDepth, SqliteQueue, WorkQueue
from dth.state.sqs import SqsQueue, create_queues

# Short enough to keep the tests fast, long enough that a slow machine does not see it expire early.
SHORT = 0.3


def sqs_client(server: MotoServer) -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        config=Config(retries={"mode": "standard"}, max_pool_connections=20),
    )


class OneRequestAtATime:
    """A boto3 client that sends one request at a time through a lock shared by every copy."""

    def __init__(self, client: Any, lock: threading.Lock) -> None:
        self._client = client
        self._lock = lock

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attribute(*args, **kwargs)

        return call


@dataclass
class QueueKind:
    """How to make queues of one implementation, and what to expect of it."""

    name: str
    short: float  # a visibility timeout that runs out soon (SQS speaks whole seconds)
    messages: int  # how many messages the concurrency test sends (moto's SQS is slow)
    make: Callable[[str, int], WorkQueue]  # (name, max_receive_count) -> a new, empty queue
    reopen: Callable[[WorkQueue], WorkQueue]  # another handle (another connection) on the same queue
    # a handle for threads racing each other (one request at a time on moto), on another connection or not
    racing: Callable[[WorkQueue, bool], WorkQueue]
    opened: list[WorkQueue] = field(default_factory=list)

    def new(self, name: str = "work", max_receive_count: int = 3) -> WorkQueue:
        queue = self.make(name, max_receive_count)
        self.opened.append(queue)
        return queue

    def again(self, queue: WorkQueue) -> WorkQueue:
        other = self.reopen(queue)
        self.opened.append(other)
        return other

    def for_racing(self, queue: WorkQueue, new_connection: bool) -> WorkQueue:
        other = self.racing(queue, new_connection)
        if other is not queue:
            self.opened.append(other)
        return other


@pytest.fixture(params=["sqlite", "sqs"])
def kind(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QueueKind]:
    if request.param == "sqlite":
        path = tmp_path / "queue.db"

        def reopen_sqlite(queue: WorkQueue) -> WorkQueue:
            assert isinstance(queue, SqliteQueue)
            return SqliteQueue(path, queue._name, queue._max_receive_count)

        made = QueueKind(
            "sqlite",
            SHORT,
            500,
            lambda name, count: SqliteQueue(path, name, count),
            reopen_sqlite,
            lambda queue, new_connection: reopen_sqlite(queue) if new_connection else queue,
        )
        urls: list[str] = []
    else:
        server: MotoServer = request.getfixturevalue("moto_server")
        client = sqs_client(server)
        prefix = f"t-{uuid.uuid4().hex[:8]}"
        urls = []

        def make_sqs(name: str, count: int) -> WorkQueue:
            queue_url, dlq_url = create_queues(client, f"{prefix}-{name}", max_receive_count=count)
            urls.extend([queue_url, dlq_url])
            return SqsQueue(client, queue_url, dlq_url)

        def reopen_sqs(queue: WorkQueue) -> WorkQueue:
            assert isinstance(queue, SqsQueue)
            return SqsQueue(sqs_client(server), queue.queue_url, queue.dead_letter_queue_url, close_client=True)

        lock = threading.Lock()

        def racing_sqs(queue: WorkQueue, new_connection: bool) -> WorkQueue:
            assert isinstance(queue, SqsQueue)
            connection = sqs_client(server) if new_connection else client
            return SqsQueue(
                OneRequestAtATime(connection, lock),
                queue.queue_url,
                queue.dead_letter_queue_url,
                close_client=new_connection,
            )

        made = QueueKind("sqs", 2.0, 50, make_sqs, reopen_sqs, racing_sqs)
    yield made
    for queue in made.opened:
        queue.close()
    if urls:
        for url in urls:
            client.delete_queue(QueueUrl=url)
        client.close()


@pytest.fixture
def queue(kind: QueueKind) -> WorkQueue:
    return kind.new("work", max_receive_count=3)


def bodies(messages: list[Message]) -> list[str]:
    return sorted(m.body for m in messages)


def test_send_receive_delete(queue: WorkQueue) -> None:
    queue.send(["a", "b", "c"])
    assert queue.depth() == QueueDepth(visible=3, in_flight=0, dead=0)
    messages = queue.receive(10, visibility_timeout=30)
    assert bodies(messages) == ["a", "b", "c"]
    assert [m.receive_count for m in messages] == [1, 1, 1]
    assert len({m.message_id for m in messages}) == 3
    assert queue.depth() == QueueDepth(visible=0, in_flight=3, dead=0)
    assert queue.depth().pending == 3
    queue.delete(messages[:2])
    assert queue.depth() == QueueDepth(visible=0, in_flight=1, dead=0)
    queue.delete(messages[2:])
    assert queue.depth() == QueueDepth(0, 0, 0)
    assert queue.receive(10, visibility_timeout=30) == []


def test_receive_respects_max_messages(queue: WorkQueue) -> None:
    queue.send([f"m{i}" for i in range(5)])
    assert queue.send([]) is None
    first = queue.receive(2, visibility_timeout=30)
    second = queue.receive(10, visibility_timeout=30)
    assert len(first) == 2
    assert bodies(first + second) == [f"m{i}" for i in range(5)]
    assert queue.receive(0, visibility_timeout=30) == []


def test_sqlite_receives_in_send_order(tmp_path: Path) -> None:
    queue = SqliteQueue(tmp_path / "queue.db")
    try:
        queue.send([f"m{i}" for i in range(5)])
        assert [m.body for m in queue.receive(2, visibility_timeout=30)] == ["m0", "m1"]
        assert [m.body for m in queue.receive(10, visibility_timeout=30)] == ["m2", "m3", "m4"]
    finally:
        queue.close()


def test_received_message_is_invisible_until_timeout_then_redelivered(queue: WorkQueue, kind: QueueKind) -> None:
    queue.send(["job"])
    (first,) = queue.receive(1, visibility_timeout=kind.short)
    assert queue.receive(1, visibility_timeout=kind.short) == []
    assert queue.depth() == QueueDepth(visible=0, in_flight=1, dead=0)
    time.sleep(kind.short + 0.3)
    assert queue.depth() == QueueDepth(visible=1, in_flight=0, dead=0)
    (second,) = queue.receive(1, visibility_timeout=30)
    assert second.body == "job"
    assert second.message_id == first.message_id
    assert second.receive_count == first.receive_count + 1 == 2
    assert second.receipt != first.receipt


def test_stale_receipt_does_not_delete(tmp_path: Path) -> None:
    # SQLite only: SQS may still act on an older receipt of a redelivered message (moto does).
    queue = SqliteQueue(tmp_path / "queue.db")
    try:
        queue.send(["job"])
        (first,) = queue.receive(1, visibility_timeout=0)
        (second,) = queue.receive(1, visibility_timeout=30)
        queue.delete([first])  # the first receiver gave up too late: the message is someone else's now
        assert queue.depth() == QueueDepth(visible=0, in_flight=1, dead=0)
        queue.change_visibility(first, 0)  # nor can it make the message visible again
        assert queue.depth() == QueueDepth(visible=0, in_flight=1, dead=0)
        queue.dead_letter(first, "stale")  # nor send it to the dead letters
        assert queue.depth() == QueueDepth(visible=0, in_flight=1, dead=0)
        queue.delete([second])
        assert queue.depth() == QueueDepth(0, 0, 0)
    finally:
        queue.close()


def test_receipt_of_a_deleted_message_acts_on_nothing(queue: WorkQueue) -> None:
    queue.send(["done", "other"])
    messages = {m.body: m for m in queue.receive(10, visibility_timeout=30)}
    done = messages["done"]
    queue.delete([done])
    queue.delete([done, done])  # twice, and twice in one call
    queue.change_visibility(done, 0)
    queue.dead_letter(done, "too late")
    assert queue.depth() == QueueDepth(visible=0, in_flight=1, dead=0)
    assert queue.dead_letters() == []
    assert queue.receive(10, visibility_timeout=30) == []


def test_change_visibility(queue: WorkQueue, kind: QueueKind) -> None:
    queue.send(["retry-now", "heartbeat"])
    messages = {m.body: m for m in queue.receive(2, visibility_timeout=kind.short)}
    retry, heartbeat = messages["retry-now"], messages["heartbeat"]
    queue.change_visibility(retry, 0)
    queue.change_visibility(heartbeat, 30)
    (again,) = queue.receive(10, visibility_timeout=30)
    assert again.body == "retry-now"
    assert again.receive_count == 2
    time.sleep(kind.short + 0.3)
    assert queue.receive(10, visibility_timeout=30) == []  # the heartbeat kept it hidden
    assert queue.depth() == QueueDepth(visible=0, in_flight=2, dead=0)
    # The receipt of the latest delivery still works.
    queue.delete([again, heartbeat])
    assert queue.depth() == QueueDepth(0, 0, 0)


def test_redrive_after_max_receive_count(queue: WorkQueue) -> None:
    queue.send(["poison", "fine"])
    counts = []
    for _ in range(3):  # max_receive_count=3
        messages = {m.body: m for m in queue.receive(10, visibility_timeout=0)}
        counts.append(messages["poison"].receive_count)
        if "fine" in messages:
            queue.delete([messages["fine"]])
    assert counts == [1, 2, 3]
    # The next receive moves it to the dead letters instead of delivering it a fourth time.
    assert queue.receive(10, visibility_timeout=30) == []
    assert queue.depth() == QueueDepth(visible=0, in_flight=0, dead=1)
    (letter,) = queue.dead_letters()
    assert letter.body == "poison"
    assert letter.receive_count == 3
    assert "received too many times" in letter.reason
    assert queue.depth() == QueueDepth(visible=0, in_flight=0, dead=1)  # reading them consumed nothing


def test_dead_letter_moves_at_once_with_reason(queue: WorkQueue) -> None:
    queue.send(["bad", "good"])
    messages = {m.body: m for m in queue.receive(2, visibility_timeout=30)}
    bad, good = messages["bad"], messages["good"]
    queue.dead_letter(bad, "AccessDenied: not allowed to read the source")
    assert queue.depth() == QueueDepth(visible=0, in_flight=1, dead=1)
    assert queue.dead_letters() == [DeadLetter("bad", "AccessDenied: not allowed to read the source", 1)]
    # A dead-lettered message is gone from the queue: its receipt no longer acts on anything.
    queue.change_visibility(bad, 0)
    assert queue.receive(10, visibility_timeout=30) == []
    queue.delete([good])
    assert queue.depth() == QueueDepth(visible=0, in_flight=0, dead=1)
    assert queue.dead_letters() == [DeadLetter("bad", "AccessDenied: not allowed to read the source", 1)]


def test_sweep_hands_over_each_dead_letter_the_queue_made_once_and_keeps_it(queue: WorkQueue) -> None:
    """Dead letters a worker made itself were recorded by that worker; the ones the queue made (a worker died on
    the message's last delivery) were recorded by nobody: the sweep hands those over, once each."""
    queue.send(["poison", "refused"])
    refused = next(m for m in queue.receive(10, visibility_timeout=0) if m.body == "refused")
    queue.dead_letter(refused, "AccessDenied")
    for _ in range(2):
        assert [m.body for m in queue.receive(10, visibility_timeout=0)] == ["poison"]
    assert queue.receive(10, visibility_timeout=0) == []  # the third receive (max 3) moves it
    swept: list[DeadLetter] = []
    assert queue.sweep_dead_letters(swept.extend) == 1
    assert [(letter.body, letter.reason, letter.receive_count) for letter in swept] == [
        ("poison", "received too many times without success", 3)
    ]
    assert queue.sweep_dead_letters(swept.extend) == 0
    assert len(swept) == 1
    assert sorted((letter.body, letter.reason) for letter in queue.dead_letters()) == [
        ("poison", "received too many times without success"),
        ("refused", "AccessDenied"),
    ]


def test_a_failing_record_leaves_the_dead_letters_to_the_next_sweep(queue: WorkQueue) -> None:
    queue.send(["poison"])
    for _ in range(3):
        queue.receive(10, visibility_timeout=0)
    assert queue.receive(10, visibility_timeout=0) == []

    def fail(letters: list[DeadLetter]) -> None:
        raise RuntimeError("the status store is unreachable")

    with pytest.raises(RuntimeError):
        queue.sweep_dead_letters(fail)
    swept: list[DeadLetter] = []
    assert queue.sweep_dead_letters(swept.extend) == 1
    assert [letter.body for letter in swept] == ["poison"]


def test_dead_letters_limit_and_order(queue: WorkQueue, kind: QueueKind) -> None:
    queue.send([f"m{i}" for i in range(5)])
    received = sorted(queue.receive(5, visibility_timeout=30), key=lambda m: m.body)
    assert len(received) == 5
    for message in received:
        queue.dead_letter(message, f"reason {message.body}")
    limited = [d.body for d in queue.dead_letters(limit=3)]
    assert len(set(limited)) == 3
    assert set(limited) <= {f"m{i}" for i in range(5)}
    if kind.name == "sqlite":  # SQS gives any three (oldest first, of those)
        assert limited == ["m0", "m1", "m2"]
    assert [d.reason for d in queue.dead_letters()] == [f"reason m{i}" for i in range(5)]
    assert queue.dead_letters(limit=0) == []
    assert queue.depth() == QueueDepth(visible=0, in_flight=0, dead=5)


def test_wait_seconds_waits_for_a_message(queue: WorkQueue) -> None:
    started = time.monotonic()
    assert queue.receive(1, visibility_timeout=30, wait_seconds=0.2) == []
    assert time.monotonic() - started >= 0.2
    sender = threading.Timer(0.1, lambda: queue.send(["late"]))
    sender.start()
    started = time.monotonic()
    try:
        messages = queue.receive(1, visibility_timeout=30, wait_seconds=5)
    finally:
        sender.join()
    assert [m.body for m in messages] == ["late"]
    assert time.monotonic() - started < 4  # it came as soon as it was sent


def test_queues_in_one_file_are_independent(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    work = SqliteQueue(path, "work", max_receive_count=1)
    deletes = SqliteQueue(path, "deletes", max_receive_count=1)
    try:
        work.send(["w1", "w2"])
        deletes.send(["d1"])
        assert work.depth() == QueueDepth(2, 0, 0)
        assert deletes.depth() == QueueDepth(1, 0, 0)
        assert [m.body for m in deletes.receive(10, visibility_timeout=0)] == ["d1"]
        assert deletes.receive(10, visibility_timeout=30) == []  # to the dead letters
        assert deletes.depth() == QueueDepth(0, 0, 1)
        assert work.depth() == QueueDepth(2, 0, 0)
        assert work.dead_letters() == []
        assert [m.body for m in work.receive(1, visibility_timeout=30)] == ["w1"]
        assert work.depth() == QueueDepth(1, 1, 0)
        assert deletes.depth() == QueueDepth(0, 0, 1)
        work.purge()
        assert work.depth() == QueueDepth(0, 0, 0)
        assert deletes.depth() == QueueDepth(0, 0, 1)
        assert [d.body for d in deletes.dead_letters()] == ["d1"]
    finally:
        work.close()
        deletes.close()


def test_messages_survive_reopening(kind: QueueKind) -> None:
    first = kind.new()
    first.send(["kept"])
    first.close()
    second = kind.again(first)
    assert [m.body for m in second.receive(10, visibility_timeout=30)] == ["kept"]


def test_a_queue_cannot_act_on_another_queues_message(kind: QueueKind) -> None:
    work = kind.new("run-1")
    other = kind.new("run-2")
    work.send(["w1", "w2", "w3"])
    first, second, third = work.receive(3, visibility_timeout=30)
    other.dead_letter(first, "not mine")
    other.delete([second])
    other.change_visibility(third, 0)
    assert work.depth() == QueueDepth(visible=0, in_flight=3, dead=0)
    assert other.depth() == QueueDepth(visible=0, in_flight=0, dead=0)
    assert other.dead_letters() == []


@pytest.mark.parametrize("shared", [True, False], ids=["one-connection", "connection-per-thread"])
def test_concurrent_receivers_never_share_a_message(kind: QueueKind, shared: bool) -> None:
    sender = kind.new()
    expected = [f"object-{i:03d}" for i in range(kind.messages)]
    sender.send(expected)
    received: list[list[Message]] = [[] for _ in range(8)]
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    shared_handle = kind.for_racing(sender, new_connection=False)

    def receiver(slot: int) -> None:
        queue = shared_handle if shared else kind.for_racing(sender, new_connection=True)
        try:
            start.wait()
            while True:
                messages = queue.receive(7, visibility_timeout=300)
                if not messages:
                    return
                received[slot].extend(messages)
                time.sleep(0.002)  # working on them, which lets the other receivers in
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=receiver, args=(slot,)) for slot in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    delivered = [m.body for messages in received for m in messages]
    assert len(delivered) == kind.messages
    assert sorted(delivered) == expected  # all delivered, none twice
    assert {m.receive_count for messages in received for m in messages} == {1}
    assert sum(1 for messages in received if messages) > 1  # the receivers did run at the same time
    assert sender.depth() == QueueDepth(visible=0, in_flight=kind.messages, dead=0)


def test_a_state_file_from_before_dead_letter_sweeps_is_upgraded(tmp_path: Path) -> None:
    """Its dead letters were recorded by the run that made them: the sweep hands over only new ones."""
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE queue_dead_letters (seq INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, "
            "body TEXT NOT NULL, reason TEXT NOT NULL, receive_count INTEGER NOT NULL, dead_at REAL NOT NULL)"
        )
        old.execute(
            "INSERT INTO queue_dead_letters (queue, body, reason, receive_count, dead_at) VALUES ('work', 'old', 'x', 6, 1)"
        )
    queue = SqliteQueue(path, max_receive_count=1)
    queue.send(["new"])
    assert [m.body for m in queue.receive(10, visibility_timeout=0)] == ["new"]
    assert queue.receive(10, visibility_timeout=0) == []  # moved to the dead letters by the queue itself
    swept: list[list[str]] = []
    assert queue.sweep_dead_letters(lambda letters: swept.append([letter.body for letter in letters])) == 1
    assert queue.sweep_dead_letters(lambda letters: swept.append([letter.body for letter in letters])) == 0
    assert swept == [["new"]]
    assert [letter.body for letter in queue.dead_letters()] == ["old", "new"]
