"""Ctrl-C on a terminal: the first one asks the run to stop cleanly and report what it did; a second one
quits at once."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C


@contextmanager
def first_interrupt_stops(stop: Callable[[], None], what: str) -> Iterator[None]:
    """While inside, the first SIGINT calls `stop` (which must only set flags) and says so on standard
    error; the next raises KeyboardInterrupt as usual. Outside the main thread, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def on_interrupt(_signal: int, _frame: FrameType | None) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print(f"\ndth: stopping: {what} (Ctrl-C again to quit at once)", file=sys.stderr, flush=True)
        stop()

    signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
