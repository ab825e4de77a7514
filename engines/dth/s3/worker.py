"""The worker: takes work items off the queue, copies or deletes, records the outcome, retries.

A message is deleted only after its outcome is recorded, so a worker that dies mid-copy leaves the
message to come back after its visibility timeout; the store counts each object once however often
it is delivered. Failures are retried with exponential backoff and jitter by hiding the message for
the delay; past `maxRetries` the message goes to the dead letters and the object is recorded failed.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import botocore.exceptions
from pydantic import ValidationError

from dth.s3.acks import FinishedBatch
from dth.s3.copier import (
    CopyCancelled,
    CopyError,
    ObjectCopier,
    SourceChangedError,
    SourceVanishedError,
    reusable_parts,
)
from dth.s3.events import EventTranslator, parse_event_body
from dth.s3.listing import normalize_etag
from dth.s3.sides import CREDENTIAL_ERRORS, error_code
from dth.s3.uploads import StoredPart
from dth.s3.work import UploadPart, WorkItem
from dth.state.queue import DeadLetter, Message, WorkQueue
from dth.state.store import ObjectResult, ObjectState, Operation, StatusStore

log = logging.getLogger(__name__)

# Errors that another attempt cannot fix.
PERMANENT_ERRORS = CREDENTIAL_ERRORS | {
    "AccessDenied",
    "NoSuchBucket",
    "InvalidObjectState",
    "InvalidRequest",
    "InvalidObjectName",
    "KeyTooLongError",
}
# How often a copy follows a source that keeps changing under it before giving up for this attempt.
SOURCE_CHANGE_FOLLOWS = 3


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    base_delay: float = 0.5
    max_delay: float = 60.0

    def delay(self, attempt: int) -> float:
        """Exponential backoff with full jitter, never less than a tenth of the base."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** max(0, attempt - 1))
        return max(self.base_delay / 10, random.uniform(0, ceiling))


def describe_error(error: BaseException) -> tuple[str, bool]:
    """A short reason for the record, and whether another attempt may succeed."""
    if isinstance(error, CopyError):
        return str(error), error.retryable
    if isinstance(error, botocore.exceptions.ClientError):
        code = error_code(error)
        message = error.response.get("Error", {}).get("Message", "")
        return f"{code}: {message}" if message else code, code not in PERMANENT_ERRORS
    if isinstance(error, botocore.exceptions.BotoCoreError):
        return f"{type(error).__name__}: {error}", True
    return f"{type(error).__name__}: {error}", True


class Worker:
    def __init__(
        self,
        copier: ObjectCopier,
        queue: WorkQueue,
        store: StatusStore,
        *,
        workers: int,
        retry: RetryPolicy,
        visibility_timeout: float = 300.0,
        events: EventTranslator | None = None,
        receive_wait: float = 0.2,
        dead_letter_interval: float = 60.0,
    ) -> None:
        self.copier = copier
        self.queue = queue
        self.store = store
        self.workers = workers
        self.retry = retry
        self.visibility_timeout = visibility_timeout
        self.events = events
        # How long a receive waits for messages: also how late an idle worker notices that the work is done.
        self.receive_wait = receive_wait
        # How often an idle worker records the messages the queue dead-lettered by itself.
        self.dead_letter_interval = dead_letter_interval
        self._in_flight: dict[str, tuple[Message, float]] = {}
        self._lock = threading.Lock()

    # --- one message ----------------------------------------------------------------------

    def handle(self, message: Message, finished: FinishedBatch) -> None:
        """Work one message; its outcomes and its deletion go to `finished`, written in batches."""
        try:
            items = [WorkItem.from_body(message.body)]
        except ValidationError:
            events = parse_event_body(message.body) if self.events else None
            if events is None or self.events is None:
                self.queue.dead_letter(message, "neither a work item nor an S3 event notification")
                return
            items = self.events.work_items(events)
        results: list[tuple[str, ObjectResult]] = []
        for item in items:
            try:
                result = self._perform(item)
            except CopyCancelled:
                return  # the run is stopping: the message is neither done nor failed
            except Exception as error:
                self._failed(message, item, error)
                return
            if result is not None:  # None: the work went on in other messages (parts of a giant object)
                results.append((item.run, result))
        finished.add(results, message)

    def _perform(self, item: WorkItem) -> ObjectResult | None:
        if item.op is Operation.DELETE:
            return self._delete(item)
        if item.part is not None:
            return self._copy_giant_part(item, item.part)
        if item.size > self.copier.options.giant_file_threshold:
            cloned = self._clone_giant(item)
            return cloned if cloned is not None else self._split_giant(item)
        etag, size = item.etag, item.size
        for _ in range(SOURCE_CHANGE_FOLLOWS):
            try:
                copied = self.copier.copy(item.key, size, etag)
                return ObjectResult(item.key, Operation.COPY, ObjectState.COPIED, copied.size, copied.dest_etag)
            except SourceVanishedError as gone:
                return ObjectResult(item.key, Operation.COPY, ObjectState.SKIPPED, item.size, reason=str(gone))
            except SourceChangedError:
                # Copy what the source holds now, verified against its new ETag.
                try:
                    head = self.copier.head_source(item.key)
                except SourceVanishedError as gone:
                    return ObjectResult(item.key, Operation.COPY, ObjectState.SKIPPED, item.size, reason=str(gone))
                etag, size = normalize_etag(head.get("ETag")), int(head.get("ContentLength", 0))
        raise CopyError("the source object kept changing during the copy")

    def _clone_giant(self, item: WorkItem) -> ObjectResult | None:
        """A giant object the service can clone in one CopyObject needs no parts spread over workers."""
        try:
            cloned = self.copier.try_clone(item.key, item.size, item.etag)
        except SourceVanishedError as gone:
            return ObjectResult(item.key, Operation.COPY, ObjectState.SKIPPED, item.size, reason=str(gone))
        except SourceChangedError:
            return None  # the split below follows the source's new version
        if cloned is None:
            return None
        return ObjectResult(item.key, Operation.COPY, ObjectState.COPIED, cloned.size, cloned.dest_etag)

    def _split_giant(self, item: WorkItem) -> ObjectResult | None:
        """Start the multipart upload of a giant object and queue one message per part, so that every
        worker can take a share; the worker that records the last part completes the upload."""
        resumed: tuple[str, dict[int, StoredPart]] | None = None
        for _ in range(SOURCE_CHANGE_FOLLOWS):
            try:
                layout, mark = self.copier.plan_upload(item.key, item.size, item.etag)
                # An upload of this version left by a killed worker or run keeps its stored parts.
                resumed = self.copier.resume_upload(item.key, item.etag, mark)
                upload_id = resumed[0] if resumed else self.copier.start_upload(item.key, item.etag, mark)
                break
            except SourceVanishedError as gone:
                return ObjectResult(item.key, Operation.COPY, ObjectState.SKIPPED, item.size, reason=str(gone))
            except SourceChangedError:
                # Nothing is copied yet: split the object as it is now.
                head = self.copier.head_source(item.key)
                item = item.model_copy(
                    update={"etag": normalize_etag(head.get("ETag")), "size": int(head.get("ContentLength", 0))}
                )
        else:
            raise CopyError("the source object kept changing during the copy")
        registered = self.store.start_parts(item.run, item.key, upload_id, len(layout))
        stored: dict[int, str] = {}
        if registered != upload_id:  # a previous delivery of this message got here first
            if resumed is None:
                self.copier.abort_upload(item.key, upload_id)
        elif resumed is not None:
            stored = reusable_parts(layout, resumed[1])
        for number, part_etag in stored.items():
            parts = self.store.finish_part(item.run, item.key, number, part_etag)
            if parts is not None:  # every part was stored before
                copied = self.copier.finish_upload(item.key, item.size, item.etag, registered, parts, mark)
                return ObjectResult(item.key, Operation.COPY, ObjectState.COPIED, copied.size, copied.dest_etag)
        self.queue.send(
            [
                WorkItem(
                    run=item.run,
                    op=Operation.COPY,
                    key=item.key,
                    size=item.size,
                    etag=item.etag,
                    part=UploadPart(upload_id=registered, number=p.number, start=p.start, end=p.end, mark=mark),
                ).to_body()
                for p in layout
                if p.number not in stored
            ]
        )
        log.info("giant object split", extra={"key": item.key, "parts": len(layout), "upload": registered})
        return None

    def _copy_giant_part(self, item: WorkItem, part: UploadPart) -> ObjectResult | None:
        if self.store.parts_aborted(item.run, item.key):
            return None  # the object failed (and was recorded) once already: its other parts are dropped unsent
        try:
            part_etag = self.copier.copy_part(item.key, item.etag, part.upload_id, part.range)
            parts = self.store.finish_part(item.run, item.key, part.number, part_etag)
            if parts is None:
                return None
            copied = self.copier.finish_upload(item.key, item.size, item.etag, part.upload_id, parts, part.mark)
        except SourceVanishedError as gone:
            self._give_up_giant(item, part)
            return ObjectResult(item.key, Operation.COPY, ObjectState.SKIPPED, item.size, reason=str(gone))
        except SourceChangedError:
            # Parts of two versions must never be mixed: give this copy up; the next scan copies the new one.
            self._give_up_giant(item, part)
            raise CopyError("the source object changed while its parts were being copied", retryable=False) from None
        except botocore.exceptions.ClientError as error:
            if error_code(error) == "NoSuchUpload" and self.store.parts_aborted(item.run, item.key):
                return None  # aborted while this part was being copied
            raise
        return ObjectResult(item.key, Operation.COPY, ObjectState.COPIED, copied.size, copied.dest_etag)

    def _give_up_giant(self, item: WorkItem, part: UploadPart) -> None:
        """A part that cannot be copied dooms its object: its upload is aborted, and marked so that the other
        parts' messages are dropped at once instead of each failing with NoSuchUpload until dead-lettered."""
        try:
            self.store.abort_parts(item.run, item.key)
        finally:
            self.copier.abort_upload(item.key, part.upload_id)

    def _delete(self, item: WorkItem) -> ObjectResult:
        # An object that appeared in the source since the scan must not be deleted from the copy.
        try:
            self.copier.head_source(item.key)
        except SourceVanishedError:
            self.copier.delete(item.key)
            return ObjectResult(item.key, Operation.DELETE, ObjectState.DELETED)
        return ObjectResult(item.key, Operation.DELETE, ObjectState.SKIPPED, reason="the key reappeared in the source")

    def _failed(self, message: Message, item: WorkItem, error: Exception) -> None:
        reason, retryable = describe_error(error)
        if self._reread_rejected_keys(error):
            retryable = True
        if retryable and message.receive_count <= self.retry.max_retries:
            log.warning(
                "attempt failed, will retry",
                extra={"key": item.key, "attempt": message.receive_count, "error": reason},
            )
            self.store.record_attempt(item.run, item.key, item.op, reason)
            self.queue.change_visibility(message, self.retry.delay(message.receive_count))
            return
        if item.part is not None:
            reason = f"part {item.part.number}: {reason}"
            self._give_up_giant(item, item.part)
        log.error("object failed", extra={"key": item.key, "attempts": message.receive_count, "error": reason})
        self.store.complete(item.run, [ObjectResult(item.key, item.op, ObjectState.FAILED, item.size, reason=reason)])
        self.queue.dead_letter(message, reason)

    def _reread_rejected_keys(self, error: Exception) -> bool:
        """Keys from a secret may have been rotated: read them again before the next attempt."""
        if not isinstance(error, botocore.exceptions.ClientError):
            return False
        if error_code(error) not in CREDENTIAL_ERRORS | {"AccessDenied"}:
            return False
        refreshable = [
            side.secret_credentials
            for side in (self.copier.source, self.copier.destination)
            if side.secret_credentials is not None
        ]
        for credentials in refreshable:
            credentials.expire_now()
        return bool(refreshable)

    # --- dead letters nobody recorded -------------------------------------------------------

    def record_dead_letters(self) -> None:
        """Messages the queue dead-lettered by itself (a worker died on their last delivery) end their object
        as failed, with the queue's reason, as a worker's own dead letters do: otherwise the object stays
        queued and the run never completes."""
        try:
            self.queue.sweep_dead_letters(self._record_failed)
        except Exception as error:  # the next sweep tries again
            log.warning("could not record dead letters", extra={"error": f"{type(error).__name__}: {error}"})

    def _record_failed(self, letters: list[DeadLetter]) -> None:
        by_run: defaultdict[str, list[ObjectResult]] = defaultdict(list)
        for letter in letters:
            try:
                item = WorkItem.from_body(letter.body)
            except ValidationError:
                continue  # an S3 event notification: no object record of its own
            reason = letter.reason
            if item.part is not None:
                reason = f"part {item.part.number}: {reason}"
                self._give_up_giant(item, item.part)
            log.error("object failed", extra={"key": item.key, "attempts": letter.receive_count, "error": reason})
            by_run[item.run].append(ObjectResult(item.key, item.op, ObjectState.FAILED, item.size, reason=reason))
        for run_id, results in by_run.items():
            try:
                self.store.complete(run_id, results)
            except KeyError:
                log.warning("dead letters of an unknown run dropped", extra={"run": run_id, "objects": len(results)})

    # --- the loop -------------------------------------------------------------------------

    def _tracked(self, message: Message, finished: FinishedBatch) -> None:
        try:
            self.handle(message, finished)
        finally:
            with self._lock:
                self._in_flight.pop(message.message_id, None)

    def _heartbeat(self) -> None:
        """Keep long copies hidden from other workers while they run."""
        now = time.monotonic()
        with self._lock:
            due = [
                (message_id, message)
                for message_id, (message, since) in self._in_flight.items()
                if now - since > self.visibility_timeout / 3
            ]
            for message_id, message in due:
                self._in_flight[message_id] = (message, now)
        for _, message in due:
            self.queue.change_visibility(message, self.visibility_timeout)

    def run(self, done: Callable[[], bool], stop: threading.Event | None = None) -> None:
        """Work until `done()` says no more work will come and nothing is left, or until `stop` is set
        (then in-flight objects are finished, and the rest is left on the queue)."""
        stop = stop or threading.Event()
        finished = FinishedBatch(self.queue, self.store)
        try:
            self._work(done, stop, finished)
        finally:
            finished.write()

    def _work(self, done: Callable[[], bool], stop: threading.Event, finished: FinishedBatch) -> None:
        last_heartbeat = last_sweep = time.monotonic()
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="worker") as pool:
            while not stop.is_set():
                finished.write_if_due()
                if time.monotonic() - last_heartbeat > self.visibility_timeout / 6:
                    self._heartbeat()
                    last_heartbeat = time.monotonic()
                with self._lock:
                    free = self.workers * 2 - len(self._in_flight)
                messages = (
                    self.queue.receive(
                        min(self.queue.receive_limit, free), self.visibility_timeout, wait_seconds=self.receive_wait
                    )
                    if free
                    else []
                )
                if not messages:
                    with self._lock:
                        busy = bool(self._in_flight)
                    if not busy:
                        finished.write()  # what is finished must not count as pending below
                        if time.monotonic() - last_sweep > self.dead_letter_interval:
                            self.record_dead_letters()
                            last_sweep = time.monotonic()
                    if not busy and done() and self.queue.depth().pending == 0:
                        self.record_dead_letters()
                        return
                    if not free:
                        time.sleep(0.01)
                    continue
                for message in messages:
                    with self._lock:
                        self._in_flight[message.message_id] = (message, time.monotonic())
                    pool.submit(self._tracked, message, finished)
