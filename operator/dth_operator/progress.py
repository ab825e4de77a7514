"""What a task's status says: its phase and conditions from the stack, its progress from the status
table's counters and the queues' depths (cheap reads: one item, two queue attributes)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dth.spec.model import Condition, Phase, TransferCounters
from dth.state.dynamodb import DynamoStatusStore
from dth.state.queue import QueueDepth
from dth.state.sqs import SqsQueue
from dth_operator.stacks import StackState


@dataclass(frozen=True)
class Progress:
    run: str | None
    counters: TransferCounters
    scan_finished: bool
    depth: QueueDepth | None
    scan_error: str | None = None  # the run's scan could not run or finish, and why

    @property
    def accounted(self) -> bool:
        c = self.counters
        return c.found == c.copied + c.skipped + c.failed


def read_progress(dynamodb: Any, sqs: Any, task: str, outputs: dict[str, str]) -> Progress:
    table = outputs.get("TableName")
    if not table:
        return Progress(None, TransferCounters(), False, None)
    store = DynamoStatusStore(dynamodb, table)
    run = store.latest_run(task)
    counters = store.counters(run) if run else TransferCounters()
    finished = store.scan_finished(run) if run else False
    error = store.scan_error(run) if run and finished else None
    depth = None
    if outputs.get("QueueUrl") and outputs.get("DeadLetterQueueUrl"):
        depth = SqsQueue(sqs, outputs["QueueUrl"], outputs["DeadLetterQueueUrl"]).depth()
    return Progress(run, counters, finished, depth, error)


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(kind: str, ok: bool, reason: str, message: str = "") -> Condition:
    return Condition(type=kind, status="True" if ok else "False", reason=reason, message=message)


def phase_of(stack: StackState, progress: Progress, *, once: bool, suspended: bool) -> tuple[Phase, str]:
    if stack.status.startswith("DELETE"):
        return Phase.DELETING, stack.reason
    if stack.failed:
        return Phase.FAILED, stack.reason
    if stack.in_progress:
        return Phase.PROVISIONING, f"stack {stack.status}"
    if suspended:
        return Phase.SUSPENDED, "workers and schedule stopped"
    if progress.scan_error:
        return Phase.FAILED, f"the scan failed: {progress.scan_error}"
    c = progress.counters
    # An image stack has no queue (its one task copies everything itself): nothing can be pending there.
    idle = progress.depth is None or progress.depth.pending == 0
    if once and progress.run and progress.scan_finished and idle and progress.accounted:
        if c.failed:
            where = "; see the dead-letter queue" if progress.depth is not None else "; see the engine's log"
            return Phase.FAILED, f"{c.failed} of {c.found} failed{where}"
        return Phase.SUCCEEDED, f"{c.copied} copied, {c.skipped} skipped of {c.found} found"
    return Phase.RUNNING, "scanning" if progress.run and not progress.scan_finished else "transferring"


def merge_conditions(previous: list[dict[str, Any]], updates: list[Condition]) -> list[dict[str, Any]]:
    """Keep lastTransitionTime unless a condition's status changed, as Kubernetes conventions ask."""
    old = {c.get("type"): c for c in previous}
    merged = []
    for update in updates:
        before = old.get(update.type)
        changed = before is None or before.get("status") != update.status
        stamp = now() if changed or before is None else before.get("lastTransitionTime") or now()
        dumped = update.model_copy(update={"last_transition_time": stamp}).model_dump(by_alias=True)
        # Empty strings are left out: this API server stores "" in a status patch as null, then refuses it.
        merged.append({key: value for key, value in dumped.items() if value not in ("", None)})
    return merged
