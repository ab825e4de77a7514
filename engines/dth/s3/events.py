"""S3 event notifications (ObjectCreated, ObjectRemoved) arriving on the work queue.

An event becomes an ordinary work item of the task's latest run. Events can arrive late and out of
order: one older (by its `sequencer`) than an event already applied to the same key is dropped.
Deletes are applied only in `CreateAndDelete` mode.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import unquote_plus

from dth.s3.diff import root_marker_reason
from dth.s3.filters import KeyFilter
from dth.s3.listing import normalize_etag
from dth.s3.work import WorkItem
from dth.spec.model import EventsMode, S3TaskSpec
from dth.state.store import Operation, PlannedObject, StatusStore

log = logging.getLogger(__name__)


class EventKind(Enum):
    CREATED = "created"
    REMOVED = "removed"


@dataclass(frozen=True)
class ObjectEvent:
    kind: EventKind
    bucket: str
    key: str  # decoded, full key
    size: int
    etag: str
    sequencer: str


def parse_event_body(body: str) -> list[ObjectEvent] | None:
    """The object events in an S3 notification; [] for a test event; None if it is no S3 notification."""
    try:
        document = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(document, dict):
        return None
    if document.get("Event") == "s3:TestEvent":
        return []
    records = document.get("Records")
    if not isinstance(records, list):
        return None
    events = []
    for record in records:
        event = _event_from_record(record)
        if event is not None:
            events.append(event)
    return events


def _event_from_record(record: Any) -> ObjectEvent | None:
    if not isinstance(record, dict) or record.get("eventSource") not in (None, "aws:s3"):
        return None
    name = str(record.get("eventName", ""))
    if name.startswith("ObjectCreated:"):
        kind = EventKind.CREATED
    elif name.startswith("ObjectRemoved:"):
        kind = EventKind.REMOVED
    else:
        return None
    s3 = record.get("s3") or {}
    obj = s3.get("object") or {}
    return ObjectEvent(
        kind=kind,
        bucket=str((s3.get("bucket") or {}).get("name", "")),
        # Keys in notifications are URL-encoded, with '+' for spaces.
        key=unquote_plus(str(obj.get("key", ""))),
        size=int(obj.get("size", 0) or 0),
        etag=normalize_etag(obj.get("eTag")),
        sequencer=str(obj.get("sequencer", "")),
    )


class EventTranslator:
    """Turns a task's object events into work items of its latest run, dropping stale ones."""

    def __init__(self, task_name: str, spec: S3TaskSpec, store: StatusStore) -> None:
        self.task_name = task_name
        self.spec = spec
        self.store = store
        self.selected = KeyFilter(spec.options.include, spec.options.exclude)
        self._lock = threading.Lock()

    def _run(self) -> str:
        """The run that events count in: the task's latest, found (or started, before any scan) under a
        lock, so that workers handling events at once never start two runs."""
        with self._lock:
            run_id = self.store.latest_run(self.task_name) or self.store.start_run(self.task_name)
        return run_id

    def work_items(self, events: list[ObjectEvent]) -> list[WorkItem]:
        run_id = self._run()
        items: list[WorkItem] = []
        for event in events:
            item = self._work_item(run_id, event)
            if item is not None:
                items.append(item)
        return items

    def _work_item(self, run_id: str, event: ObjectEvent) -> WorkItem | None:
        source = self.spec.source
        if event.bucket != source.bucket or not event.key.startswith(source.prefix):
            return None
        key = event.key[len(source.prefix) :]
        if not self.selected(key):
            return None
        if event.kind is EventKind.REMOVED and self.spec.events is not EventsMode.CREATE_AND_DELETE:
            return None
        if event.sequencer and not self.store.newer_event(self.task_name, event.key, event.sequencer):
            log.info("stale event dropped", extra={"key": event.key, "sequencer": event.sequencer})
            return None
        operation = Operation.COPY if event.kind is EventKind.CREATED else Operation.DELETE
        reason = None if key else root_marker_reason(source.prefix, self.spec.destination.prefix)
        if reason:
            if operation is Operation.COPY:
                self.store.plan(run_id, [PlannedObject(key, operation, event.size, event.etag, reason)])
            return None
        self.store.plan(run_id, [PlannedObject(key, operation, event.size, event.etag)])
        return WorkItem(run=run_id, op=operation, key=key, size=event.size, etag=event.etag)
