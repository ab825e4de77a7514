"""The SQLite status store: a record per object, and counters that stay exact under redelivery."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dth.spec.model import TransferCounters
from dth.state.store import ObjectResult, ObjectState, Operation, PlannedObject, SqliteStatusStore

COPY, DELETE = Operation.COPY, Operation.DELETE


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStatusStore]:
    status = SqliteStatusStore(tmp_path / "status.db")
    yield status
    status.close()


def planned(key: str, size: int = 0, skip_reason: str | None = None, operation: Operation = COPY) -> PlannedObject:
    return PlannedObject(key, operation, size, f"etag-{key}", skip_reason)


def copied(key: str, size: int) -> ObjectResult:
    return ObjectResult(key, COPY, ObjectState.COPIED, size, dest_etag=f"dest-{key}")


def test_plan_and_complete_count_exactly(store: SqliteStatusStore) -> None:
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


def test_completing_twice_counts_once(store: SqliteStatusStore) -> None:
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


def test_completing_within_one_batch_counts_once(store: SqliteStatusStore) -> None:
    run = store.start_run("task")
    store.plan(run, [planned("a", 10)])
    store.complete(run, [copied("a", 10), copied("a", 10)])
    assert store.counters(run) == TransferCounters(found=1, copied=1, bytes_found=10, bytes_copied=10)


def test_planning_twice_counts_once(store: SqliteStatusStore) -> None:
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


def test_count_unchanged_adds_to_found_and_skipped(store: SqliteStatusStore) -> None:
    run = store.start_run("task")
    store.plan(run, [planned("a", 10)])
    store.count_unchanged(run, 5, 500)
    store.count_unchanged(run, 2, 7)
    assert store.counters(run) == TransferCounters(found=8, skipped=7, bytes_found=517, bytes_skipped=507)
    assert store.records(run, [ObjectState.SKIPPED]) == []  # no record each


def test_skip_reason_counts_as_found_and_skipped_with_reason(store: SqliteStatusStore) -> None:
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


def test_failed_records_keep_last_error(store: SqliteStatusStore) -> None:
    run = store.start_run("task")
    store.plan(run, [planned("a", 10), planned("b", 20)])
    store.record_attempt(run, "a", COPY, "SlowDown")
    store.record_attempt(run, "a", COPY, "InternalError")
    (queued,) = [r for r in store.records(run, [ObjectState.QUEUED]) if r.key == "a"]
    assert (queued.attempts, queued.last_error) == (2, "InternalError")
    store.complete(run, [ObjectResult("a", COPY, ObjectState.FAILED, 10, reason="AccessDenied")])
    (failed,) = store.records(run, [ObjectState.FAILED])
    assert (failed.key, failed.attempts, failed.last_error, failed.reason) == ("a", 3, "AccessDenied", "AccessDenied")
    # A copy that succeeded after a failed attempt keeps the error as history.
    store.record_attempt(run, "b", COPY, "RequestTimeout")
    store.complete(run, [copied("b", 20)])
    (done,) = store.records(run, [ObjectState.COPIED])
    assert (done.attempts, done.last_error) == (2, "RequestTimeout")
    assert store.counters(run) == TransferCounters(found=2, copied=1, failed=1, bytes_found=30, bytes_copied=20)


def test_deletes_do_not_count_as_found(store: SqliteStatusStore) -> None:
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


def test_result_for_other_operation_does_not_complete(store: SqliteStatusStore) -> None:
    run = store.start_run("task")
    store.plan(run, [planned("a", 10)])
    store.complete(run, [ObjectResult("a", DELETE, ObjectState.DELETED, 10)])
    store.complete(run, [copied("never-planned", 3)])
    assert store.counters(run) == TransferCounters(found=1, bytes_found=10)
    assert [r.state for r in store.records(run, list(ObjectState))] == [ObjectState.QUEUED]


def test_counters_per_run_are_independent(store: SqliteStatusStore) -> None:
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


def test_scan_finished_and_unknown_run(store: SqliteStatusStore) -> None:
    run = store.start_run("task")
    assert not store.scan_finished(run)
    store.finish_scan(run)
    assert store.scan_finished(run)
    assert not store.scan_finished("no-such-run")
    with pytest.raises(KeyError):
        store.counters("no-such-run")


def test_records_limit_and_state_filter(store: SqliteStatusStore) -> None:
    run = store.start_run("task")
    store.plan(run, [planned(f"k{i}", i) for i in range(10)])
    store.complete(run, [copied(f"k{i}", i) for i in range(0, 10, 2)])
    assert [r.key for r in store.records(run, [ObjectState.QUEUED], limit=3)] == ["k1", "k3", "k5"]
    assert len(store.records(run, [ObjectState.COPIED, ObjectState.QUEUED])) == 10
    assert store.records(run, []) == []


def test_counters_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "status.db"
    first = SqliteStatusStore(path)
    run = first.start_run("task")
    first.plan(run, [planned("a", 10)])
    first.close()
    second = SqliteStatusStore(path)
    try:
        second.complete(run, [copied("a", 10)])
        assert second.counters(run) == TransferCounters(found=1, copied=1, bytes_found=10, bytes_copied=10)
    finally:
        second.close()


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


@settings(max_examples=200, deadline=None)
@given(events)
def test_counters_match_a_model(history: list[tuple[str, object, object]]) -> None:
    """Any interleaving of plans, (re)deliveries and unchanged counts gives the model's counters."""
    store = SqliteStatusStore(":memory:")
    try:
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
    finally:
        store.close()
