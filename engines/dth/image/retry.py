"""Attempts with exponential backoff and jitter; only failures that may pass are tried again."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from dth.image.errors import RegistryError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """`max_retries` attempts after the first; the n-th retry waits base * 2**(n-1) (at most max_delay),
    times a random factor in [0.5, 1] so that workers that failed together do not retry together."""

    max_retries: int = 3
    base_delay: float = 1.0
    max_delay: float = 30.0

    def delay(self, retry: int) -> float:
        return random.uniform(0.5, 1.0) * min(self.max_delay, self.base_delay * 2.0 ** (retry - 1))


class RetriesExhaustedError(Exception):
    """The last error, after `attempts` attempts (1 when the error was not worth retrying)."""

    def __init__(self, error: RegistryError, attempts: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.attempts = attempts


def retrying(
    attempt: Callable[[], T],
    policy: RetryPolicy,
    *,
    on_retry: Callable[[RegistryError], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[T, int]:
    """(result, attempts made); raises RetriesExhaustedError with the last RegistryError."""
    attempts = 0
    while True:
        attempts += 1
        try:
            return attempt(), attempts
        except RegistryError as error:
            if not error.retryable or attempts > policy.max_retries:
                raise RetriesExhaustedError(error, attempts) from error
            if on_retry is not None:
                on_retry(error)
            sleep(policy.delay(attempts))
