"""botocore's "standard" retry policy, for the lean client: which failures are retried, how long to wait,
and the retry quota that stops a client from retrying into an outage."""

from __future__ import annotations

import random
import threading

THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
TRANSIENT_CODES = frozenset({"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete"})
TRANSIENT_STATUS = frozenset({500, 502, 503, 504})
MAX_BACKOFF = 20.0


def retryable_error(status: int, code: str | None) -> bool:
    return status in TRANSIENT_STATUS or code in TRANSIENT_CODES or code in THROTTLING_CODES


def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based): full jitter, truncated exponential."""
    return random.random() * min(2.0 ** (attempt - 1), MAX_BACKOFF)


class RetryQuota:
    """A bucket of retry tokens shared by a client's threads (botocore: 500, 5 per retry, 10 per timeout
    retry, given back on success)."""

    CAPACITY = 500
    RETRY_COST = 5
    TIMEOUT_RETRY_COST = 10
    NO_RETRY_INCREMENT = 1

    def __init__(self) -> None:
        self._available = self.CAPACITY
        self._lock = threading.Lock()

    def acquire(self, timeout: bool) -> int:
        """Tokens taken for one retry, 0 when the quota is spent (then do not retry)."""
        cost = self.TIMEOUT_RETRY_COST if timeout else self.RETRY_COST
        with self._lock:
            if self._available < cost:
                return 0
            self._available -= cost
            return cost

    def release(self, taken: int) -> None:
        if not taken and self._available >= self.CAPACITY:
            return  # the usual case, a success at full quota: no lock for nothing
        amount = taken or self.NO_RETRY_INCREMENT
        with self._lock:
            self._available = min(self.CAPACITY, self._available + amount)
