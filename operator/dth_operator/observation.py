"""What one look at a task's stack says in its conditions (Ready, StackSynced, Degraded), for the observe timer.

Kept apart from the handler so that each rule can be checked on its own: the timer's view of the status can lag
behind reconcile's last word, and these rules decide whose word stands.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dth.spec.model import Condition
from dth_operator.progress import condition
from dth_operator.stacks import StackState


def pending_synced(before: Mapping[str, Any], generation: int) -> Condition:
    """StackSynced while the spec's generation is not applied: False, saying why (reconcile's reason, if any)."""
    if before.get("reason"):
        return condition("StackSynced", False, str(before["reason"]), str(before.get("message", "")))
    return condition("StackSynced", False, "Pending", f"generation {generation} is not applied yet")


def stack_conditions(
    stack: StackState,
    *,
    pending: bool,
    generation: int,
    synced_before: Mapping[str, Any],
    dead_letters: int,
    failed_objects: int,
    first_failure: Callable[[], str],
) -> tuple[Condition, Condition, Condition]:
    """Ready, StackSynced and Degraded from one look. `synced_before` is reconcile's last word (status.stackSync);
    `first_failure` reads the stack's first failed resource, only when needed."""
    ready = condition("Ready", stack.ready, stack.status)
    if pending and stack.status == "UPDATE_ROLLBACK_COMPLETE":
        # Both conditions say it from the same look: reconcile's next retry may be a while off, and until then
        # its last word (Updating) is out of date.
        why = (
            str(synced_before.get("message")) if synced_before.get("reason") == "UpdateRolledBack" else first_failure()
        )
        rolled_back = condition("StackSynced", False, "UpdateRolledBack", why)
        return ready, rolled_back, condition("Degraded", True, "UpdateRolledBack", why)
    if pending:  # reconcile's word on why the spec is not applied yet stands
        synced = pending_synced(synced_before, generation)
    else:
        synced = condition("StackSynced", not stack.in_progress and not stack.failed, stack.status, stack.reason)
    degraded = condition(
        "Degraded",
        dead_letters > 0 or failed_objects > 0,
        "DeadLetters" if dead_letters else "NoDeadLetters",
        f"{dead_letters} messages on the dead-letter queue" if dead_letters else "",
    )
    return ready, synced, degraded
