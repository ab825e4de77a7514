"""The messages on the work queue: one per object to copy or delete, or one per part of a giant object."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from dth.s3.parts import PartRange
from dth.state.store import Operation


class UploadPart(BaseModel):
    """One part of a giant object's multipart upload, for any worker to copy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    upload_id: str
    number: int
    start: int
    end: int
    mark: bool  # whether the destination records the source ETag (the layout differs from the source's)

    @property
    def range(self) -> PartRange:
        return PartRange(self.number, self.start, self.end)


class WorkItem(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    run: str
    op: Operation
    key: str  # relative to the task's source (copies) or destination (deletes) prefix
    size: int = 0
    etag: str = ""
    part: UploadPart | None = None

    def to_body(self) -> str:
        return self.model_dump_json(exclude_none=True)

    @classmethod
    def from_body(cls, body: str) -> WorkItem:
        return cls.model_validate_json(body)
