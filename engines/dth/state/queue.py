"""The work queue between the finder and the workers.

The interface follows SQS's semantics (visibility timeout, receive count, redrive to a dead-letter
queue) so that the embedded SQLite queue and the SQS queue are interchangeable.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dth.state.sqlite import SqliteDatabase


@dataclass(frozen=True)
class Message:
    message_id: str
    receipt: str
    body: str
    receive_count: int


@dataclass(frozen=True)
class QueueDepth:
    visible: int
    in_flight: int
    dead: int

    @property
    def pending(self) -> int:
        """Messages that still have to be worked on, including those waiting out a retry delay."""
        return self.visible + self.in_flight


@dataclass(frozen=True)
class DeadLetter:
    body: str
    reason: str
    receive_count: int


class WorkQueue(ABC):
    """At-least-once delivery: a received message comes back after its visibility timeout unless deleted."""

    #: The most messages one receive may ask for (SQS's limit; a local queue takes more at once).
    receive_limit = 10

    @abstractmethod
    def send(self, bodies: Sequence[str]) -> None: ...

    @abstractmethod
    def receive(self, max_messages: int, visibility_timeout: float, wait_seconds: float = 0) -> list[Message]:
        """Messages received more than `max_receive_count` times go to the dead letters instead."""

    @abstractmethod
    def delete(self, messages: Iterable[Message]) -> None: ...

    @abstractmethod
    def change_visibility(self, message: Message, timeout: float) -> None:
        """Hide the message for `timeout` seconds from now: a heartbeat, or a retry delay."""

    @abstractmethod
    def dead_letter(self, message: Message, reason: str) -> None:
        """Move a message that must not be retried to the dead letters at once."""

    @abstractmethod
    def depth(self) -> QueueDepth: ...

    @abstractmethod
    def dead_letters(self, limit: int = 1000) -> list[DeadLetter]: ...

    @abstractmethod
    def sweep_dead_letters(self, record: Callable[[list[DeadLetter]], None], limit: int = 100) -> int:
        """Hand the messages the queue dead-lettered by itself (received too many times: their worker died, so
        no one recorded their outcome) to `record`, each once; they stay in the dead letters, marked as
        recorded only after `record` returns. Returns how many were handed over."""

    def close(self) -> None:  # noqa: B027 - optional for implementations without resources
        """Release connections."""


#: The reason given for messages the queue dead-letters by itself, having delivered them too often.
REDRIVE_REASON = "received too many times without success"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    body TEXT NOT NULL,
    visible_at REAL NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT
);
CREATE INDEX IF NOT EXISTS queue_messages_visible ON queue_messages (queue, visible_at);
CREATE TABLE IF NOT EXISTS queue_dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    body TEXT NOT NULL,
    reason TEXT NOT NULL,
    receive_count INTEGER NOT NULL,
    dead_at REAL NOT NULL,
    recorded INTEGER NOT NULL DEFAULT 1
);
"""


class SqliteQueue(WorkQueue):
    """The embedded default: one table in a local SQLite file, several named queues in one file."""

    # One receive is one write transaction: taking the workers' whole appetite at once (up to twice the workers
    # in flight) instead of ten at a time cuts the transactions per object.
    receive_limit = 100

    def __init__(self, path: Path | str | SqliteDatabase, name: str = "work", max_receive_count: int = 6) -> None:
        # A database shared with the status store: one connection, so the two never wait on each other's file
        # lock (SQLite's busy handler sleeps milliseconds at a time).
        self._db = path if isinstance(path, SqliteDatabase) else SqliteDatabase(path)
        self._name = name
        self._max_receive_count = max_receive_count
        self._db.executescript(_SCHEMA)
        with self._db.transaction() as db:
            columns = {row[1] for row in db.execute("PRAGMA table_info(queue_dead_letters)")}
            if "recorded" not in columns:  # a state file from before sweeps: its dead letters count as recorded
                db.execute("ALTER TABLE queue_dead_letters ADD COLUMN recorded INTEGER NOT NULL DEFAULT 1")

    def send(self, bodies: Sequence[str]) -> None:
        if not bodies:
            return
        now = time.time()
        with self._db.transaction() as db:
            db.executemany(
                "INSERT INTO queue_messages (queue, body, visible_at) VALUES (?, ?, ?)",
                [(self._name, body, now) for body in bodies],
            )

    def receive(self, max_messages: int, visibility_timeout: float, wait_seconds: float = 0) -> list[Message]:
        deadline = time.monotonic() + wait_seconds
        while True:
            messages = self._receive_now(max_messages, visibility_timeout)
            if messages or time.monotonic() >= deadline:
                return messages
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def _receive_now(self, max_messages: int, visibility_timeout: float) -> list[Message]:
        now = time.time()
        with self._db.reading() as db:
            # An idle worker polls: a read first keeps it from taking the write lock the finder needs.
            visible = db.execute(
                "SELECT 1 FROM queue_messages WHERE queue = ? AND visible_at <= ? LIMIT 1", (self._name, now)
            ).fetchone()
        if visible is None:
            return []
        receipt = uuid.uuid4().hex
        with self._db.transaction() as db:
            rows = db.execute(
                "SELECT seq, body, receive_count FROM queue_messages WHERE queue = ? AND visible_at <= ? "
                "ORDER BY visible_at, seq LIMIT ?",
                (self._name, now, max_messages),
            ).fetchall()
            delivered: list[Message] = []
            for seq, body, count in rows:
                if count >= self._max_receive_count:
                    self._move_to_dead(db, seq, body, count, REDRIVE_REASON, now, recorded=False)
                    continue
                delivered.append(Message(str(seq), receipt, body, count + 1))
            db.executemany(
                "UPDATE queue_messages SET visible_at = ?, receive_count = ?, receipt = ? WHERE seq = ?",
                [(now + visibility_timeout, m.receive_count, receipt, int(m.message_id)) for m in delivered],
            )
            return delivered

    def _move_to_dead(
        self, db: sqlite3.Connection, seq: int, body: str, count: int, reason: str, now: float, *, recorded: bool = True
    ) -> None:
        db.execute(
            "INSERT INTO queue_dead_letters (queue, body, reason, receive_count, dead_at, recorded) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (self._name, body, reason, count, now, int(recorded)),
        )
        db.execute("DELETE FROM queue_messages WHERE seq = ?", (seq,))

    def delete(self, messages: Iterable[Message]) -> None:
        # Only the latest receipt may delete: a message redelivered to someone else stays theirs.
        pairs = [(int(m.message_id), m.receipt, self._name) for m in messages]
        if not pairs:
            return
        with self._db.transaction() as db:
            db.executemany("DELETE FROM queue_messages WHERE seq = ? AND receipt = ? AND queue = ?", pairs)

    def change_visibility(self, message: Message, timeout: float) -> None:
        with self._db.transaction() as db:
            db.execute(
                "UPDATE queue_messages SET visible_at = ? WHERE seq = ? AND receipt = ? AND queue = ?",
                (time.time() + timeout, int(message.message_id), message.receipt, self._name),
            )

    def dead_letter(self, message: Message, reason: str) -> None:
        with self._db.transaction() as db:
            row = db.execute(
                "SELECT seq, body, receive_count FROM queue_messages WHERE seq = ? AND receipt = ? AND queue = ?",
                (int(message.message_id), message.receipt, self._name),
            ).fetchone()
            if row:
                self._move_to_dead(db, row[0], row[1], row[2], reason, time.time())

    def depth(self) -> QueueDepth:
        now = time.time()
        with self._db.reading() as db:
            visible, in_flight = db.execute(
                "SELECT COALESCE(SUM(visible_at <= ?), 0), COALESCE(SUM(visible_at > ?), 0) "
                "FROM queue_messages WHERE queue = ?",
                (now, now, self._name),
            ).fetchone()
            (dead,) = db.execute("SELECT COUNT(*) FROM queue_dead_letters WHERE queue = ?", (self._name,)).fetchone()
        return QueueDepth(int(visible), int(in_flight), int(dead))

    def dead_letters(self, limit: int = 1000) -> list[DeadLetter]:
        with self._db.reading() as db:
            rows = db.execute(
                "SELECT body, reason, receive_count FROM queue_dead_letters WHERE queue = ? ORDER BY seq LIMIT ?",
                (self._name, limit),
            ).fetchall()
        return [DeadLetter(body, reason, count) for body, reason, count in rows]

    def sweep_dead_letters(self, record: Callable[[list[DeadLetter]], None], limit: int = 100) -> int:
        with self._db.reading() as db:
            rows = db.execute(
                "SELECT seq, body, reason, receive_count FROM queue_dead_letters WHERE queue = ? AND recorded = 0 "
                "ORDER BY seq LIMIT ?",
                (self._name, limit),
            ).fetchall()
        if not rows:
            return 0
        record([DeadLetter(body, reason, count) for _, body, reason, count in rows])
        with self._db.transaction() as db:
            db.executemany("UPDATE queue_dead_letters SET recorded = 1 WHERE seq = ?", [(row[0],) for row in rows])
        return len(rows)

    def purge(self) -> None:
        with self._db.transaction() as db:
            db.execute("DELETE FROM queue_messages WHERE queue = ?", (self._name,))
            db.execute("DELETE FROM queue_dead_letters WHERE queue = ?", (self._name,))

    def close(self) -> None:
        self._db.close()
