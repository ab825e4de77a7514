"""Prometheus metrics of the operator, served on /metrics."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from dth.spec.model import Phase

TASKS = Gauge("dth_tasks", "TransferTasks by phase", ["phase"])
OBJECTS = Gauge("dth_task_objects", "Objects of the task's latest run, by outcome", ["namespace", "name", "outcome"])
BYTES = Gauge("dth_task_bytes", "Bytes of the task's latest run, by outcome", ["namespace", "name", "outcome"])
QUEUE_DEPTH = Gauge(
    "dth_task_queue_messages", "Messages waiting or in flight on the task's work queue", ["namespace", "name"]
)
DEAD_LETTERS = Gauge("dth_task_dead_letter_messages", "Messages on the task's dead-letter queue", ["namespace", "name"])
RECONCILE_SECONDS = Histogram("dth_reconcile_duration_seconds", "Time spent in a reconcile handler", ["handler"])
AWS_ERRORS = Counter("dth_aws_api_errors_total", "AWS API errors met by the operator", ["service", "code"])

_phases: dict[tuple[str, str], Phase] = {}


def set_phase(namespace: str, name: str, phase: Phase | None) -> None:
    """Track each task's phase so that the per-phase gauge is exact; None forgets the task."""
    if phase is None:
        _phases.pop((namespace, name), None)
        for outcome in ("found", "copied", "skipped", "failed"):
            for gauge in (OBJECTS, BYTES):
                with contextlib.suppress(KeyError):  # never set for this task
                    gauge.remove(namespace, name, outcome)
    else:
        _phases[(namespace, name)] = phase
    for known in Phase:
        TASKS.labels(phase=known.value).set(sum(1 for p in _phases.values() if p is known))


def serve(port: int) -> None:
    if port:
        start_http_server(port)
