"""Waiting for a condition in tests and benchmarks, with a message that says what did not happen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    condition: Callable[[], Any],
    timeout: float = 90,
    what: str = "condition",
    detail: Callable[[], Any] | None = None,
    interval: float = 0.2,
) -> Any:
    """Call `condition` until it returns something true, and return that; AssertionError naming `what` (and
    `detail()`, the state that explains it) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            explanation = f"\n{detail()}" if detail else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{explanation}")
        time.sleep(interval)
