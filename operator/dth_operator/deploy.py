"""Bringing a task's stack to its spec, one step per call, as CloudFormation allows: create or update it, wait
while it is in progress, and recover from the failed states it can recover from.

Each call looks at the stack and does at most one thing. It returns when the task's generation is applied,
raises `StackWaitError` while something is under way (the handler retries with backoff), and `StackBlockedError` when
a person must act (the handler reports it and stops; the next spec change tries again).

- In progress: wait. CloudFormation refuses UpdateStack until the stack settles, and the new spec is not lost:
  it is sent once the stack settles.
- ROLLBACK_COMPLETE (a failed create: the stack holds only its name): delete it and create it again, up to
  `MAX_RECREATES` times.
- UPDATE_ROLLBACK_COMPLETE after this generation's update: the stack runs on the previous spec; blocked, with
  the failed resource, until the spec changes again.
- UPDATE_ROLLBACK_FAILED: ContinueUpdateRollback, up to `MAX_CONTINUES` times.
- A stack whose owner tag names another resource is never updated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import botocore.exceptions

from dth_operator.aws import error_code, error_message, is_retryable
from dth_operator.stacks import CAPABILITIES, UID_TAG, describe, failures, first_failure

MAX_RECREATES = 2  # three creates in all
MAX_CONTINUES = 2
RECREATABLE = frozenset({"ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "CREATE_FAILED"})
# A failed create rolls back before it settles in ROLLBACK_COMPLETE: on AWS that takes minutes.
ROLLING_BACK_CREATE = "ROLLBACK_IN_PROGRESS"


def recovering(status: str, attempts: int, last_reason: str) -> bool:
    """Whether a stack in `status` is one `Deployment.step` is recovering from by itself (so the task is still
    being provisioned, not failed)."""
    if status in RECREATABLE or status == ROLLING_BACK_CREATE:
        return attempts < MAX_RECREATES
    if status == "UPDATE_ROLLBACK_FAILED":
        return attempts < MAX_CONTINUES
    # Deleting a rolled-back stack to create it again: `attempts` counts the re-creations until one applies (the
    # reason alone is not enough: a look while the delete runs says StackBusy).
    return status.startswith("DELETE") and status != "DELETE_FAILED" and (last_reason == "Recreating" or attempts > 0)


class Action(Enum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    APPLIED = "applied"


class StackWaitError(Exception):
    """Something is under way: try again later. `reason` is a condition reason (CamelCase)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class StackBlockedError(Exception):
    """The stack cannot reach the spec without a person: report it. `degraded`: the task still runs (on its
    previous spec); otherwise it has failed."""

    def __init__(self, reason: str, message: str, *, degraded: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.degraded = degraded


@dataclass
class Deployment:
    """One task's stack and what the task's status remembers about it (`sent_generation`, `attempts`), which
    the handler writes back whatever the outcome. `events` are (type, reason, message) for the handler to post."""

    cloudformation: Any
    arguments: dict[str, Any]  # CreateStack/UpdateStack's, from stacks.stack_arguments
    uid: str
    generation: int
    sent_generation: int | None = None
    attempts: int = 0
    events: list[tuple[str, str, str]] = field(default_factory=list)
    ours: bool = False  # the stack exists (or is being created) and carries this task's UID

    @property
    def name(self) -> str:
        return str(self.arguments["StackName"])

    def step(self) -> Action:
        stack = describe(self.cloudformation, self.name)
        if stack is None or stack.status == "DELETE_COMPLETE":
            self.cloudformation.create_stack(**self.arguments)
            self.sent_generation = self.generation
            self.ours = True
            raise StackWaitError("Creating", f"stack {self.name} is being created")
        if not stack.owned_by(self.uid):
            raise StackBlockedError(
                "StackNotOwned",
                f"stack {self.name} belongs to another resource (tag {UID_TAG}={stack.uid}, cluster {stack.cluster}): "
                "it is left alone; delete it or rename this task",
            )
        self.ours = True
        if stack.in_progress:
            raise StackWaitError(
                "StackBusy", f"stack {self.name} is {stack.status}; generation {self.generation} is applied after"
            )
        if stack.status in RECREATABLE:
            return self._recreate(stack.status)
        if stack.status == "UPDATE_ROLLBACK_FAILED":
            return self._continue_rollback()
        if stack.status == "DELETE_FAILED":
            raise StackBlockedError(
                "DeleteFailed",
                f"stack {self.name} could not be deleted ({first_failure(self.cloudformation, self.name)}); "
                "delete it by hand, and the operator creates it again",
            )
        if self.sent_generation == self.generation:
            return self._outcome(stack.status)
        return self._update()

    def _outcome(self, status: str) -> Action:
        """This generation was sent and the stack has settled."""
        if status == "UPDATE_ROLLBACK_COMPLETE":
            failure = first_failure(self.cloudformation, self.name) or "no reason given"
            raise StackBlockedError(
                "UpdateRolledBack",
                f"the update to generation {self.generation} rolled back ({failure}); the task runs on its previous "
                "spec until the spec changes again",
                degraded=True,
            )
        self.attempts = 0
        return Action.APPLIED

    def _update(self) -> Action:
        try:
            self.cloudformation.update_stack(**self.arguments)
        except botocore.exceptions.ClientError as error:
            message = error_message(error)
            if error_code(error) != "ValidationError":
                raise
            if "No updates are to be performed" in message:
                self.sent_generation = self.generation
                self.attempts = 0
                return Action.UNCHANGED
            if "can not be updated" in message:  # it began an operation since we looked: wait for it
                raise StackWaitError("StackBusy", f"stack {self.name}: {message}") from None
            raise
        self.sent_generation = self.generation
        raise StackWaitError("Updating", f"stack {self.name} is being updated to generation {self.generation}")

    def _recreate(self, status: str) -> Action:
        failure = first_failure(self.cloudformation, self.name) or "no reason given"
        if self.attempts >= MAX_RECREATES:
            raise StackBlockedError(
                "CreateFailed", f"stack {self.name} could not be created in {self.attempts + 1} tries: {failure}"
            )
        self.attempts += 1
        self.events.append(
            (
                "Warning",
                "StackRolledBack",
                f"stack {self.name} is {status}: {failure}; deleting it to create it again "
                f"(try {self.attempts} of {MAX_RECREATES})",
            )
        )
        self.cloudformation.delete_stack(StackName=self.name)
        self.sent_generation = None
        raise StackWaitError("Recreating", f"stack {self.name} {status} ({failure}); re-creating it")

    def _continue_rollback(self) -> Action:
        found = failures(self.cloudformation, self.name)
        failure = found[-1] if found else "no reason given"  # the rollback's own failure is the newest
        advice = (
            f"fix the resource, then run `aws cloudformation continue-update-rollback --stack-name {self.name}` "
            "(--resources-to-skip for one that cannot be fixed); the next spec change is applied after"
        )
        if self.attempts >= MAX_CONTINUES:
            raise StackBlockedError(
                "UpdateRollbackFailed",
                f"stack {self.name}: the rollback failed {self.attempts} times ({failure}); {advice}",
            )
        try:
            self.cloudformation.continue_update_rollback(StackName=self.name)
        except botocore.exceptions.ClientError as error:
            if is_retryable(error):
                raise
            raise StackBlockedError(
                "UpdateRollbackFailed",
                f"stack {self.name}: ContinueUpdateRollback refused: {error_message(error)} ({failure}); {advice}",
            ) from None
        self.attempts += 1
        self.events.append(
            (
                "Warning",
                "ContinuingRollback",
                f"stack {self.name} is UPDATE_ROLLBACK_FAILED ({failure}); continuing the rollback "
                f"(try {self.attempts} of {MAX_CONTINUES})",
            )
        )
        self.sent_generation = None  # the spec is sent again once the rollback completes
        raise StackWaitError("ContinuingRollback", f"stack {self.name}: continuing its rollback ({failure})")


def suspend_in_place(cloudformation: Any, name: str, uid: str) -> str:
    """Stop the workers and the schedule of a task's stack and change nothing else (its previous template and
    parameter values, `Suspend=true`): for a deployed task that the tenant policy no longer allows, whose spec
    must not be sent again. Returns what was found, in words ("" when there is no stack of the task's to stop);
    raises `StackWaitError` while the stack is in progress, before the update or during it."""
    stack = describe(cloudformation, name)
    if stack is None or stack.status == "DELETE_COMPLETE" or not stack.owned_by(uid):
        return ""
    if stack.in_progress:
        raise StackWaitError("Suspending", f"stack {name} is {stack.status}; its workers are stopped after")
    if stack.status in RECREATABLE:
        return f"its stack {name} never ran ({stack.status})"
    if stack.parameters.get("Suspend") == "true" and not stack.failed:
        return f"its stack {name} is suspended (workers and schedule stopped)"
    kept = [{"ParameterKey": key, "UsePreviousValue": True} for key in stack.parameters if key != "Suspend"]
    try:
        cloudformation.update_stack(
            StackName=name,
            UsePreviousTemplate=True,
            Parameters=[*kept, {"ParameterKey": "Suspend", "ParameterValue": "true"}],
            Capabilities=CAPABILITIES,
        )
    except botocore.exceptions.ClientError as error:
        if error_code(error) == "ValidationError" and "can not be updated" in error_message(error):
            raise StackWaitError("Suspending", f"stack {name}: {error_message(error)}") from None
        raise
    raise StackWaitError("Suspending", f"stack {name}: stopping its workers and schedule")
