"""What every handler module shares: the resource they watch, the operator's settings, its AWS clients (one
set per process), the handlers' timing metric, and the retry delay for stacks in progress."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from dth.spec.model import API_GROUP, API_VERSION, PLURAL
from dth_operator import metrics
from dth_operator.aws import Clients
from dth_operator.settings import OperatorSettings

RESOURCE = (API_GROUP, API_VERSION, PLURAL)
RETAIN_ANNOTATION = "dth.io/deletion-policy"

SETTINGS = OperatorSettings.from_environment()
_clients: Clients | None = None


def clients() -> Clients:
    global _clients  # one set of clients per operator process, made on first use
    if _clients is None:
        _clients = Clients(SETTINGS.region)
    return _clients


@contextmanager
def timed(handler: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        metrics.RECONCILE_SECONDS.labels(handler=handler).observe(time.perf_counter() - started)


def backoff(retry: int) -> float:
    """Seconds before the next look at a stack in progress (or a failed delete): the setting's delay, doubling
    with each try, at most twelve times the delay (two minutes by default)."""
    base = SETTINGS.stack_retry_delay
    return float(min(base * 2 ** min(retry, 4), 12 * base))
