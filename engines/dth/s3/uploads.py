"""The multipart uploads a task starts at its destination, recorded in the status store before their first
part, so that none outlives the run that needs it.

A process killed mid-copy (SIGKILL, an ECS task stopped, a node lost) leaves its uploads in the destination
with their stored parts, and S3 bills the parts until someone aborts them. With the record, the next copy of
the same source version resumes the upload (ListParts tells which parts are stored), and the next scan aborts
every recorded upload that nothing will resume: its source changed or vanished, or the scan found nothing to
copy for its key. Only uploads this task recorded are ever aborted: another tool's uploads under the same
prefix are never this task's to judge.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from dth.state.store import StatusStore, UploadRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredPart:
    etag: str
    size: int


class UploadLedger:
    """One task's record of its uploads in progress, shared by every thread of a process."""

    def __init__(self, store: StatusStore, task: str) -> None:
        self.store = store
        self.task = task

    def started(self, key: str, upload_id: str, bucket: str, dest_key: str, etag: str, mark: bool) -> None:
        self.store.record_upload(self.task, UploadRecord(key, upload_id, bucket, dest_key, etag, mark, time.time()))

    def ended(self, upload_id: str) -> None:
        self.store.forget_upload(self.task, upload_id)

    def recorded(self) -> list[UploadRecord]:
        return self.store.uploads(self.task)

    def resumable(self, bucket: str, dest_key: str, etag: str, mark: bool) -> UploadRecord | None:
        """The newest recorded upload of this source version to this destination key, started alike."""
        matching = [
            upload
            for upload in self.recorded()
            if (upload.bucket, upload.dest_key, upload.etag, upload.mark) == (bucket, dest_key, etag, mark)
        ]
        return matching[-1] if matching else None
