"""The finder: lists source and destination, diffs them and queues the work.

Copies are queued as the scan goes, so workers start at once. Deletes (mirror mode) are held back
until the whole scan has succeeded: a listing that fails halfway must never delete anything.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import TextIO

import botocore.exceptions

from dth.errors import DthError
from dth.s3.compare import strategy_for
from dth.s3.copier import ObjectCopier, SourceVanishedError
from dth.s3.diff import Change, ChangeKind, copy_or_unavailable, diff_listings, root_marker_reason
from dth.s3.filters import KeyFilter
from dth.s3.listing import list_objects, normalize_etag
from dth.s3.sides import S3Side
from dth.s3.work import WorkItem
from dth.spec.model import S3TaskSpec
from dth.state.queue import WorkQueue
from dth.state.store import Operation, PlannedObject, StatusStore, UploadRecord

log = logging.getLogger(__name__)

BATCH = 500
INSPECT_BATCH = 64


@dataclass
class ScanReport:
    """What one scan found, by outcome."""

    found: int = 0
    found_bytes: int = 0
    to_copy: int = 0
    to_copy_bytes: int = 0
    unchanged: int = 0
    unchanged_bytes: int = 0
    unavailable: int = 0
    to_delete: int = 0
    inspected: int = 0
    changes: list[Change] = field(default_factory=list)  # kept only for dry runs


def read_prefix_list(source: S3Side, location: str) -> list[str]:
    """Prefixes (relative to the source prefix) from a local file or an s3:// object of the source."""
    if location.startswith("s3://"):
        bucket, _, key = location[len("s3://") :].partition("/")
        try:
            body = source.client.get_object(Bucket=bucket, Key=key, **source.request_payer)["Body"].read()
        except Exception as error:
            raise DthError(source.explain(error, f"reading the prefix list {location}")) from None
        text = body.decode("utf-8")
    else:
        try:
            with open(location, encoding="utf-8") as handle:  # noqa: PTH123 - a user-given path string
                text = handle.read()
        except OSError as error:
            raise DthError(f"cannot read the prefix list {location}: {error.strerror}") from None
    prefixes = sorted({line.strip() for line in text.splitlines() if line.strip()})
    # A prefix inside another listed prefix would be listed (and counted) twice.
    return [p for i, p in enumerate(prefixes) if not any(p.startswith(q) for q in prefixes[:i])]


class Finder:
    def __init__(
        self,
        source: S3Side,
        destination: S3Side,
        spec: S3TaskSpec,
        queue: WorkQueue | None,
        store: StatusStore | None,
        inspector: ObjectCopier,
        *,
        list_threads: int = 8,
    ) -> None:
        self.source = source
        self.destination = destination
        self.spec = spec
        self.options = spec.options
        self.queue = queue
        self.store = store
        self.inspector = inspector
        self.list_threads = list_threads
        self.strategy = strategy_for(self.options.compare)
        self.selected = KeyFilter(self.options.include, self.options.exclude)

    def _changes(self) -> Iterator[Change]:
        prefixes: list[str | None] = [None]
        if self.spec.source.prefix_list_file:
            prefixes = list(read_prefix_list(self.source, self.spec.source.prefix_list_file))
        for relative in prefixes:
            source_prefix = None if relative is None else self.source.prefix + relative
            dest_prefix = None if relative is None else self.destination.prefix + relative
            source_listing = list_objects(
                self.source, depth=self.options.list_depth, threads=self.list_threads, prefix=source_prefix
            )
            dest_listing = list_objects(
                self.destination, depth=self.options.list_depth, threads=self.list_threads, prefix=dest_prefix
            )
            for change in diff_listings(
                source_listing,
                dest_listing,
                self.strategy,
                selected=self.selected,
                delete_extraneous=self.options.delete_extraneous,
            ):
                yield self._root_marker_checked(change)

    def _root_marker_checked(self, change: Change) -> Change:
        """The source prefix's own folder marker (relative key "") is skipped with the reason where the
        destination has no prefix for it to become."""
        if change.key or change.source is None or change.kind is ChangeKind.UNCHANGED:
            return change
        reason = root_marker_reason(self.source.prefix, self.destination.prefix)
        return Change(ChangeKind.UNAVAILABLE, "", change.source, change.destination, reason) if reason else change

    def _resolve(self, change: Change) -> Change:
        """Settle an INSPECT change with a HEAD of both objects."""
        assert change.source is not None and change.destination is not None
        source = self.inspector.details(self.source, change.key)
        destination = self.inspector.details(self.destination, change.key)
        if source is not None and destination is not None and self.strategy.inspect(source, destination):
            return Change(ChangeKind.UNCHANGED, change.key, change.source, change.destination)
        return copy_or_unavailable(change.source, change.destination)

    def _settled(self, changes: Iterator[Change], pool: ThreadPoolExecutor) -> Iterator[Change]:
        """The changes with every INSPECT resolved, HEADs running in parallel batches."""
        waiting: list[Change] = []
        for change in changes:
            if change.kind is not ChangeKind.INSPECT:
                yield change
                continue
            waiting.append(change)
            if len(waiting) >= INSPECT_BATCH:
                yield from pool.map(self._resolve, waiting)
                waiting = []
        yield from pool.map(self._resolve, waiting)

    # --- uploads earlier runs left behind -----------------------------------------------------

    def _review_uploads(self) -> dict[str, list[UploadRecord]]:
        """Abort the task's recorded uploads that nothing can resume (the source changed or vanished, the
        destination moved, or `abortStaleUploads` asks for all of them); the rest, by destination key, wait for
        the scan to plan a copy of their key, which resumes them."""
        ledger = self.inspector.uploads
        if ledger is None:
            return {}
        waiting: dict[str, list[UploadRecord]] = {}
        for upload in ledger.recorded():  # oldest first
            if self.options.abort_stale_uploads or not self._resumable(upload):
                self._abort(upload, "its copy cannot resume it")
                continue
            for older in waiting.pop(upload.dest_key, []):
                self._abort(older, "a newer upload of the same version will be resumed")
            waiting[upload.dest_key] = [upload]
        return waiting

    def _resumable(self, upload: UploadRecord) -> bool:
        if (upload.bucket, upload.dest_key) != (self.destination.bucket, self.destination.key_for(upload.key)):
            return False
        try:
            head = self.inspector.head_source(upload.key)
        except (SourceVanishedError, botocore.exceptions.ClientError):
            return False  # gone, or unreadable: no copy of it can resume the upload
        return normalize_etag(head.get("ETag")) == upload.etag

    def _abort(self, upload: UploadRecord, why: str) -> None:
        log.info("aborting a multipart upload left behind", extra={"key": upload.dest_key, "reason": why})
        self.inspector.abort_upload(upload.key, upload.upload_id, upload.bucket, upload.dest_key)

    # --- the scan ----------------------------------------------------------------------------

    def scan(
        self,
        run_id: str,
        *,
        on_change: Callable[[Change], None] | None = None,
        guard: Callable[[], None] | None = None,
    ) -> ScanReport:
        """Diff the sides and queue the work. `guard` is called before anything is recorded or queued (and
        before the scan is marked finished): it raises to stop the scan, say when the scan lock is lost."""
        report = ScanReport()
        check = guard or (lambda: None)
        dry_run = self.options.dry_run or self.queue is None or self.store is None
        waiting_uploads = {} if dry_run else self._review_uploads()
        planned: list[PlannedObject] = []
        unchanged_batch = [0, 0]

        def flush() -> None:
            if dry_run:
                return
            assert self.queue is not None and self.store is not None
            check()
            if planned:
                # Record before sending: a worker may finish an object before this returns.
                self.store.plan(run_id, planned)
                self.queue.send(
                    [
                        WorkItem(run=run_id, op=p.operation, key=p.key, size=p.size, etag=p.etag).to_body()
                        for p in planned
                        if p.skip_reason is None
                    ]
                )
                planned.clear()
            if unchanged_batch[0]:
                self.store.count_unchanged(run_id, unchanged_batch[0], unchanged_batch[1])
                unchanged_batch[:] = [0, 0]

        with (
            tempfile.TemporaryFile("w+", encoding="utf-8") as deletes,
            ThreadPoolExecutor(max_workers=self.list_threads, thread_name_prefix="inspect") as pool,
        ):
            for change in self._settled(self._changes(), pool):
                if on_change:
                    on_change(change)
                if change.kind is ChangeKind.DELETE:
                    report.to_delete += 1
                    deletes.write(WorkItem(run=run_id, op=Operation.DELETE, key=change.key).to_body() + "\n")
                    continue
                assert change.source is not None
                report.found += 1
                report.found_bytes += change.source.size
                if change.kind is ChangeKind.UNCHANGED:
                    report.unchanged += 1
                    report.unchanged_bytes += change.source.size
                    unchanged_batch[0] += 1
                    unchanged_batch[1] += change.source.size
                else:
                    reason = change.reason if change.kind is ChangeKind.UNAVAILABLE else None
                    if reason:
                        report.unavailable += 1
                    else:
                        report.to_copy += 1
                        report.to_copy_bytes += change.source.size
                        waiting_uploads.pop(self.destination.key_for(change.key), None)  # its copy resumes it
                    planned.append(
                        PlannedObject(change.key, Operation.COPY, change.source.size, change.source.etag, reason)
                    )
                if len(planned) >= BATCH or unchanged_batch[0] >= BATCH:
                    flush()
            flush()
            if not dry_run:
                self._queue_deletes(run_id, deletes, check)
        for uploads in waiting_uploads.values():
            for upload in uploads:
                self._abort(upload, "the scan found nothing to copy for its key")
        if not dry_run:
            assert self.store is not None
            check()
            self.store.finish_scan(run_id)
        log.info(
            "scan finished",
            extra={
                "run": run_id,
                "found": report.found,
                "to_copy": report.to_copy,
                "to_delete": report.to_delete,
            },
        )
        return report

    def _queue_deletes(self, run_id: str, spool: TextIO, check: Callable[[], None]) -> None:
        assert self.queue is not None and self.store is not None
        spool.seek(0)
        lines = (line.rstrip("\n") for line in spool)
        while batch := list(islice(lines, BATCH)):
            check()
            items = [WorkItem.from_body(line) for line in batch]
            self.store.plan(run_id, [PlannedObject(i.key, Operation.DELETE, 0, "") for i in items])
            self.queue.send(batch)
