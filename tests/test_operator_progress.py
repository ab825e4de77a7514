"""The phase a task's status shows, from its stack and its progress (dth_operator.progress.phase_of)."""

from __future__ import annotations

import pytest

from dth.spec.model import Phase, TransferCounters
from dth.state.queue import QueueDepth
from dth_operator.progress import Progress, phase_of
from dth_operator.stacks import StackState

READY = StackState(name="s", stack_id="id", status="CREATE_COMPLETE", reason="", uid="u")


def progress(
    found: int, copied: int, failed: int = 0, depth: QueueDepth | None = None, finished: bool = True
) -> Progress:
    return Progress("run-1", TransferCounters(found=found, copied=copied, failed=failed), finished, depth)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (progress(3, 3, depth=QueueDepth(0, 0, 0)), Phase.SUCCEEDED),  # S3: queue drained, all accounted
        (progress(3, 3, depth=QueueDepth(0, 1, 0)), Phase.RUNNING),  # a message still in flight
        (progress(3, 2, depth=QueueDepth(0, 0, 0)), Phase.RUNNING),  # not every object accounted yet
        (progress(3, 3, depth=QueueDepth(0, 0, 0), finished=False), Phase.RUNNING),  # the scan goes on
        (progress(2, 2), Phase.SUCCEEDED),  # an image stack has no queue: nothing can be pending
        (progress(2, 1, failed=1), Phase.FAILED),
    ],
)
def test_a_one_shot_task_succeeds_when_everything_is_accounted_for(state: Progress, expected: Phase) -> None:
    assert phase_of(READY, state, once=True, suspended=False)[0] is expected


def test_failures_point_to_where_they_are_explained() -> None:
    s3 = phase_of(READY, progress(3, 2, failed=1, depth=QueueDepth(0, 0, 1)), once=True, suspended=False)
    image = phase_of(READY, progress(2, 1, failed=1), once=True, suspended=False)
    assert s3 == (Phase.FAILED, "1 of 3 failed; see the dead-letter queue")
    assert image == (Phase.FAILED, "1 of 2 failed; see the engine's log")


def test_scheduled_tasks_stay_running_and_stack_states_come_first() -> None:
    assert phase_of(READY, progress(2, 2), once=False, suspended=False)[0] is Phase.RUNNING
    failed = StackState(name="s", stack_id="id", status="ROLLBACK_COMPLETE", reason="LogGroup: denied", uid="u")
    assert phase_of(failed, progress(2, 2), once=True, suspended=False) == (Phase.FAILED, "LogGroup: denied")
    creating = StackState(name="s", stack_id="id", status="CREATE_IN_PROGRESS", reason="", uid="u")
    assert phase_of(creating, progress(0, 0), once=True, suspended=False)[0] is Phase.PROVISIONING


def test_a_failed_scan_fails_the_task_with_its_reason() -> None:
    failed = Progress("run-2", TransferCounters(), True, QueueDepth(0, 0, 0), "destination bucket b does not exist")
    assert phase_of(READY, failed, once=False, suspended=False) == (
        Phase.FAILED,
        "the scan failed: destination bucket b does not exist",
    )


def test_a_rolled_back_update_keeps_the_task_running_on_its_previous_spec() -> None:
    rolled_back = StackState(name="s", stack_id="id", status="UPDATE_ROLLBACK_COMPLETE", reason="", uid="u")
    assert not rolled_back.failed and rolled_back.ready
    assert phase_of(rolled_back, progress(2, 1), once=False, suspended=False)[0] is Phase.RUNNING
    for status in ("UPDATE_ROLLBACK_FAILED", "DELETE_FAILED", "ROLLBACK_IN_PROGRESS"):
        assert StackState(name="s", stack_id="id", status=status, reason="", uid="u").failed
