"""A task's runs beyond its schedule: "run now" starts its finder (the image plugin's sync task) once, as
EventBridge starts it on the schedule; and the failed objects of its last run, as the engines recorded them.

Run now is the annotation `dth.io/run-now: "<RFC 3339 timestamp>"`. Each new value is claimed before anything
runs: `status.lastRunNowHandled` is set to it by a status patch that carries the resourceVersion the operator
read, so two readers of the same version (a stale watch event, a second replica) cannot both claim it, and a
value once claimed never runs again, whatever restarts. Only then is the finder started (or the request
refused: the task is suspended, or its stack is not deployed). A start that fails after the claim is reported,
not retried: setting a new value asks again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from dth.spec.model import FailedObject
from dth.state.dynamodb import DynamoStatusStore
from dth.state.store import ObjectState
from dth_operator.stacks import StackState

#: "Run now": an RFC 3339 timestamp; each new value starts the task's finder once (status.lastRunNowHandled).
RUN_NOW_ANNOTATION = "dth.io/run-now"
#: The ECS `startedBy` of the tasks that "run now" starts (ECS allows 36 characters).
RUN_NOW_STARTED_BY = "dth-run-now"
#: A failure's reason is kept to this many characters in the status (a record's reason may be 16 KiB).
MAX_REASON = 1024


class RunNowResult(StrEnum):
    STARTED = "Started"
    REFUSED = "Refused"
    FAILED = "Failed"


@dataclass(frozen=True)
class RunNowOutcome:
    requested: str
    result: RunNowResult
    reason: str
    message: str
    task_arn: str = ""

    def status(self) -> dict[str, str]:
        """`status.runNow`: what became of the last request (empty fields left out: see merge_conditions)."""
        fields = {
            "requested": self.requested,
            "result": self.result.value,
            "reason": self.reason,
            "message": self.message,
            "taskArn": self.task_arn,
        }
        return {key: value for key, value in fields.items() if value}


def requested(meta: Mapping[str, Any], status: Mapping[str, Any]) -> str | None:
    """The run-now value waiting to be handled: the annotation's, when it differs from the last one handled."""
    value = (meta.get("annotations") or {}).get(RUN_NOW_ANNOTATION)
    if not value or value == status.get("lastRunNowHandled"):
        return None
    return str(value)


def task_definition(stack: StackState) -> str:
    """The task definition that scans: the S3 plugin's finder, or the image plugin's one sync task."""
    return stack.outputs.get("FinderTaskDefinition") or stack.outputs.get("TaskDefinition") or ""


def refusal(value: str, suspended: bool, stack: StackState | None) -> RunNowOutcome | None:
    """Why the finder cannot be started now, in words; None when it can."""
    again = "set a new value of the annotation to ask again"
    if suspended:
        return RunNowOutcome(
            value,
            RunNowResult.REFUSED,
            "Suspended",
            f"run now {value} refused: the task is suspended; resume it and {again}",
        )
    if stack is None or (stack.status.startswith(("CREATE", "ROLLBACK")) and not stack.ready):
        state = "it has no stack" if stack is None else f"stack {stack.name} is {stack.status}"
        return RunNowOutcome(
            value,
            RunNowResult.REFUSED,
            "NotDeployed",
            f"run now {value} refused: the task is not deployed yet ({state}); {again}",
        )
    if not stack.ready or not task_definition(stack) or not stack.outputs.get("Cluster"):
        return RunNowOutcome(
            value,
            RunNowResult.REFUSED,
            "StackNotReady",
            f"run now {value} refused: stack {stack.name} is {stack.status}, not ready to run its finder; {again}",
        )
    return None


def start_finder(ecs: Any, stack: StackState) -> str:
    """RunTask of the stack's finder, as its EventBridge rule's target does: same cluster, task definition and
    network (the stack's own parameters). Returns the task's ARN; raises RuntimeError with ECS's reason when
    ECS answers with a failure instead of a task."""
    parameters = stack.parameters
    response = ecs.run_task(
        cluster=stack.outputs["Cluster"],
        taskDefinition=task_definition(stack),
        count=1,
        launchType="FARGATE",
        startedBy=RUN_NOW_STARTED_BY,
        networkConfiguration={
            "awsvpcConfiguration": {
                "subnets": _listed(parameters.get("Subnets", "")),
                "securityGroups": _listed(parameters.get("SecurityGroups", "")),
                "assignPublicIp": parameters.get("AssignPublicIp") or "DISABLED",
            }
        },
    )
    tasks = response.get("tasks") or []
    if not tasks:
        failures = response.get("failures") or [{}]
        raise RuntimeError(f"ECS started no task: {failures[0].get('reason', 'no reason given')}")
    return str(tasks[0]["taskArn"])


def _listed(value: str) -> list[str]:
    return [item for item in value.split(",") if item]


def read_failures(dynamodb: Any, table: str, run: str, limit: int) -> list[FailedObject]:
    """The first `limit` failed objects of the run, in key order, keys exactly as recorded, reasons shortened
    to MAX_REASON characters."""
    if limit < 1:
        return []
    records = DynamoStatusStore(dynamodb, table).records(run, [ObjectState.FAILED], limit=limit)
    return [FailedObject(key=record.key, reason=_shortened(record.reason or record.last_error)) for record in records]


def _shortened(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 1] + "…"
