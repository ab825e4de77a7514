"""Memory for streamed copies: a byte budget shared by all threads, and a few reusable part-sized buffers.

A streamed part used to be read into a new `bytes` (and http.client copied it once more to prepend the
headers): 16 parts in flight cost 256 MiB at the peak, and every part allocated 8 MiB afresh. Parts are now read
into one of a fixed number of buffers, kept for the next part, and sent from a view of it: the buffers in
flight are bounded by the pool, whatever the concurrency.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

MiB = 1024 * 1024
# What the pool may hold: with 8 MiB parts, 8 buffers. Together with the interpreter, botocore and the listing
# this keeps a cross-endpoint copy under 150 MiB (issue #12), while 8 parts in flight still fill a link.
POOL_BYTES = 64 * MiB
# Reads below this size are plain `bytes`: small objects are many and cheap, and a pooled buffer would idle.
SMALL_READ = 1 * MiB


def pool_size(concurrency: int, buffer_size: int) -> int:
    """How many part buffers a copier keeps: at most one per part in flight and about POOL_BYTES in all."""
    return max(2, min(concurrency, POOL_BYTES // buffer_size))


class MemoryBudget:
    """Bytes that may be held in memory at once by streamed copies, shared by all threads."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._condition = threading.Condition()

    def acquire(self, size: int) -> int:
        amount = min(size, self._limit)  # one object larger than the budget still gets to run alone
        with self._condition:
            self._condition.wait_for(lambda: self._used + amount <= self._limit)
            self._used += amount
        return amount

    def release(self, amount: int) -> None:
        with self._condition:
            self._used -= amount
            self._condition.notify_all()


class BufferPool:
    """At most `count` buffers of `size` bytes, allocated on first need and reused: `take` waits while all are
    lent. Counts what it did, so that tests can check the bound (`peak_lent`, `allocated`)."""

    def __init__(self, count: int, size: int) -> None:
        if count < 1:
            raise ValueError("a buffer pool needs at least one buffer")
        self.count = count
        self.size = size
        self._idle: list[bytearray] = []
        self._lent = 0
        self._condition = threading.Condition()
        self.allocated = 0  # buffers created, ever: at most `count`
        self.peak_lent = 0  # the most buffers out at once: at most `count`

    def fits(self, length: int) -> bool:
        return SMALL_READ <= length <= self.size

    @contextmanager
    def lend(self) -> Iterator[bytearray]:
        with self._condition:
            self._condition.wait_for(lambda: self._lent < self.count)
            self._lent += 1
            self.peak_lent = max(self.peak_lent, self._lent)
            buffer = self._idle.pop() if self._idle else None
            if buffer is None:
                self.allocated += 1
        if buffer is None:
            buffer = bytearray(self.size)  # outside the lock: zeroing 8 MiB takes a while
        try:
            yield buffer
        finally:
            with self._condition:
                self._idle.append(buffer)
                self._lent -= 1
                self._condition.notify()
