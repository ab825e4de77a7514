"""The status store: a record per object of work, and exact counters per run.

Counters move only when a record changes state for the first time, so a message that is
delivered twice (a worker died, a visibility timeout ran out) is never counted twice.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from dth.spec.model import TransferCounters
from dth.state.sqlite import SqliteDatabase

log = logging.getLogger(__name__)


class Operation(StrEnum):
    COPY = "copy"
    DELETE = "delete"


class ObjectState(StrEnum):
    QUEUED = "queued"
    COPIED = "copied"
    DELETED = "deleted"
    SKIPPED = "skipped"
    FAILED = "failed"


FINAL_STATES = frozenset({ObjectState.COPIED, ObjectState.DELETED, ObjectState.SKIPPED, ObjectState.FAILED})


@dataclass(frozen=True)
class PlannedObject:
    key: str
    operation: Operation
    size: int
    etag: str
    # Objects that cannot be copied (archived in Glacier) are planned as skipped, with the reason.
    skip_reason: str | None = None


@dataclass(frozen=True)
class ObjectResult:
    key: str
    operation: Operation
    state: ObjectState
    size: int = 0
    dest_etag: str = ""
    reason: str = ""


@dataclass(frozen=True)
class ObjectRecord:
    key: str
    operation: Operation
    state: ObjectState
    size: int
    etag: str
    attempts: int
    reason: str
    last_error: str
    updated: float


@dataclass(frozen=True)
class UploadRecord:
    """A multipart upload the engine started at the destination, recorded before its first part: a process
    killed mid-copy leaves the upload and its stored parts, and the next run resumes or aborts it."""

    key: str  # relative to the task's source prefix
    upload_id: str
    bucket: str  # where the upload is: the destination bucket and key it was started in
    dest_key: str
    etag: str  # the source version it copies
    mark: bool  # whether it was started with the source ETag in its metadata
    started: float


class StatusStore(ABC):
    @abstractmethod
    def start_run(self, task: str) -> str:
        """A new run of the task; returns its id."""

    @abstractmethod
    def plan(self, run_id: str, objects: Sequence[PlannedObject]) -> None:
        """Record work the finder queued; planning the same key twice counts it once."""

    @abstractmethod
    def count_unchanged(self, run_id: str, objects: int, size: int) -> None:
        """Source objects already at the destination: found and skipped, without a record each."""

    @abstractmethod
    def record_attempt(self, run_id: str, key: str, operation: Operation, error: str) -> None:
        """A failed attempt that will be retried."""

    @abstractmethod
    def complete(self, run_id: str, results: Sequence[ObjectResult]) -> None:
        """Final outcomes; only the first final outcome of a record counts."""

    @abstractmethod
    def finish_scan(self, run_id: str) -> None: ...

    @abstractmethod
    def scan_finished(self, run_id: str) -> bool: ...

    @abstractmethod
    def fail_scan(self, run_id: str, reason: str) -> None:
        """The scan could not run or finish (a missing bucket, a refused credential): it ends here, and the
        reason is what status reports show."""

    @abstractmethod
    def scan_error(self, run_id: str) -> str | None:
        """Why the run's scan failed; None when it did not."""

    @abstractmethod
    def close_unfinished_scans(self, task: str, reason: str) -> list[str]:
        """End the task's scans that never finished (their finder died: a new finder holds the scan lock, so
        none of them is still running) as failed with `reason`, so that no run stays "scanning" for ever.
        Returns their run ids, oldest first."""

    @abstractmethod
    def counters(self, run_id: str) -> TransferCounters: ...

    @abstractmethod
    def records(self, run_id: str, states: Sequence[ObjectState], limit: int = 1000) -> list[ObjectRecord]: ...

    @abstractmethod
    def latest_run(self, task: str) -> str | None:
        """The id of the task's most recent run, for status reports."""

    # --- one scan at a time per task ------------------------------------------------------

    @abstractmethod
    def acquire_scan_lock(self, task: str, owner: str, ttl_seconds: float) -> bool:
        """Take (or renew, for the same owner) the task's scan lock; False while another owner holds
        it. A lock whose owner stopped renewing it expires after `ttl_seconds`."""

    @abstractmethod
    def release_scan_lock(self, task: str, owner: str) -> None: ...

    # --- giant objects, copied part by part by many workers ----------------------------------

    @abstractmethod
    def start_parts(self, run_id: str, key: str, upload_id: str, total_parts: int) -> str:
        """Register a multipart upload for the key; returns the upload id that is registered (an
        earlier registration wins, so a repeated call reuses the first upload)."""

    @abstractmethod
    def finish_part(self, run_id: str, key: str, part_number: int, etag: str) -> list[tuple[int, str]] | None:
        """Record a copied part. Returns every part (number, ETag) to the one call that records the
        last missing part, and None to all others: exactly one worker completes the upload. A
        redelivery of that last part gets the parts again, in case its worker died before completing."""

    @abstractmethod
    def abort_parts(self, run_id: str, key: str) -> None:
        """The giant object's upload was aborted (a part failed for good): its other parts are not to be copied."""

    @abstractmethod
    def parts_aborted(self, run_id: str, key: str) -> bool: ...

    # --- multipart uploads in progress, per task ------------------------------------------------

    @abstractmethod
    def record_upload(self, task: str, upload: UploadRecord) -> None:
        """Remember an upload the task started, before its first part is sent."""

    @abstractmethod
    def forget_upload(self, task: str, upload_id: str) -> None:
        """The upload was completed or aborted: nothing is left of it to resume or abort."""

    @abstractmethod
    def uploads(self, task: str) -> list[UploadRecord]:
        """The task's uploads that were started and neither completed nor aborted, oldest first."""

    # --- S3 event notifications ---------------------------------------------------------------

    @abstractmethod
    def newer_event(self, task: str, key: str, sequencer: str) -> bool:
        """Whether an event with this sequencer is not older than any seen for the key (and remember it).
        The same sequencer again is a redelivery of the same event, so it passes too."""

    def close(self) -> None:  # noqa: B027 - optional for implementations without resources
        """Release connections."""


def sequencer_order(sequencer: str) -> tuple[int, str]:
    """S3 sequencers are hex strings of varying length; compare them as numbers would compare."""
    digits = sequencer.lstrip("0").lower()
    return len(digits), digits


_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    started REAL NOT NULL,
    scan_finished REAL,
    scan_error TEXT,
    found INTEGER NOT NULL DEFAULT 0,
    copied INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    bytes_found INTEGER NOT NULL DEFAULT 0,
    bytes_copied INTEGER NOT NULL DEFAULT 0,
    bytes_skipped INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS objects (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    operation TEXT NOT NULL,
    state TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    dest_etag TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    last_error TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL,
    PRIMARY KEY (run_id, key, operation)
);
CREATE INDEX IF NOT EXISTS objects_by_state ON objects (run_id, state);
CREATE TABLE IF NOT EXISTS scan_locks (task TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS uploads (
    run_id TEXT NOT NULL, key TEXT NOT NULL, upload_id TEXT NOT NULL, total_parts INTEGER NOT NULL,
    completed_by INTEGER, aborted INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (run_id, key)
);
CREATE TABLE IF NOT EXISTS upload_parts (
    run_id TEXT NOT NULL, key TEXT NOT NULL, part_number INTEGER NOT NULL, etag TEXT NOT NULL,
    PRIMARY KEY (run_id, key, part_number)
);
CREATE TABLE IF NOT EXISTS task_uploads (
    task TEXT NOT NULL, upload_id TEXT NOT NULL, key TEXT NOT NULL, bucket TEXT NOT NULL, dest_key TEXT NOT NULL,
    etag TEXT NOT NULL, mark INTEGER NOT NULL, started REAL NOT NULL, PRIMARY KEY (task, upload_id)
);
CREATE TABLE IF NOT EXISTS event_sequencers (
    task TEXT NOT NULL, key TEXT NOT NULL, sequencer TEXT NOT NULL, PRIMARY KEY (task, key)
);
"""

# Which counter, and which byte counter, a final state moves.
_STATE_COUNTERS: dict[ObjectState, tuple[str, str | None]] = {
    ObjectState.COPIED: ("copied", "bytes_copied"),
    ObjectState.SKIPPED: ("skipped", "bytes_skipped"),
    ObjectState.DELETED: ("deleted", None),
    ObjectState.FAILED: ("failed", None),
}


#: Runs of a task the SQLite store keeps by default (the newest; older ones are deleted as a run starts).
DEFAULT_KEEP_RUNS = 20


class _RunTotals:
    """A batch's additions to a run's counters, written with one UPDATE at the end of the batch's transaction
    (it was one UPDATE per object: a third of a batch's statements)."""

    def __init__(self) -> None:
        self._amounts: dict[str, int] = {}

    def add(self, counter: str, byte_counter: str | None, size: int) -> None:
        self._amounts[counter] = self._amounts.get(counter, 0) + 1
        if byte_counter:
            self._amounts[byte_counter] = self._amounts.get(byte_counter, 0) + size

    def write(self, db: sqlite3.Connection, run_id: str) -> None:
        if not self._amounts:
            return
        columns = sorted(self._amounts)  # the names come from _STATE_COUNTERS and the code above, never from input
        assignments = ", ".join(f"{column} = {column} + ?" for column in columns)
        db.execute(
            f"UPDATE runs SET {assignments} WHERE run_id = ?",
            (*(self._amounts[column] for column in columns), run_id),
        )


class SqliteStatusStore(StatusStore):
    """The embedded default, in a local SQLite file. Starting a run deletes the task's runs beyond the newest
    `keep_runs` (None: keep every run), with their records, uploads and run-named queues."""

    def __init__(self, path: Path | str | SqliteDatabase, *, keep_runs: int | None = DEFAULT_KEEP_RUNS) -> None:
        if keep_runs is not None and keep_runs < 1:
            raise ValueError(f"keep_runs must be at least 1, got {keep_runs}")
        self._keep_runs = keep_runs
        # A database shared with the queue: one connection, so the two never wait on each other's file lock.
        self._db = path if isinstance(path, SqliteDatabase) else SqliteDatabase(path)
        self._db.executescript(_SCHEMA)
        with self._db.transaction() as db:
            columns = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
            if "scan_error" not in columns:  # a state file written before scan errors were recorded
                db.execute("ALTER TABLE runs ADD COLUMN scan_error TEXT")
            if "aborted" not in {row[1] for row in db.execute("PRAGMA table_info(uploads)")}:
                db.execute("ALTER TABLE uploads ADD COLUMN aborted INTEGER NOT NULL DEFAULT 0")

    def start_run(self, task: str) -> str:
        run_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
        with self._db.transaction() as db:
            db.execute("INSERT INTO runs (run_id, task, started) VALUES (?, ?, ?)", (run_id, task, time.time()))
            if self._keep_runs is not None:
                self._prune(db, task, self._keep_runs)
        return run_id

    @staticmethod
    def _prune(db: sqlite3.Connection, task: str, keep: int) -> None:
        old = [
            str(row[0])
            for row in db.execute(
                "SELECT run_id FROM runs WHERE task = ? ORDER BY started DESC, run_id DESC LIMIT -1 OFFSET ?",
                (task, keep),
            )
        ]
        if not old:
            return
        marks = ",".join("?" * len(old))
        for table in ("objects", "uploads", "upload_parts", "runs"):
            db.execute(f"DELETE FROM {table} WHERE run_id IN ({marks})", old)
        # A standalone sync names its queue after its run, in this same file (dth.s3.sync): its leftovers
        # (dead letters) go with the run. The queue's tables exist only once a queue was opened here.
        tables = {str(row[0]) for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for table in ("queue_messages", "queue_dead_letters"):
            if table in tables:
                db.execute(f"DELETE FROM {table} WHERE queue IN ({marks})", old)
        log.info("old runs deleted", extra={"task": task, "runs": len(old), "kept": keep})

    def plan(self, run_id: str, objects: Sequence[PlannedObject]) -> None:
        now = time.time()
        totals = _RunTotals()
        with self._db.transaction() as db:
            for item in objects:
                state = ObjectState.SKIPPED if item.skip_reason else ObjectState.QUEUED
                inserted = db.execute(
                    "INSERT OR IGNORE INTO objects (run_id, key, operation, state, size, etag, reason, updated) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        run_id,
                        item.key,
                        item.operation,
                        state,
                        item.size,
                        item.etag,
                        item.skip_reason or "",
                        now,
                    ),
                ).rowcount
                if not inserted or item.operation is not Operation.COPY:
                    continue
                totals.add("found", "bytes_found", item.size)
                if item.skip_reason:
                    totals.add("skipped", "bytes_skipped", item.size)
            totals.write(db, run_id)

    def count_unchanged(self, run_id: str, objects: int, size: int) -> None:
        with self._db.transaction() as db:
            db.execute(
                "UPDATE runs SET found = found + ?, bytes_found = bytes_found + ?, skipped = skipped + ?, "
                "bytes_skipped = bytes_skipped + ? WHERE run_id = ?",
                (objects, size, objects, size, run_id),
            )

    def record_attempt(self, run_id: str, key: str, operation: Operation, error: str) -> None:
        with self._db.transaction() as db:
            db.execute(
                "UPDATE objects SET attempts = attempts + 1, last_error = ?, updated = ? "
                "WHERE run_id = ? AND key = ? AND operation = ?",
                (error, time.time(), run_id, key, operation),
            )

    def complete(self, run_id: str, results: Sequence[ObjectResult]) -> None:
        now = time.time()
        totals = _RunTotals()
        with self._db.transaction() as db:
            for result in results:
                changed = db.execute(
                    "UPDATE objects SET state = ?, dest_etag = ?, reason = ?, attempts = attempts + 1, "
                    "last_error = CASE WHEN ? = 'failed' THEN ? ELSE last_error END, updated = ? "
                    "WHERE run_id = ? AND key = ? AND operation = ? AND state = 'queued'",
                    (
                        result.state,
                        result.dest_etag,
                        result.reason,
                        result.state,
                        result.reason,
                        now,
                        run_id,
                        result.key,
                        result.operation,
                    ),
                ).rowcount
                if not changed:
                    continue
                counter, byte_counter = _STATE_COUNTERS[result.state]
                totals.add(counter, byte_counter, result.size if result.operation is Operation.COPY else 0)
            totals.write(db, run_id)

    def finish_scan(self, run_id: str) -> None:
        with self._db.transaction() as db:
            db.execute("UPDATE runs SET scan_finished = ? WHERE run_id = ?", (time.time(), run_id))

    def scan_finished(self, run_id: str) -> bool:
        with self._db.reading() as db:
            row = db.execute("SELECT scan_finished FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return bool(row and row[0] is not None)

    def fail_scan(self, run_id: str, reason: str) -> None:
        with self._db.transaction() as db:
            db.execute(
                "UPDATE runs SET scan_finished = ?, scan_error = ? WHERE run_id = ?", (time.time(), reason, run_id)
            )

    def scan_error(self, run_id: str) -> str | None:
        with self._db.reading() as db:
            row = db.execute("SELECT scan_error FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return str(row[0]) if row and row[0] is not None else None

    def close_unfinished_scans(self, task: str, reason: str) -> list[str]:
        with self._db.transaction() as db:
            rows = db.execute(
                "SELECT run_id FROM runs WHERE task = ? AND scan_finished IS NULL ORDER BY started, run_id", (task,)
            ).fetchall()
            db.execute(
                "UPDATE runs SET scan_finished = ?, scan_error = ? WHERE task = ? AND scan_finished IS NULL",
                (time.time(), reason, task),
            )
        return [str(row[0]) for row in rows]

    def counters(self, run_id: str) -> TransferCounters:
        with self._db.reading() as db:
            row = db.execute(
                "SELECT found, copied, skipped, deleted, failed, bytes_found, bytes_copied, bytes_skipped "
                "FROM runs WHERE run_id = ?",
                (run_id,),
            ).fetchone()
        if row is None:
            raise KeyError(run_id)
        names = (
            "found",
            "copied",
            "skipped",
            "deleted",
            "failed",
            "bytes_found",
            "bytes_copied",
            "bytes_skipped",
        )
        return TransferCounters(**dict(zip(names, row, strict=True)))

    def records(self, run_id: str, states: Sequence[ObjectState], limit: int = 1000) -> list[ObjectRecord]:
        marks = ",".join("?" * len(states))
        with self._db.reading() as db:
            rows = db.execute(
                "SELECT key, operation, state, size, etag, attempts, reason, last_error, updated FROM objects "
                f"WHERE run_id = ? AND state IN ({marks}) ORDER BY key LIMIT ?",
                (run_id, *states, limit),
            ).fetchall()
        return [
            ObjectRecord(key, Operation(op), ObjectState(state), size, etag, attempts, reason, error, updated)
            for key, op, state, size, etag, attempts, reason, error, updated in rows
        ]

    def close(self) -> None:
        self._db.close()

    def latest_run(self, task: str) -> str | None:
        with self._db.reading() as db:
            row = db.execute(
                "SELECT run_id FROM runs WHERE task = ? ORDER BY started DESC, run_id DESC LIMIT 1", (task,)
            ).fetchone()
        return str(row[0]) if row else None

    def acquire_scan_lock(self, task: str, owner: str, ttl_seconds: float) -> bool:
        now = time.time()
        with self._db.transaction() as db:
            row = db.execute("SELECT owner, expires FROM scan_locks WHERE task = ?", (task,)).fetchone()
            if row and row[0] != owner and row[1] > now:
                return False
            db.execute(
                "INSERT INTO scan_locks (task, owner, expires) VALUES (?, ?, ?) "
                "ON CONFLICT (task) DO UPDATE SET owner = excluded.owner, expires = excluded.expires",
                (task, owner, now + ttl_seconds),
            )
            return True

    def release_scan_lock(self, task: str, owner: str) -> None:
        with self._db.transaction() as db:
            db.execute("DELETE FROM scan_locks WHERE task = ? AND owner = ?", (task, owner))

    def start_parts(self, run_id: str, key: str, upload_id: str, total_parts: int) -> str:
        with self._db.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO uploads (run_id, key, upload_id, total_parts) VALUES (?, ?, ?, ?)",
                (run_id, key, upload_id, total_parts),
            )
            (registered,) = db.execute(
                "SELECT upload_id FROM uploads WHERE run_id = ? AND key = ?", (run_id, key)
            ).fetchone()
        return str(registered)

    def finish_part(self, run_id: str, key: str, part_number: int, etag: str) -> list[tuple[int, str]] | None:
        with self._db.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO upload_parts (run_id, key, part_number, etag) VALUES (?, ?, ?, ?)",
                (run_id, key, part_number, etag),
            )
            row = db.execute(
                "SELECT total_parts, completed_by FROM uploads WHERE run_id = ? AND key = ?", (run_id, key)
            ).fetchone()
            if row is None:
                raise KeyError(f"no multipart upload registered for {key!r} in run {run_id}")
            total, completed_by = row
            parts = db.execute(
                "SELECT part_number, etag FROM upload_parts WHERE run_id = ? AND key = ? ORDER BY part_number",
                (run_id, key),
            ).fetchall()
            if len(parts) < total or completed_by not in (None, part_number):
                return None
            db.execute("UPDATE uploads SET completed_by = ? WHERE run_id = ? AND key = ?", (part_number, run_id, key))
        return [(int(number), str(part_etag)) for number, part_etag in parts]

    def abort_parts(self, run_id: str, key: str) -> None:
        with self._db.transaction() as db:
            db.execute("UPDATE uploads SET aborted = 1 WHERE run_id = ? AND key = ?", (run_id, key))

    def parts_aborted(self, run_id: str, key: str) -> bool:
        with self._db.reading() as db:
            row = db.execute("SELECT aborted FROM uploads WHERE run_id = ? AND key = ?", (run_id, key)).fetchone()
        return bool(row and row[0])

    def record_upload(self, task: str, upload: UploadRecord) -> None:
        with self._db.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO task_uploads (task, upload_id, key, bucket, dest_key, etag, mark, started) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    task,
                    upload.upload_id,
                    upload.key,
                    upload.bucket,
                    upload.dest_key,
                    upload.etag,
                    int(upload.mark),
                    upload.started,
                ),
            )

    def forget_upload(self, task: str, upload_id: str) -> None:
        with self._db.transaction() as db:
            db.execute("DELETE FROM task_uploads WHERE task = ? AND upload_id = ?", (task, upload_id))

    def uploads(self, task: str) -> list[UploadRecord]:
        with self._db.reading() as db:
            rows = db.execute(
                "SELECT key, upload_id, bucket, dest_key, etag, mark, started FROM task_uploads WHERE task = ? "
                "ORDER BY started, upload_id",
                (task,),
            ).fetchall()
        return [
            UploadRecord(key, upload_id, bucket, dest_key, etag, bool(mark), started)
            for key, upload_id, bucket, dest_key, etag, mark, started in rows
        ]

    def newer_event(self, task: str, key: str, sequencer: str) -> bool:
        with self._db.transaction() as db:
            row = db.execute(
                "SELECT sequencer FROM event_sequencers WHERE task = ? AND key = ?", (task, key)
            ).fetchone()
            if row and sequencer_order(row[0]) > sequencer_order(sequencer):
                return False
            db.execute(
                "INSERT INTO event_sequencers (task, key, sequencer) VALUES (?, ?, ?) "
                "ON CONFLICT (task, key) DO UPDATE SET sequencer = excluded.sequencer",
                (task, key, sequencer),
            )
            return True
