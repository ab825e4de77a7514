"""The status store's contract against both implementations: the embedded SQLite store and DynamoDB (on the
session's moto server, a fresh table for every test). A record per object, counters that stay exact under
redelivery and concurrency, the scan lock, giant-file parts and S3 event sequencers.

moto's server runs requests in threads without isolating them: a conditional write or a transaction racing
another can both pass its condition, and a cancelled transaction restores a copy of the whole table, undoing
what other requests wrote meanwhile (8 threads x 100 conditional transactions on 100 items: 109-118
"successes" and a counter of 96-103). DynamoDB runs each request atomically, so the concurrency tests give
the DynamoDB store a client that sends one request at a time: the threads still interleave their requests
in every order, which is what the store's protocols have to survive.
"""

from __future__ import annotations

import random
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
from hypothesis import given, settings
from hypothesis import strategies as st

from dth.devtools.moto import MotoServer
from dth.spec.model import TransferCounters
from dth.state.dynamodb import EXPIRY_ATTRIBUTE, DynamoStatusStore, create_table
from dth.state.queue import SqliteQueue
from dth.state.scanlock import ScanLock, ScanLockLostError
from dth.state.sqlite import SqliteDatabase
from dth.state.store import (
    ObjectResult,
    ObjectState,
    Operation,
    PlannedObject,
    SqliteStatusStore,
    StatusStore,
    UploadRecord,
)

COPY, DELETE = Operation.COPY, Operation.DELETE


def dynamodb_client(server: MotoServer) -> Any:
    return boto3.client(
        "dynamodb",
        endpoint_url=server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        config=Config(retries={"mode": "standard"}, max_pool_connections=20),
    )


class OneRequestAtATime:
    """A boto3 client that sends one request at a time through a lock shared by every copy: each request
    is atomic, as in DynamoDB (see the module's docstring)."""

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
class StoreKind:
    name: str
    make: Callable[[], StatusStore]  # a handle on this test's storage
    make_concurrent: Callable[[], StatusStore]  # a handle for threads racing each other
    opened: list[StatusStore] = field(default_factory=list)

    def open(self) -> StatusStore:
        store = self.make()
        self.opened.append(store)
        return store

    def open_concurrent(self) -> StatusStore:
        store = self.make_concurrent()
        self.opened.append(store)
        return store


@pytest.fixture(params=["sqlite", "dynamodb"])
def kind(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreKind]:
    if request.param == "sqlite":
        path = tmp_path / "status.db"
        made = StoreKind("sqlite", lambda: SqliteStatusStore(path), lambda: SqliteStatusStore(path))
        yield made
        for store in made.opened:
            store.close()
        return
    server: MotoServer = request.getfixturevalue("moto_server")
    client = dynamodb_client(server)
    table = f"t-{uuid.uuid4().hex[:8]}"
    create_table(client, table)
    lock = threading.Lock()
    made = StoreKind(
        "dynamodb",
        lambda: DynamoStatusStore(client, table),
        lambda: DynamoStatusStore(OneRequestAtATime(client, lock), table),
    )
    yield made
    for store in made.opened:
        store.close()
    client.delete_table(TableName=table)
    client.close()


@pytest.fixture
def store(kind: StoreKind) -> StatusStore:
    return kind.open()


def planned(key: str, size: int = 0, skip_reason: str | None = None, operation: Operation = COPY) -> PlannedObject:
    return PlannedObject(key, operation, size, f"etag-{key}", skip_reason)


def copied(key: str, size: int) -> ObjectResult:
    return ObjectResult(key, COPY, ObjectState.COPIED, size, dest_etag=f"dest-{key}")


def run_threads(count: int, target: Callable[[int], None]) -> None:
    """Run `target(slot)` in `count` threads started together; re-raise the first error."""
    start = threading.Barrier(count)
    errors: list[BaseException] = []

    def body(slot: int) -> None:
        try:
            start.wait()
            target(slot)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=body, args=(slot,)) for slot in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    if errors:
        raise errors[0]


# --- records and counters ---------------------------------------------------------------------


def test_plan_and_complete_count_exactly(store: StatusStore) -> None:
    run = store.start_run("task")
    store.plan(run, [planned("a", 10), planned("b", 20), planned("c", 30), planned("d", 40)])
    assert store.counters(run) == TransferCounters(found=4, bytes_found=100)
    store.complete(
        run,
        [
            copied("a", 10),
            copied("b", 20),
            ObjectResult("c", COPY, ObjectState.SKIPPED, 30, reason="already there"),
            ObjectResult("d", COPY, ObjectState.FAILED, 40, reason="AccessDenied"),
        ],
    )
    assert store.counters(run) == TransferCounters(
        found=4, copied=2, skipped=1, failed=1, bytes_found=100, bytes_copied=30, bytes_skipped=30
    )
    assert [(r.key, r.state) for r in store.records(run, list(ObjectState))] == [
        ("a", ObjectState.COPIED),
        ("b", ObjectState.COPIED),
        ("c", ObjectState.SKIPPED),
        ("d", ObjectState.FAILED),
    ]


def test_completing_twice_counts_once(store: StatusStore) -> None:
    run = store.start_run("task")
    store.plan(run, [planned("a", 10)])
    store.complete(run, [copied("a", 10)])
    store.complete(run, [copied("a", 10)])  # redelivered after a visibility timeout
    store.complete(run, [ObjectResult("a", COPY, ObjectState.FAILED, 10, reason="late failure")])
    assert store.counters(run) == TransferCounters(found=1, copied=1, bytes_found=10, bytes_copied=10)
    (record,) = store.records(run, [ObjectState.COPIED])
    assert record.attempts == 1
    assert record.last_error == ""
    assert store.records(run, [ObjectState.FAILED]) == []


def test_completing_within_one_batch_counts_once(store: StatusStore) -> None:
    run = store.start_run("task")
    store.plan(run, [planned("a", 10), planned("b", 1)])
    store.complete(run, [copied("a", 10), copied("a", 10), copied("b", 1)])
    assert store.counters(run) == TransferCounters(found=2, copied=2, bytes_found=11, bytes_copied=11)


def test_planning_twice_counts_once(store: StatusStore) -> None:
    run = store.start_run("task")
    store.plan(run, [planned("a", 10), planned("a", 10)])
    store.plan(run, [planned("a", 10), planned("b", 5)])  # a rescan after a restart
    assert store.counters(run) == TransferCounters(found=2, bytes_found=15)
    store.complete(run, [copied("a", 10)])
    store.plan(run, [planned("a", 10)])  # replanning does not reset a finished record
    assert [(r.key, r.state) for r in store.records(run, list(ObjectState))] == [
        ("a", ObjectState.COPIED),
        ("b", ObjectState.QUEUED),
    ]
    assert store.counters(run) == TransferCounters(found=2, copied=1, bytes_found=15, bytes_copied=10)


def test_large_batches_with_some_records_planned_before(store: StatusStore) -> None:
    run = store.start_run("task")
    # More records than one transaction takes (25), some of them planned or finished before.
    store.plan(run, [planned(f"k{i:02d}", 1) for i in range(0, 30, 3)])
    store.plan(run, [planned(f"k{i:02d}", 1) for i in range(30)])  # a third of them exist already
    assert store.counters(run) == TransferCounters(found=30, bytes_found=30)
    store.complete(run, [copied(f"k{i:02d}", 1) for i in range(0, 30, 2)])
    store.complete(run, [copied(f"k{i:02d}", 1) for i in range(30)])  # half of them are final already
    assert store.counters(run) == TransferCounters(found=30, copied=30, bytes_found=30, bytes_copied=30)
    assert len(store.records(run, [ObjectState.COPIED], limit=500)) == 30
    assert len(store.records(run, [ObjectState.COPIED], limit=7)) == 7


def test_count_unchanged_adds_to_found_and_skipped(store: StatusStore) -> None:
    run = store.start_run("task")
    store.plan(run, [planned("a", 10)])
    store.count_unchanged(run, 5, 500)
    store.count_unchanged(run, 2, 7)
    store.count_unchanged(run, 0, 0)
    assert store.counters(run) == TransferCounters(found=8, skipped=7, bytes_found=517, bytes_skipped=507)
    assert store.records(run, [ObjectState.SKIPPED]) == []  # no record each


def test_skip_reason_counts_as_found_and_skipped_with_reason(store: StatusStore) -> None:
    run = store.start_run("task")
    reason = "storage class GLACIER: restore the object before it can be copied"
    store.plan(run, [planned("cold", 100, skip_reason=reason), planned("warm", 1)])
    assert store.counters(run) == TransferCounters(found=2, skipped=1, bytes_found=101, bytes_skipped=100)
    (record,) = store.records(run, [ObjectState.SKIPPED])
    assert (record.key, record.operation, record.state, record.size) == ("cold", COPY, ObjectState.SKIPPED, 100)
    assert record.reason == reason
    assert record.etag == "etag-cold"
    assert [r.key for r in store.records(run, [ObjectState.QUEUED])] == ["warm"]
    # A stray result for it changes nothing: it was final from the start.
    store.complete(run, [copied("cold", 100)])
    assert store.counters(run) == TransferCounters(found=2, skipped=1, bytes_found=101, bytes_skipped=100)
    assert store.records(run, [ObjectState.SKIPPED])[0].reason == reason


def test_failed_records_keep_last_error(store: StatusStore) -> None:
    run = store.start_run("task")
    store.plan(run, [planned("a", 10), planned("b", 20)])
    before = time.time()
    store.record_attempt(run, "a", COPY, "SlowDown")
    store.record_attempt(run, "a", COPY, "InternalError")
    store.record_attempt(run, "never-planned", COPY, "InternalError")  # changes nothing
    (queued,) = [r for r in store.records(run, [ObjectState.QUEUED]) if r.key == "a"]
    assert (queued.attempts, queued.last_error) == (2, "InternalError")
    assert queued.updated >= before - 1
    store.complete(run, [ObjectResult("a", COPY, ObjectState.FAILED, 10, reason="AccessDenied")])
    (failed,) = store.records(run, [ObjectState.FAILED])
    assert (failed.key, failed.attempts, failed.last_error, failed.reason) == ("a", 3, "AccessDenied", "AccessDenied")
    # A copy that succeeded after a failed attempt keeps the error as history.
    store.record_attempt(run, "b", COPY, "RequestTimeout")
    store.complete(run, [copied("b", 20)])
    (done,) = store.records(run, [ObjectState.COPIED])
    assert (done.attempts, done.last_error) == (2, "RequestTimeout")
    assert store.counters(run) == TransferCounters(found=2, copied=1, failed=1, bytes_found=30, bytes_copied=20)
    assert [r.key for r in store.records(run, list(ObjectState))] == ["a", "b"]


def test_deletes_do_not_count_as_found(store: StatusStore) -> None:
    run = store.start_run("task")
    store.plan(run, [planned("gone", 50, operation=DELETE), planned("kept", 5)])
    assert store.counters(run) == TransferCounters(found=1, bytes_found=5)
    store.complete(run, [ObjectResult("gone", DELETE, ObjectState.DELETED, 50)])
    store.complete(run, [ObjectResult("gone", DELETE, ObjectState.DELETED, 50)])
    assert store.counters(run) == TransferCounters(found=1, deleted=1, bytes_found=5)
    (record,) = store.records(run, [ObjectState.DELETED])
    assert (record.key, record.operation) == ("gone", DELETE)
    # The same key as a copy and as a delete are two records.
    store.plan(run, [planned("gone", 50)])
    assert store.counters(run) == TransferCounters(found=2, deleted=1, bytes_found=55)
    assert [(r.key, r.operation) for r in store.records(run, list(ObjectState))] in (
        [("gone", COPY), ("gone", DELETE), ("kept", COPY)],
        [("gone", DELETE), ("gone", COPY), ("kept", COPY)],
    )


def test_result_for_other_operation_does_not_complete(store: StatusStore) -> None:
    run = store.start_run("task")
    store.plan(run, [planned("a", 10)])
    store.complete(run, [ObjectResult("a", DELETE, ObjectState.DELETED, 10)])
    store.complete(run, [copied("never-planned", 3)])
    assert store.counters(run) == TransferCounters(found=1, bytes_found=10)
    assert [r.state for r in store.records(run, list(ObjectState))] == [ObjectState.QUEUED]


def test_counters_per_run_are_independent(store: StatusStore) -> None:
    first = store.start_run("task")
    second = store.start_run("task")
    other_task = store.start_run("other")
    assert len({first, second, other_task}) == 3
    store.plan(first, [planned("a", 10), planned("b", 20)])
    store.plan(second, [planned("a", 10)])
    store.complete(first, [copied("a", 10)])
    store.count_unchanged(second, 3, 3)
    assert store.counters(first) == TransferCounters(found=2, copied=1, bytes_found=30, bytes_copied=10)
    assert store.counters(second) == TransferCounters(found=4, skipped=3, bytes_found=13, bytes_skipped=3)
    assert store.counters(other_task) == TransferCounters()
    assert [r.key for r in store.records(second, [ObjectState.QUEUED])] == ["a"]
    assert store.records(second, [ObjectState.COPIED]) == []


def test_scan_finished_and_unknown_run(store: StatusStore) -> None:
    run = store.start_run("task")
    assert not store.scan_finished(run)
    store.finish_scan(run)
    assert store.scan_finished(run)
    assert not store.scan_finished("no-such-run")
    with pytest.raises(KeyError):
        store.counters("no-such-run")


def test_a_failed_scan_ends_the_scan_with_its_reason(store: StatusStore) -> None:
    failed, fine = store.start_run("task"), store.start_run("task")
    store.fail_scan(failed, "destination bucket dst does not exist")
    store.finish_scan(fine)
    assert store.scan_finished(failed) and store.scan_error(failed) == "destination bucket dst does not exist"
    assert store.scan_error(fine) is None
    assert store.scan_error("no-such-run") is None


def test_a_state_file_from_before_scan_errors_is_upgraded(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE runs (run_id TEXT PRIMARY KEY, task TEXT NOT NULL, started REAL NOT NULL, "
            "scan_finished REAL, found INTEGER NOT NULL DEFAULT 0, copied INTEGER NOT NULL DEFAULT 0, "
            "skipped INTEGER NOT NULL DEFAULT 0, deleted INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0, "
            "bytes_found INTEGER NOT NULL DEFAULT 0, bytes_copied INTEGER NOT NULL DEFAULT 0, "
            "bytes_skipped INTEGER NOT NULL DEFAULT 0)"
        )
        old.execute("INSERT INTO runs (run_id, task, started) VALUES ('r1', 'task', 1)")
    store = SqliteStatusStore(path)
    assert store.scan_error("r1") is None
    store.fail_scan("r1", "access denied")
    assert store.scan_error("r1") == "access denied"


def test_records_limit_and_state_filter(store: StatusStore) -> None:
    run = store.start_run("task")
    store.plan(run, [planned(f"k{i}", i) for i in range(10)])
    store.complete(run, [copied(f"k{i}", i) for i in range(0, 10, 2)])
    assert [r.key for r in store.records(run, [ObjectState.QUEUED], limit=3)] == ["k1", "k3", "k5"]
    assert len(store.records(run, [ObjectState.COPIED, ObjectState.QUEUED])) == 10
    assert store.records(run, []) == []


def test_records_are_in_key_byte_order_and_keys_may_be_1024_bytes(store: StatusStore) -> None:
    run = store.start_run("task")
    longest = "k/" + "é" * 511  # 1024 bytes of UTF-8, S3's longest key
    keys = ["a", "a/b", "a b", "a#copy", "aé", "a\U0001f600", "A", "a\x7f", "b", longest]
    store.plan(run, [planned(key, 1) for key in keys])
    store.plan(run, [planned("a/b", 0, operation=DELETE), planned("a\x7f", 0, operation=DELETE)])
    records = store.records(run, [ObjectState.QUEUED])
    assert [r.key for r in records if r.operation is COPY] == sorted(keys, key=lambda k: k.encode())
    assert [r.key for r in records] == sorted([r.key for r in records], key=lambda k: k.encode())
    store.complete(run, [copied(longest, 1)])
    assert [r.key for r in store.records(run, [ObjectState.COPIED])] == [longest]
    assert store.counters(run) == TransferCounters(found=10, copied=1, bytes_found=10, bytes_copied=1)


def test_counters_survive_reopening(kind: StoreKind) -> None:
    first = kind.open()
    run = first.start_run("task")
    first.plan(run, [planned("a", 10)])
    first.close()
    second = kind.open()
    second.complete(run, [copied("a", 10)])
    assert second.counters(run) == TransferCounters(found=1, copied=1, bytes_found=10, bytes_copied=10)


def test_latest_run(store: StatusStore) -> None:
    assert store.latest_run("task") is None
    first = store.start_run("task")
    assert store.latest_run("task") == first
    time.sleep(0.01)
    second = store.start_run("task")
    other = store.start_run("task-2")  # a task whose name starts with the other's
    assert store.latest_run("task") == second
    assert store.latest_run("task-2") == other
    assert store.latest_run("tas") is None


def test_concurrent_plans_and_completes_of_the_same_keys_count_once(kind: StoreKind) -> None:
    """8 workers plan the same keys, then finish all of them in different orders with different outcomes
    (redeliveries racing each other): every key counts exactly once, for the outcome its record shows."""
    keys = [f"key-{i:02d}" for i in range(16)]
    size_of = {key: i + 1 for i, key in enumerate(keys)}
    one = kind.open_concurrent()
    run = one.start_run("task")
    handles = [kind.open_concurrent() for _ in range(8)]
    outcomes = [ObjectState.COPIED, ObjectState.FAILED, ObjectState.SKIPPED, ObjectState.COPIED]
    planning_done = threading.Barrier(8)

    def worker(slot: int) -> None:
        store = handles[slot]
        order = keys[:]
        random.Random(slot).shuffle(order)
        for start in range(0, len(order), 4):
            store.plan(run, [planned(key, size_of[key]) for key in order[start : start + 4]])
            time.sleep(0.005)  # let the others in (SQLite's busy wait would let one thread do it all)
        store.count_unchanged(run, 1, 1000)
        planning_done.wait()
        random.Random(100 + slot).shuffle(order)
        for start in range(0, len(order), 4):
            state = outcomes[(slot + start) % len(outcomes)]
            results = [
                ObjectResult(key, COPY, state, size_of[key], reason=f"by {slot}") for key in order[start : start + 4]
            ]
            store.complete(run, results)
            time.sleep(0.005)

    run_threads(8, worker)
    records = one.records(run, list(ObjectState))
    assert sorted(r.key for r in records) == keys
    assert all(r.attempts == 1 for r in records)  # only the first outcome touched a record
    by_state = {state: [r for r in records if r.state is state] for state in ObjectState}
    assert by_state[ObjectState.QUEUED] == []
    assert len({r.reason for r in records}) > 1  # several workers won some keys: they did race
    assert one.counters(run) == TransferCounters(
        found=16 + 8,
        copied=len(by_state[ObjectState.COPIED]),
        failed=len(by_state[ObjectState.FAILED]),
        skipped=len(by_state[ObjectState.SKIPPED]) + 8,
        bytes_found=sum(size_of.values()) + 8000,
        bytes_copied=sum(r.size for r in by_state[ObjectState.COPIED]),
        bytes_skipped=sum(r.size for r in by_state[ObjectState.SKIPPED]) + 8000,
    )


# --- one scan at a time per task ------------------------------------------------------------


def test_scan_lock_is_held_renewed_released_and_expires(store: StatusStore) -> None:
    assert store.acquire_scan_lock("task", "a", ttl_seconds=60)
    assert not store.acquire_scan_lock("task", "b", ttl_seconds=60)
    assert store.acquire_scan_lock("task", "a", ttl_seconds=60)  # renewed by its owner
    assert store.acquire_scan_lock("other-task", "b", ttl_seconds=60)  # per task
    store.release_scan_lock("task", "b")  # not b's to release
    assert not store.acquire_scan_lock("task", "b", ttl_seconds=60)
    store.release_scan_lock("task", "a")
    assert store.acquire_scan_lock("task", "b", ttl_seconds=1.5)
    assert not store.acquire_scan_lock("task", "a", ttl_seconds=60)
    time.sleep(1.6)  # b stopped renewing it: the lock expires
    assert store.acquire_scan_lock("task", "a", ttl_seconds=60)
    assert not store.acquire_scan_lock("task", "b", ttl_seconds=60)


def test_a_scan_lock_taken_over_by_another_finder_is_noticed_and_never_taken_back(store: StatusStore) -> None:
    lock = ScanLock(store, "task", "finder-a", ttl_seconds=0.9)
    assert lock.acquire()
    lock.check()  # held
    # As if finder-a had stalled past the lock's expiry and finder-b had started a scan meanwhile.
    store.release_scan_lock("task", "finder-a")
    assert store.acquire_scan_lock("task", "finder-b", ttl_seconds=60)
    with lock.renewing():
        assert lock.wait_lost(timeout=30)
        with pytest.raises(ScanLockLostError, match="another scan of task 'task' holds it"):
            lock.check()
    assert not store.acquire_scan_lock("task", "finder-c", ttl_seconds=60)  # finder-b's lock was left alone


def test_a_stale_scan_lock_is_confirmed_before_the_scan_goes_on(store: StatusStore) -> None:
    """`check` does not trust a lock older than its time to live (the finder may have been paused): it asks the
    store, and goes on only if the lock is still its own."""
    lock = ScanLock(store, "task", "finder-a", ttl_seconds=1)
    assert lock.acquire()
    time.sleep(1.1)  # no renewals: expired
    lock.check()  # nobody else took it: renewed, and the scan goes on
    assert not store.acquire_scan_lock("task", "finder-b", ttl_seconds=60)
    time.sleep(1.1)
    assert store.acquire_scan_lock("task", "finder-b", ttl_seconds=60)
    with pytest.raises(ScanLockLostError):
        lock.check()


def test_scans_left_unfinished_by_a_dead_finder_are_closed_by_the_next(store: StatusStore) -> None:
    finished = store.start_run("task")
    store.finish_scan(finished)
    time.sleep(0.01)
    stale = store.start_run("task")  # its finder was killed mid-scan: "scanning" for ever
    other = store.start_run("task-2")  # another task's scan is none of this one's business
    assert store.close_unfinished_scans("task", "interrupted") == [stale]
    assert store.scan_finished(stale) and store.scan_error(stale) == "interrupted"
    assert store.scan_finished(finished) and store.scan_error(finished) is None
    assert not store.scan_finished(other)
    assert store.close_unfinished_scans("task", "again") == []
    assert store.scan_error(stale) == "interrupted"


# --- history -----------------------------------------------------------------------------------


def test_sqlite_keeps_only_the_last_runs_of_a_task(tmp_path: Path) -> None:
    database = SqliteDatabase(tmp_path / "status.db")
    store = SqliteStatusStore(database, keep_runs=3)
    other = store.start_run("other-task")
    runs = []
    for number in range(5):
        run = store.start_run("task")
        runs.append(run)
        store.plan(run, [planned(f"key-{number}", 10)])
        store.start_parts(run, "giant", "upload-1", 2)
        store.finish_part(run, "giant", 1, "etag-1")
        # A standalone sync's queue is named after its run, in the same file: its dead letters go with the run.
        queue = SqliteQueue(database, name=run, max_receive_count=1)
        queue.send(["work"])
        assert queue.receive(1, visibility_timeout=0)
        assert queue.receive(1, visibility_timeout=0) == []  # dead-lettered
        time.sleep(0.01)
    kept, pruned = runs[-3:], runs[:-3]
    assert store.latest_run("task") == runs[-1]
    for run in kept:
        assert store.counters(run).found == 1
        assert SqliteQueue(database, name=run).depth().dead == 1
    for run in pruned:
        with pytest.raises(KeyError):
            store.counters(run)
        assert store.records(run, list(ObjectState)) == []
        assert SqliteQueue(database, name=run).dead_letters() == []
    with database.reading() as db:
        uploads = {row[0] for row in db.execute("SELECT DISTINCT run_id FROM uploads")}
        parts = {row[0] for row in db.execute("SELECT DISTINCT run_id FROM upload_parts")}
    assert uploads == parts == set(kept)
    assert store.counters(other) == TransferCounters()  # another task's runs are its own
    store.close()


def test_dynamodb_items_carry_an_expiry_and_the_table_expires_them(moto_server: MotoServer) -> None:
    client = dynamodb_client(moto_server)
    table = f"t-{uuid.uuid4().hex[:8]}"
    create_table(client, table)
    try:
        described = client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
        assert described == {"TimeToLiveStatus": "ENABLED", "AttributeName": EXPIRY_ATTRIBUTE}
        store = DynamoStatusStore(client, table, history_days=30)
        before = time.time()
        earlier = store.start_run("task")
        time.sleep(0.01)
        run = store.start_run("task")
        store.plan(run, [planned("a", 10), planned("b", 0, operation=DELETE)])
        store.complete(run, [copied("a", 10)])
        store.record_attempt(run, "b", DELETE, "throttled")
        store.start_parts(run, "giant", "upload-1", 2)
        store.finish_part(run, "giant", 1, "etag-1")
        store.newer_event("task", "a", "00A1")
        assert store.acquire_scan_lock("task", "finder", 60)
        after = time.time()
        items = client.scan(TableName=table)["Items"]
        assert len(items) == 10  # 2 x (run, task index), 2 records, upload, part, event, lock
        expiries = {f"{item['pk']['S']} {item['sk']['S']}": item.get(EXPIRY_ATTRIBUTE, {}).get("N") for item in items}
        # The latest run keeps its outcome (a task that ran once shows it for good) until a newer run starts.
        latest = {name for name in expiries if name == f"RUN#{run} RUN" or name.endswith(f"#{run}")}
        assert len(latest) == 2
        assert all(expiries[name] is None for name in latest), expiries
        month = 30 * 86400
        expiring = {name: value for name, value in expiries.items() if name not in latest}
        assert f"RUN#{earlier} RUN" in expiring
        assert all(
            value is not None and before + month - 1 <= int(value) <= after + month for value in expiring.values()
        ), expiries
    finally:
        client.delete_table(TableName=table)


# --- giant objects, part by part -------------------------------------------------------------


def test_parts_are_returned_once_to_the_last_part(store: StatusStore) -> None:
    run = store.start_run("task")
    assert store.start_parts(run, "big", "upload-1", 3) == "upload-1"
    assert store.start_parts(run, "big", "upload-2", 3) == "upload-1"  # the first registration wins
    assert store.start_parts(run, "other", "upload-3", 1) == "upload-3"
    other_run = store.start_run("task")
    assert store.start_parts(other_run, "big", "upload-4", 2) == "upload-4"
    assert store.finish_part(run, "big", 2, "etag-2") is None
    assert store.finish_part(run, "big", 2, "etag-2") is None  # a redelivery counts once
    assert store.finish_part(run, "big", 3, "etag-3") is None
    assert store.finish_part(other_run, "big", 1, "other-1") is None
    parts = [(1, "etag-1"), (2, "etag-2"), (3, "etag-3")]
    assert store.finish_part(run, "big", 1, "etag-1") == parts
    # The last part's redelivery gets them again (its worker may have died before completing); no other does.
    assert store.finish_part(run, "big", 1, "etag-1") == parts
    assert store.finish_part(run, "big", 3, "etag-3") is None
    assert store.finish_part(run, "other", 1, "only") == [(1, "only")]
    with pytest.raises(KeyError):
        store.finish_part(run, "never-started", 1, "etag")
    assert store.finish_part(other_run, "big", 2, "other-2") == [(1, "other-1"), (2, "other-2")]


def test_parts_go_to_exactly_one_of_8_threads_racing_on_the_last_parts(kind: StoreKind) -> None:
    one = kind.open_concurrent()
    run = one.start_run("task")
    handles = [kind.open_concurrent() for _ in range(8)]
    rounds, total = 2, 16
    for number in range(rounds):
        one.start_parts(run, f"big-{number}", f"upload-{number}", total)
        for part in range(1, 9):  # parts 1-8 done: 8 left, one for each thread
            assert one.finish_part(run, f"big-{number}", part, f"etag-{part}") is None
    winners: dict[int, list[tuple[int, list[tuple[int, str]]]]] = {number: [] for number in range(rounds)}
    lock = threading.Lock()

    def worker(slot: int) -> None:
        store = handles[slot]
        for number in range(rounds):
            # Its own last part, and a redelivery of a part done before (a part number no other thread
            # uses: the same part again may get the parts again), racing the other 7 threads.
            for part in (9 + slot, 1 + slot):
                parts = store.finish_part(run, f"big-{number}", part, f"etag-{part}")
                if parts is not None:
                    with lock:
                        winners[number].append((part, parts))

    run_threads(8, worker)
    expected = [(part, f"etag-{part}") for part in range(1, total + 1)]
    for number in range(rounds):
        assert len(winners[number]) == 1, winners[number]
        ((winner, parts),) = winners[number]
        assert parts == expected
        # Its worker may die before completing the upload: the same part again gets them again, no other.
        assert one.finish_part(run, f"big-{number}", winner, f"etag-{winner}") == expected
        assert one.finish_part(run, f"big-{number}", 1 + winner % total, "etag") is None


# --- S3 event notifications ------------------------------------------------------------------


def test_newer_event_compares_sequencers_of_different_lengths_as_numbers(store: StatusStore) -> None:
    assert store.newer_event("task", "k", "0055AED6DCD90281E5")
    assert store.newer_event("task", "k", "0055AED6DCD90281E5")  # the same event again
    assert not store.newer_event("task", "k", "0055AED6DCD90281E4")
    assert not store.newer_event("task", "k", "FF")  # shorter: a smaller number
    assert not store.newer_event("task", "k", "0000000055AED6DCD90281E4")  # zero-padded, still older
    assert store.newer_event("task", "k", "0055aed6dcd90281e6")  # case does not matter
    assert store.newer_event("task", "k", "000000000000000055AED6DCD90281E7")  # longer, but zero-padded
    assert not store.newer_event("task", "k", "55AED6DCD90281E6")
    assert store.newer_event("task", "k", "100000000000000000")  # more digits: larger
    assert not store.newer_event("task", "k", "FFFFFFFFFFFFFFFFF")  # 17 digits < 18 digits
    assert store.newer_event("task", "k", "1" + "0" * 70)  # far longer than any S3 sequencer
    assert not store.newer_event("task", "k", "F" * 70)
    # Per key and per task.
    assert store.newer_event("task", "other", "01")
    assert store.newer_event("task-2", "k", "01")
    assert not store.newer_event("task", "other", "00")


# --- a model of the whole account ---------------------------------------------------------------

KEYS = [f"key-{i}" for i in range(6)]
events = st.lists(
    st.one_of(
        st.tuples(st.just("plan"), st.sampled_from(KEYS), st.booleans()),
        st.tuples(st.just("plan-delete"), st.sampled_from(KEYS), st.just(False)),
        st.tuples(st.just("complete"), st.sampled_from(KEYS), st.sampled_from(list(ObjectState))),
        st.tuples(st.just("unchanged"), st.integers(0, 3), st.integers(0, 100)),
    ),
    max_size=40,
)


def check_against_model(store: StatusStore, history: list[tuple[str, object, object]]) -> None:
    run = store.start_run("task")
    states: dict[tuple[str, Operation], ObjectState] = {}
    expected = dict.fromkeys(TransferCounters.model_fields, 0)
    size_of = {key: number + 1 for number, key in enumerate(KEYS)}
    for event, first, second in history:
        if event == "plan":
            assert isinstance(first, str)
            skip = "archived" if second else None
            store.plan(run, [planned(first, size_of[first], skip_reason=skip)])
            if (first, COPY) not in states:
                states[first, COPY] = ObjectState.SKIPPED if skip else ObjectState.QUEUED
                expected["found"] += 1
                expected["bytes_found"] += size_of[first]
                if skip:
                    expected["skipped"] += 1
                    expected["bytes_skipped"] += size_of[first]
        elif event == "plan-delete":
            assert isinstance(first, str)
            store.plan(run, [planned(first, size_of[first], operation=DELETE)])
            states.setdefault((first, DELETE), ObjectState.QUEUED)
        elif event == "complete":
            assert isinstance(first, str) and isinstance(second, ObjectState)
            if second is ObjectState.QUEUED:
                continue  # not a final outcome
            operation = DELETE if second is ObjectState.DELETED else COPY
            store.complete(run, [ObjectResult(first, operation, second, size_of[first])])
            if states.get((first, operation)) is ObjectState.QUEUED:
                states[first, operation] = second
                expected[second.value] += 1
                if second is ObjectState.COPIED:
                    expected["bytes_copied"] += size_of[first]
                elif second is ObjectState.SKIPPED:
                    expected["bytes_skipped"] += size_of[first]
        else:
            assert isinstance(first, int) and isinstance(second, int)
            store.count_unchanged(run, first, second)
            expected["found"] += first
            expected["skipped"] += first
            expected["bytes_found"] += second
            expected["bytes_skipped"] += second
    assert store.counters(run) == TransferCounters(**expected)
    recorded = {(r.key, r.operation): r.state for r in store.records(run, list(ObjectState))}
    assert recorded == states


@settings(max_examples=200, deadline=None)
@given(events)
def test_counters_match_a_model(history: list[tuple[str, object, object]]) -> None:
    """Any interleaving of plans, (re)deliveries and unchanged counts gives the model's counters."""
    store = SqliteStatusStore(":memory:")
    try:
        check_against_model(store, history)
    finally:
        store.close()


@pytest.fixture(scope="module")
def dynamo_store(moto_server: MotoServer) -> Iterator[DynamoStatusStore]:
    client = dynamodb_client(moto_server)
    table = f"t-{uuid.uuid4().hex[:8]}"
    create_table(client, table)
    yield DynamoStatusStore(client, table)
    client.delete_table(TableName=table)
    client.close()


@settings(max_examples=15, deadline=None)
@given(events)
def test_dynamodb_counters_match_a_model(
    dynamo_store: DynamoStatusStore, history: list[tuple[str, object, object]]
) -> None:
    """The same model against DynamoDB, with fewer examples (each is a fresh run in one table)."""
    check_against_model(dynamo_store, history)


def test_the_empty_key_of_a_folder_marker_at_the_prefix_is_a_record_like_any_other(store: StatusStore) -> None:
    """A source prefix `app/` holding an object `app/` gives the relative key "" (DynamoDB refuses an empty
    sort key): it is planned, counted, finished and listed (first, as it sorts) like every other key."""
    run = store.start_run("task")
    store.plan(run, [planned("", 0), planned("a", 1), planned("", 0, operation=DELETE)])
    assert store.counters(run) == TransferCounters(found=2, bytes_found=1)
    store.record_attempt(run, "", COPY, "SlowDown")
    store.complete(run, [copied("", 0), ObjectResult("", DELETE, ObjectState.DELETED)])
    store.complete(run, [copied("", 0)])  # a redelivery counts once
    assert store.counters(run) == TransferCounters(found=2, copied=1, deleted=1, bytes_found=1)
    records = store.records(run, list(ObjectState))
    assert [(r.key, r.operation, r.state) for r in records][-1] == ("a", COPY, ObjectState.QUEUED)
    assert sorted((r.operation, r.state, r.attempts) for r in records if r.key == "") == [
        (COPY, ObjectState.COPIED, 2),
        (DELETE, ObjectState.DELETED, 1),
    ]
    assert store.start_parts(run, "", "upload-1", 1) == "upload-1"
    assert store.finish_part(run, "", 1, "etag-1") == [(1, "etag-1")]


def test_uploads_in_progress_are_recorded_per_task_until_forgotten(kind: StoreKind) -> None:
    store = kind.open()
    first = UploadRecord("", "upload-1", "dst", "backup/", "etag-a", False, 1.0)
    second = UploadRecord("big.bin", "upload-2", "dst", "backup/big.bin", "etag-b-3", True, 2.0)
    store.record_upload("task", second)
    store.record_upload("task", first)
    store.record_upload("task-2", UploadRecord("x", "upload-3", "dst", "x", "etag-c", False, 3.0))
    assert store.uploads("task") == [first, second]
    store.forget_upload("task", "upload-1")
    store.forget_upload("task", "upload-3")  # another task's: not this one's to forget
    store.forget_upload("task", "never-recorded")
    reopened = kind.open()
    assert reopened.uploads("task") == [second]
    assert [upload.upload_id for upload in reopened.uploads("task-2")] == ["upload-3"]
    assert reopened.uploads("no-such-task") == []


def test_an_aborted_giant_upload_is_marked_for_its_other_parts(store: StatusStore) -> None:
    run = store.start_run("task")
    store.start_parts(run, "big", "upload-1", 3)
    store.start_parts(run, "", "upload-2", 2)
    assert not store.parts_aborted(run, "big")
    store.abort_parts(run, "big")
    store.abort_parts(run, "big")
    assert store.parts_aborted(run, "big")
    assert not store.parts_aborted(run, "")
    assert not store.parts_aborted(run, "never-started")


def test_a_state_file_from_before_aborted_giant_uploads_is_upgraded(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE uploads (run_id TEXT NOT NULL, key TEXT NOT NULL, upload_id TEXT NOT NULL, "
            "total_parts INTEGER NOT NULL, completed_by INTEGER, PRIMARY KEY (run_id, key))"
        )
        old.execute("INSERT INTO uploads (run_id, key, upload_id, total_parts) VALUES ('r1', 'big', 'u1', 2)")
    store = SqliteStatusStore(path)
    assert not store.parts_aborted("r1", "big")
    store.abort_parts("r1", "big")
    assert store.parts_aborted("r1", "big")
