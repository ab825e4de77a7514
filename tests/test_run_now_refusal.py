"""When "run now" is refused, and in which words (dth_operator.runs.refusal): a narrow unit test; the
end-to-end behaviour is in tests/test_operator_runs.py."""

from __future__ import annotations

import pytest

from dth_operator.runs import RunNowOutcome, RunNowResult, refusal
from dth_operator.stacks import StackState

OUTPUTS = {"Cluster": "c", "FinderTaskDefinition": "arn:aws:ecs:us-east-1:1:task-definition/dth-x-finder:1"}


def stack(status: str, outputs: dict[str, str] | None = None) -> StackState:
    return StackState("dth-ns-t-0123456789", "id", status, "", "uid", OUTPUTS if outputs is None else outputs)


@pytest.mark.parametrize("status", ["CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE"])
def test_a_ready_stack_with_a_finder_may_run(status: str) -> None:
    assert refusal("t", False, stack(status)) is None
    assert refusal("t", False, stack(status, {"Cluster": "c", "TaskDefinition": "sync"})) is None  # image plugin


def test_suspended_comes_first() -> None:
    refused = refusal("2026-12-02T04:00:00Z", True, stack("CREATE_COMPLETE"))
    assert refused == RunNowOutcome(
        "2026-12-02T04:00:00Z",
        RunNowResult.REFUSED,
        "Suspended",
        "run now 2026-12-02T04:00:00Z refused: the task is suspended; resume it and set a new value of the "
        "annotation to ask again",
    )


@pytest.mark.parametrize(
    ("state", "reason", "words"),
    [
        (None, "NotDeployed", "not deployed yet (it has no stack)"),
        (
            stack("CREATE_IN_PROGRESS"),
            "NotDeployed",
            "not deployed yet (stack dth-ns-t-0123456789 is CREATE_IN_PROGRESS)",
        ),
        (stack("ROLLBACK_COMPLETE"), "NotDeployed", "is ROLLBACK_COMPLETE"),
        (stack("UPDATE_IN_PROGRESS"), "StackNotReady", "is UPDATE_IN_PROGRESS, not ready to run its finder"),
        (stack("DELETE_IN_PROGRESS"), "StackNotReady", "is DELETE_IN_PROGRESS"),
        (stack("UPDATE_COMPLETE", {"Cluster": "c"}), "StackNotReady", "not ready to run its finder"),
    ],
)
def test_a_task_without_a_ready_stack_is_refused_in_words(state: StackState | None, reason: str, words: str) -> None:
    refused = refusal("t", False, state)
    assert refused is not None and refused.result is RunNowResult.REFUSED
    assert refused.reason == reason and words in refused.message
    assert refused.status() == {"requested": "t", "result": "Refused", "reason": reason, "message": refused.message}
