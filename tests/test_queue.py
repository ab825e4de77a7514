"""The embedded SQLite work queue, with the semantics of SQS."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dth.state.queue import DeadLetter, Message, QueueDepth, SqliteQueue

# Short enough to keep the tests fast, long enough that a slow machine does not see it expire early.
SHORT = 0.3


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[SqliteQueue]:
    work = SqliteQueue(tmp_path / "queue.db", "work", max_receive_count=3)
    yield work
    work.close()


def test_send_receive_delete(queue: SqliteQueue) -> None:
    queue.send(["a", "b", "c"])
    assert queue.depth() == QueueDepth(visible=3, in_flight=0, dead=0)
    messages = queue.receive(10, visibility_timeout=30)
    assert [m.body for m in messages] == ["a", "b", "c"]
    assert [m.receive_count for m in messages] == [1, 1, 1]
    assert len({m.message_id for m in messages}) == 3
    assert queue.depth() == QueueDepth(visible=0, in_flight=3, dead=0)
    assert queue.depth().pending == 3
    queue.delete(messages[:2])
    assert queue.depth() == QueueDepth(visible=0, in_flight=1, dead=0)
    queue.delete(messages[2:])
    assert queue.depth() == QueueDepth(0, 0, 0)
    assert queue.receive(10, visibility_timeout=30) == []


def test_receive_respects_max_messages_and_order(queue: SqliteQueue) -> None:
    queue.send([f"m{i}" for i in range(5)])
    assert queue.send([]) is None
    first = queue.receive(2, visibility_timeout=30)
    second = queue.receive(10, visibility_timeout=30)
    assert [m.body for m in first] == ["m0", "m1"]
    assert [m.body for m in second] == ["m2", "m3", "m4"]


def test_received_message_is_invisible_until_timeout_then_redelivered(queue: SqliteQueue) -> None:
    queue.send(["job"])
    (first,) = queue.receive(1, visibility_timeout=SHORT)
    assert queue.receive(1, visibility_timeout=SHORT) == []
    assert queue.depth() == QueueDepth(visible=0, in_flight=1, dead=0)
    time.sleep(SHORT + 0.1)
    assert queue.depth() == QueueDepth(visible=1, in_flight=0, dead=0)
    (second,) = queue.receive(1, visibility_timeout=30)
    assert second.body == "job"
    assert second.message_id == first.message_id
    assert second.receive_count == first.receive_count + 1 == 2
    assert second.receipt != first.receipt


def test_stale_receipt_does_not_delete(queue: SqliteQueue) -> None:
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


def test_change_visibility(queue: SqliteQueue) -> None:
    queue.send(["retry-now", "heartbeat"])
    retry, heartbeat = queue.receive(2, visibility_timeout=SHORT)
    queue.change_visibility(retry, 0)
    queue.change_visibility(heartbeat, 30)
    (again,) = queue.receive(10, visibility_timeout=30)
    assert again.body == "retry-now"
    assert again.receive_count == 2
    time.sleep(SHORT + 0.1)
    assert queue.receive(10, visibility_timeout=30) == []  # the heartbeat kept it hidden
    assert queue.depth() == QueueDepth(visible=0, in_flight=2, dead=0)
    # The receipt of the latest delivery still works.
    queue.delete([again, heartbeat])
    assert queue.depth() == QueueDepth(0, 0, 0)


def test_redrive_after_max_receive_count(queue: SqliteQueue) -> None:
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


def test_dead_letter_moves_at_once_with_reason(queue: SqliteQueue) -> None:
    queue.send(["bad", "good"])
    bad, good = queue.receive(2, visibility_timeout=30)
    queue.dead_letter(bad, "AccessDenied: not allowed to read the source")
    assert queue.depth() == QueueDepth(visible=0, in_flight=1, dead=1)
    assert queue.dead_letters() == [DeadLetter("bad", "AccessDenied: not allowed to read the source", 1)]
    # A dead-lettered message is gone from the queue: its receipt no longer acts on anything.
    queue.change_visibility(bad, 0)
    assert queue.receive(10, visibility_timeout=30) == []
    queue.delete([good])
    assert queue.depth() == QueueDepth(visible=0, in_flight=0, dead=1)


def test_dead_letters_limit_and_order(queue: SqliteQueue) -> None:
    queue.send([f"m{i}" for i in range(5)])
    for message in queue.receive(5, visibility_timeout=30):
        queue.dead_letter(message, f"reason {message.body}")
    assert [d.body for d in queue.dead_letters(limit=3)] == ["m0", "m1", "m2"]
    assert [d.reason for d in queue.dead_letters()] == [f"reason m{i}" for i in range(5)]


def test_wait_seconds_waits_for_a_message(queue: SqliteQueue) -> None:
    started = time.monotonic()
    assert queue.receive(1, visibility_timeout=30, wait_seconds=0.2) == []
    assert time.monotonic() - started >= 0.2
    sender = threading.Timer(0.1, lambda: queue.send(["late"]))
    sender.start()
    try:
        messages = queue.receive(1, visibility_timeout=30, wait_seconds=5)
    finally:
        sender.join()
    assert [m.body for m in messages] == ["late"]


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


def test_messages_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    first = SqliteQueue(path)
    first.send(["kept"])
    first.close()
    second = SqliteQueue(path)
    try:
        assert [m.body for m in second.receive(10, visibility_timeout=30)] == ["kept"]
    finally:
        second.close()


def test_a_queue_cannot_act_on_another_queues_message(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    work = SqliteQueue(path, "run-1")
    other = SqliteQueue(path, "run-2")
    try:
        work.send(["w1", "w2", "w3"])
        first, second, third = work.receive(3, visibility_timeout=30)
        other.dead_letter(first, "not mine")
        other.delete([second])
        other.change_visibility(third, 0)
        assert work.depth() == QueueDepth(visible=0, in_flight=3, dead=0)
        assert other.depth() == QueueDepth(visible=0, in_flight=0, dead=0)
    finally:
        work.close()
        other.close()


@pytest.mark.parametrize("shared", [True, False], ids=["one-connection", "connection-per-thread"])
def test_concurrent_receivers_never_share_a_message(tmp_path: Path, shared: bool) -> None:
    path = tmp_path / "queue.db"
    sender = SqliteQueue(path)
    bodies = [f"object-{i:03d}" for i in range(500)]
    sender.send(bodies)
    received: list[list[Message]] = [[] for _ in range(8)]
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def receiver(slot: int) -> None:
        queue = sender if shared else SqliteQueue(path)
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
        finally:
            if not shared:
                queue.close()

    threads = [threading.Thread(target=receiver, args=(slot,)) for slot in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert errors == []
        delivered = [m.body for messages in received for m in messages]
        assert len(delivered) == 500
        assert sorted(delivered) == bodies  # all delivered, none twice
        assert {m.receive_count for messages in received for m in messages} == {1}
        assert sum(1 for messages in received if messages) > 1  # the receivers did run at the same time
        assert sender.depth() == QueueDepth(visible=0, in_flight=500, dead=0)
    finally:
        sender.close()
