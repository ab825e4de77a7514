"""A task's plugin stack: named after the resource, tagged with its UID, so that a restarted operator
adopts the stack it made instead of making a second one."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import botocore.exceptions

from dth.errors import SpecError
from dth_operator.aws import error_code, error_message

UID_TAG = "dth.io/uid"
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"]


def stack_name(namespace: str, name: str) -> str:
    """Deterministic, and valid for CloudFormation ([A-Za-z][-A-Za-z0-9]*, at most 128)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", f"dth-{namespace}-{name}")[:128]


def task_name(namespace: str, name: str) -> str:
    """The task's identity inside the stack (runs, locks, log names)."""
    return f"{namespace}-{name}"


class Action(Enum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class StackState:
    name: str
    stack_id: str
    status: str
    reason: str
    uid: str | None
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def in_progress(self) -> bool:
        return self.status.endswith("_IN_PROGRESS")

    @property
    def failed(self) -> bool:
        return self.status.endswith("_FAILED") or "ROLLBACK" in self.status

    @property
    def ready(self) -> bool:
        return self.status in {"CREATE_COMPLETE", "UPDATE_COMPLETE"}


def describe(cloudformation: Any, name: str) -> StackState | None:
    try:
        stacks = cloudformation.describe_stacks(StackName=name)["Stacks"]
    except botocore.exceptions.ClientError as error:
        if error_code(error) == "ValidationError" and "does not exist" in error_message(error):
            return None
        raise
    if not stacks:
        return None
    stack = stacks[0]
    tags = {tag["Key"]: tag["Value"] for tag in stack.get("Tags", [])}
    return StackState(
        name=name,
        stack_id=str(stack["StackId"]),
        status=str(stack["StackStatus"]),
        reason=str(stack.get("StackStatusReason", "")),
        uid=tags.get(UID_TAG),
        outputs={o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])},
    )


def ensure(
    cloudformation: Any,
    name: str,
    uid: str,
    template: Path,
    parameters: Sequence[Mapping[str, str]],
    tags: Mapping[str, str],
) -> Action:
    """Create the stack, or update it (adopting one made earlier for the same resource)."""
    existing = describe(cloudformation, name)
    arguments: dict[str, Any] = {
        "StackName": name,
        "TemplateBody": template.read_text(encoding="utf-8"),
        "Parameters": list(parameters),
        "Capabilities": CAPABILITIES,
        "Tags": [{"Key": key, "Value": value} for key, value in {**tags, UID_TAG: uid}.items()],
    }
    if existing is None or existing.status == "DELETE_COMPLETE":
        cloudformation.create_stack(**arguments)
        return Action.CREATED
    if existing.uid != uid:
        raise SpecError(
            f"stack {name} exists but belongs to another resource (tag {UID_TAG}={existing.uid}); "
            "delete it or rename this task"
        )
    try:
        cloudformation.update_stack(**arguments)
    except botocore.exceptions.ClientError as error:
        if error_code(error) == "ValidationError" and "No updates are to be performed" in error_message(error):
            return Action.UNCHANGED
        raise
    return Action.UPDATED


def delete(cloudformation: Any, name: str) -> None:
    cloudformation.delete_stack(StackName=name)


def first_failure(cloudformation: Any, name: str) -> str:
    """The first resource that failed, with CloudFormation's reason: what a user needs to fix."""
    try:
        events = cloudformation.describe_stack_events(StackName=name)["StackEvents"]
    except botocore.exceptions.ClientError:
        return ""
    for event in reversed(events):  # newest first as returned: the first failure is the oldest
        if str(event.get("ResourceStatus", "")).endswith("_FAILED") and event.get("LogicalResourceId") != name:
            return f"{event.get('LogicalResourceId')}: {event.get('ResourceStatusReason', 'failed')}"
    return ""
