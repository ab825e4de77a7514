"""A whole S3 transfer in one process on the embedded default: finder and workers side by side,
sharing a local SQLite queue and status store."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from dth.errors import DthError
from dth.s3.copier import ObjectCopier
from dth.s3.diff import Change
from dth.s3.finder import Finder, ScanReport
from dth.s3.sides import S3Side, check_bucket, connect_pair
from dth.s3.uploads import UploadLedger
from dth.s3.work import WorkItem
from dth.s3.worker import RetryPolicy, Worker
from dth.spec.model import S3TaskSpec, TransferCounters
from dth.state.queue import SqliteQueue
from dth.state.sqlite import SqliteDatabase
from dth.state.store import DEFAULT_KEEP_RUNS, ObjectRecord, ObjectResult, ObjectState, SqliteStatusStore

ProgressCallback = Callable[[TransferCounters, bool], None]
SCAN_STOP_GRACE = 10.0  # seconds an interrupted run waits for its scan to notice


def default_state_path(task_name: str) -> Path:
    """Where standalone runs keep their state: $DTH_STATE_DIR, else the XDG state directory."""
    base = os.environ.get("DTH_STATE_DIR") or os.path.join(  # noqa: PTH118 - env strings
        os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state", "dth"
    )
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in task_name)[:100] or "task"
    return Path(base) / f"{safe}.sqlite"


class ScanStopped(DthError):  # noqa: N818 - not an error: the user asked to stop
    """The user stopped the run before the scan was through."""


@dataclass
class SyncResult:
    run_id: str
    counters: TransferCounters
    scan: ScanReport
    elapsed: float
    dry_run: bool = False
    failed: list[ObjectRecord] = field(default_factory=list)
    skipped: list[ObjectRecord] = field(default_factory=list)  # skipped with a reason (archived, vanished)
    error: str | None = None
    interrupted: bool = False  # stopped by the user: what is not done is left for the next run

    @property
    def accounted(self) -> bool:
        """Every object found ended copied or skipped: the only outcome that counts as success."""
        c = self.counters
        return not self.interrupted and self.error is None and c.failed == 0 and c.found == c.copied + c.skipped


class StandaloneSync:
    def __init__(
        self,
        spec: S3TaskSpec,
        *,
        task_name: str,
        state_path: Path | None = None,
        keep_runs: int = DEFAULT_KEEP_RUNS,
        namespace: str = "default",
        on_progress: ProgressCallback | None = None,
        on_change: Callable[[Change], None] | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.spec = spec
        self.options = spec.options
        self.task_name = task_name
        self.state_path = state_path or default_state_path(task_name)
        self.keep_runs = keep_runs
        self.namespace = namespace
        self.on_progress = on_progress
        self.on_change = on_change
        self.retry = retry or RetryPolicy(max_retries=self.options.max_retries)
        self._stop = threading.Event()
        self._copier: ObjectCopier | None = None

    def _check_stopped(self) -> None:
        """The scan's guard: called before each batch is recorded or queued."""
        if self._stop.is_set():
            raise ScanStopped("the scan was stopped")

    def interrupt(self) -> None:
        """Stop soon and cleanly (the first Ctrl-C; safe from a signal handler): no new scan results,
        objects or parts; multipart uploads in flight are aborted, so nothing is left half-written and
        the next run copies what this one did not."""
        self._stop.set()
        if self._copier is not None:
            self._copier.cancel()

    def _connect(self) -> tuple[S3Side, S3Side]:
        pool = self.options.workers + self.options.concurrency + 16
        source, destination = connect_pair(
            self.spec.source, self.spec.destination, namespace=self.namespace, pool_size=pool
        )
        check_bucket(source)
        check_bucket(destination)
        return source, destination

    def run(self) -> SyncResult:
        started = time.monotonic()
        source, destination = self._connect()
        list_threads = min(16, max(2, self.options.workers // 2))
        with ThreadPoolExecutor(max_workers=self.options.concurrency, thread_name_prefix="part") as parts:
            copier = self._copier = ObjectCopier(source, destination, self.options, parts)
            if self._stop.is_set():  # interrupted while connecting
                copier.cancel()
            if self.options.dry_run:
                finder = Finder(source, destination, self.spec, None, None, copier, list_threads=list_threads)
                report = finder.scan("dry-run", on_change=self.on_change)
                counters = TransferCounters(
                    found=report.found,
                    skipped=report.unchanged,
                    bytes_found=report.found_bytes,
                    bytes_skipped=report.unchanged_bytes,
                )
                return SyncResult("dry-run", counters, report, time.monotonic() - started, dry_run=True)
            return self._transfer(source, destination, copier, list_threads, started)

    def _transfer(
        self, source: S3Side, destination: S3Side, copier: ObjectCopier, list_threads: int, started: float
    ) -> SyncResult:
        database = SqliteDatabase(self.state_path)
        store = SqliteStatusStore(database, keep_runs=self.keep_runs)
        run_id = store.start_run(self.task_name)
        copier.uploads = UploadLedger(store, self.task_name)
        # The worker dead-letters after max_retries itself; the queue's own redrive is the backstop
        # for a message whose worker keeps dying.
        queue = SqliteQueue(database, name=run_id, max_receive_count=self.options.max_retries + 2)
        finder = Finder(source, destination, self.spec, queue, store, copier, list_threads=list_threads)
        # A local queue is cheap to poll: a short wait lets a sync end as soon as its scan and copies do.
        worker = Worker(copier, queue, store, workers=self.options.workers, retry=self.retry, receive_wait=0.02)
        scan_done = threading.Event()
        finished = threading.Event()
        outcome: dict[str, ScanReport | str] = {}

        def scan() -> None:
            try:
                outcome["report"] = finder.scan(run_id, on_change=self.on_change, guard=self._check_stopped)
            except ScanStopped:
                pass  # the result says the run was interrupted
            except DthError as error:
                outcome["error"] = str(error)
            except Exception as error:
                outcome["error"] = f"the scan failed: {type(error).__name__}: {error}"
            finally:
                scan_done.set()

        def report_progress() -> None:
            while not finished.wait(0.25):
                if self.on_progress:
                    self.on_progress(store.counters(run_id), scan_done.is_set())

        scanner = threading.Thread(target=scan, name="finder", daemon=True)
        reporter = threading.Thread(target=report_progress, name="progress", daemon=True)
        scanner.start()
        reporter.start()
        try:
            worker.run(done=scan_done.is_set, stop=self._stop)
        finally:
            finished.set()
            # A stopped scan may still be waiting on a listing request: it is not waited for long.
            scanner.join(timeout=SCAN_STOP_GRACE if self._stop.is_set() else None)
            reporter.join()
        self._record_dead_letters(queue, store, run_id)
        counters = store.counters(run_id)
        if self.on_progress:
            self.on_progress(counters, True)
        report = outcome.get("report")
        error = outcome.get("error")
        result = SyncResult(
            run_id=run_id,
            counters=counters,
            scan=report if isinstance(report, ScanReport) else ScanReport(),
            elapsed=time.monotonic() - started,
            failed=store.records(run_id, [ObjectState.FAILED]),
            skipped=[r for r in store.records(run_id, [ObjectState.SKIPPED]) if r.reason],
            error=error if isinstance(error, str) else None,
            interrupted=self._stop.is_set(),
        )
        queue.close()
        store.close()
        return result

    @staticmethod
    def _record_dead_letters(queue: SqliteQueue, store: SqliteStatusStore, run_id: str) -> None:
        """Messages the queue itself dead-lettered were never recorded as failed by a worker."""
        results = []
        for letter in queue.dead_letters(limit=1_000_000):
            try:
                item = WorkItem.from_body(letter.body)
            except ValueError:
                continue
            results.append(ObjectResult(item.key, item.op, ObjectState.FAILED, item.size, reason=letter.reason))
        store.complete(run_id, results)
