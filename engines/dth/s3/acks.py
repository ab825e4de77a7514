"""Outcomes and acknowledgements of finished messages, written in batches.

A worker finishing an object records its outcome in the status store, then deletes its message from the
queue. Done one object at a time from dozens of copy threads, those two writes were the worker's bottleneck
(SQLite: two write transactions per object, the threads queued on its lock; SQS and DynamoDB: two round
trips). Gathered here and written together, they cost one transaction (or one batch call) per batch.

Nothing is lost by waiting: a message is deleted only after its outcome is recorded, and a message whose
batch never got written (the process died, the store failed) comes back after its visibility timeout and is
copied again, which copying allows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict

from dth.state.queue import Message, WorkQueue
from dth.state.store import ObjectResult, StatusStore

log = logging.getLogger(__name__)

BATCH_MESSAGES = 50
BATCH_SECONDS = 0.2


class FinishedBatch:
    def __init__(
        self,
        queue: WorkQueue,
        store: StatusStore,
        *,
        batch_messages: int = BATCH_MESSAGES,
        batch_seconds: float = BATCH_SECONDS,
    ) -> None:
        self._queue = queue
        self._store = store
        self._batch_messages = batch_messages
        self._batch_seconds = batch_seconds
        self._lock = threading.Lock()
        self._writing = threading.Lock()  # one write at a time: outcomes always before their acks
        self._results: defaultdict[str, list[ObjectResult]] = defaultdict(list)
        self._messages: list[Message] = []
        self._oldest = 0.0

    def add(self, results: list[tuple[str, ObjectResult]], message: Message) -> None:
        """The message's work is done with these outcomes (by run id; none for a giant object's part)."""
        with self._lock:
            if not self._messages:
                self._oldest = time.monotonic()
            for run_id, result in results:
                self._results[run_id].append(result)
            self._messages.append(message)
            full = len(self._messages) >= self._batch_messages
        if full:
            self.write()

    def write_if_due(self) -> None:
        with self._lock:
            due = bool(self._messages) and time.monotonic() - self._oldest >= self._batch_seconds
        if due:
            self.write()

    def write(self) -> None:
        with self._writing:
            with self._lock:
                results, self._results = self._results, defaultdict(list)
                messages, self._messages = self._messages, []
            if not messages:
                return
            try:
                for run_id, outcomes in results.items():
                    self._store.complete(run_id, outcomes)
                self._queue.delete(messages)
            except Exception as error:  # the messages come back after their visibility timeout
                log.error(
                    "could not record finished objects; their messages will be delivered again",
                    extra={"messages": len(messages), "error": f"{type(error).__name__}: {error}"},
                )
