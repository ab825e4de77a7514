"""The messages on the work queue: one per object to copy or delete."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from dth.state.store import Operation


class WorkItem(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    run: str
    op: Operation
    key: str  # relative to the task's source (copies) or destination (deletes) prefix
    size: int = 0
    etag: str = ""

    def to_body(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_body(cls, body: str) -> WorkItem:
        return cls.model_validate_json(body)
