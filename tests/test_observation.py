"""The observe timer's conditions from one look at a stack (dth_operator.observation)."""

from __future__ import annotations

from dth_operator.observation import stack_conditions
from dth_operator.stacks import StackState


def look(status: str, *, pending: bool, synced_before: dict[str, str]) -> dict[str, tuple[str, str, str]]:
    stack = StackState("dth-ns-task-0123456789", "arn:stack", status, "", "uid-1")
    conditions = stack_conditions(
        stack,
        pending=pending,
        generation=2,
        synced_before=synced_before,
        dead_letters=0,
        failed_objects=0,
        first_failure=lambda: "WorkerTaskDefinition: Invalid CPU or memory value specified",
    )
    return {c.type: (c.status, c.reason, c.message) for c in conditions}


def test_a_rolled_back_update_is_said_by_both_conditions_before_reconcile_looks_again() -> None:
    """Seen in a full CI run: Degraded already said UpdateRolledBack while StackSynced still said Updating, reconcile's
    word from before the rollback (its next retry was not due yet)."""
    seen = look("UPDATE_ROLLBACK_COMPLETE", pending=True, synced_before={"reason": "Updating", "message": "..."})
    assert seen["Degraded"] == (
        "True",
        "UpdateRolledBack",
        "WorkerTaskDefinition: Invalid CPU or memory value specified",
    )
    assert seen["StackSynced"] == ("False", "UpdateRolledBack", seen["Degraded"][2])
    assert seen["Ready"][0] == "True"  # it still runs, on its previous spec


def test_reconciles_own_words_on_a_rolled_back_update_are_kept() -> None:
    said = "the update to generation 2 rolled back (X: y); the task runs on its previous spec"
    seen = look("UPDATE_ROLLBACK_COMPLETE", pending=True, synced_before={"reason": "UpdateRolledBack", "message": said})
    assert seen["StackSynced"] == ("False", "UpdateRolledBack", said)
    assert seen["Degraded"] == ("True", "UpdateRolledBack", said)


def test_while_pending_reconciles_reason_stands() -> None:
    seen = look("UPDATE_IN_PROGRESS", pending=True, synced_before={"reason": "Updating", "message": "to generation 2"})
    assert seen["StackSynced"] == ("False", "Updating", "to generation 2")
    assert seen["Degraded"][0] == "False"
    assert look("CREATE_COMPLETE", pending=True, synced_before={})["StackSynced"][1] == "Pending"


def test_an_applied_stack_is_synced_from_its_own_state() -> None:
    assert look("UPDATE_COMPLETE", pending=False, synced_before={"reason": "Updating"})["StackSynced"][:2] == (
        "True",
        "UPDATE_COMPLETE",
    )
    assert look("UPDATE_ROLLBACK_COMPLETE", pending=False, synced_before={})["Degraded"][0] == "False"
