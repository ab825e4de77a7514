"""One scan at a time per task: the scan lock a finder holds, renews in the background and checks before it
queues anything.

A lock is only as good as its renewals. A renewal the store refuses means another finder holds the lock (this
one stalled past the expiry); a renewal that raises (the store unreachable) is retried while the lock surely
still holds, and after that the lock counts as lost too. Either way the scan must stop: two scans of one task
would queue the same work twice, and a mirror's deletes could come from a listing another scan contradicts.
`check()` raises once the lock is lost, and does not trust a lock whose last renewal is older than its time
to live (the process may have been paused): it asks the store first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from dth.errors import DthError
from dth.state.store import StatusStore

log = logging.getLogger(__name__)


class ScanLockLostError(DthError):
    """The scan lock is no longer this finder's: its scan must stop."""


class ScanLock:
    def __init__(self, store: StatusStore, task: str, owner: str, ttl_seconds: float) -> None:
        self.store = store
        self.task = task
        self.owner = owner
        self.ttl_seconds = ttl_seconds
        self._renewed_at = 0.0  # time.monotonic() of the last renewal the store confirmed
        self._lost = threading.Event()
        self._reason = ""
        self._lock = threading.Lock()

    def acquire(self) -> bool:
        """Take the lock; False while another scan holds it."""
        started = time.monotonic()
        if not self.store.acquire_scan_lock(self.task, self.owner, self.ttl_seconds):
            return False
        self._renewed_at = started
        return True

    def _renew(self) -> None:
        """One renewal; marks the lock lost when the store refuses it or it cannot be confirmed in time."""
        started = time.monotonic()
        try:
            held = self.store.acquire_scan_lock(self.task, self.owner, self.ttl_seconds)
        except Exception as error:
            if started - self._renewed_at < self.ttl_seconds * 2 / 3:
                log.warning(
                    "scan lock renewal failed, retrying",
                    extra={"task": self.task, "error": f"{type(error).__name__}: {error}"},
                )
                return
            self._lose(f"the scan lock of task {self.task!r} could not be renewed before it expired: {error}")
            return
        if held:
            with self._lock:
                self._renewed_at = max(self._renewed_at, started)
        else:
            self._lose(f"the scan lock expired and another scan of task {self.task!r} holds it")

    def _lose(self, reason: str) -> None:
        with self._lock:
            if self._lost.is_set():
                return
            self._reason = reason
            self._lost.set()
        log.error("scan lock lost: stopping the scan", extra={"task": self.task, "reason": reason})

    def check(self) -> None:
        """Raise ScanLockLostError unless the lock is still this finder's."""
        if not self._lost.is_set() and time.monotonic() - self._renewed_at >= self.ttl_seconds:
            self._renew()  # a stale lock: confirmed with the store (or lost) before the scan goes on
        if self._lost.is_set():
            raise ScanLockLostError(f"scan stopped: {self._reason}")

    def wait_lost(self, timeout: float) -> bool:
        return self._lost.wait(timeout)

    @contextmanager
    def renewing(self) -> Iterator[None]:
        """Renew the lock in the background (three times per time to live, more often while renewals fail)
        until the block ends; then release it, unless it is lost (then it is another scan's)."""
        stop = threading.Event()

        def renew() -> None:
            while not self._lost.is_set():
                failing = time.monotonic() - self._renewed_at >= self.ttl_seconds / 3
                if stop.wait(self.ttl_seconds / (12 if failing else 3)):
                    return
                self._renew()

        renewer = threading.Thread(target=renew, name="scan-lock", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join(timeout=max(5.0, self.ttl_seconds))
            if not self._lost.is_set():
                try:
                    self.store.release_scan_lock(self.task, self.owner)
                except Exception as error:  # it expires by itself; the scan's own outcome matters more
                    log.warning(
                        "scan lock not released", extra={"task": self.task, "error": f"{type(error).__name__}: {error}"}
                    )
