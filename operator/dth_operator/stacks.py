"""A task's plugin stack: named after the resource, tagged with its owner (cluster id and UID), so that a
restarted operator adopts the stack it made instead of making a second one, and never touches another's."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.exceptions

from dth_operator.aws import error_code, error_message

UID_TAG = "dth.io/uid"
CLUSTER_TAG = "dth.io/cluster"
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"]
MAX_NAME = 128
_HASH = 10


def stack_name(cluster_id: str, namespace: str, name: str) -> str:
    """Readable and collision-free: `dth-NAMESPACE-NAME-HASH`, valid for CloudFormation ([A-Za-z][-A-Za-z0-9]*,
    at most 128). The hash is of cluster/namespace/name, so names that read alike after the dashes or the
    truncation (`a-b`/`c` and `a`/`b-c`) still differ, and so do two clusters' tasks of the same name."""
    digest = hashlib.sha256(f"{cluster_id}/{namespace}/{name}".encode()).hexdigest()[:_HASH]
    readable = re.sub(r"[^A-Za-z0-9-]", "-", f"dth-{namespace}-{name}")[: MAX_NAME - _HASH - 1]
    return f"{readable}-{digest}"


def task_name(namespace: str, name: str) -> str:
    """The task's identity inside the stack (runs, locks, log names)."""
    return f"{namespace}-{name}"


@dataclass(frozen=True)
class StackState:
    name: str
    stack_id: str
    status: str
    reason: str
    uid: str | None
    outputs: dict[str, str] = field(default_factory=dict)
    cluster: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)

    @property
    def in_progress(self) -> bool:
        return self.status.endswith("_IN_PROGRESS")

    @property
    def failed(self) -> bool:
        """Not working: a failed create (ROLLBACK_*) or delete, or a rollback that failed. A stack whose update
        rolled back (UPDATE_ROLLBACK_COMPLETE) still runs, on its previous spec."""
        return self.status.endswith("_FAILED") or self.status.startswith("ROLLBACK")

    @property
    def ready(self) -> bool:
        return self.status in {"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE"}

    def owned_by(self, uid: str) -> bool:
        return self.uid == uid


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
        cluster=tags.get(CLUSTER_TAG),
        outputs={o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])},
        parameters={p["ParameterKey"]: str(p.get("ParameterValue", "")) for p in stack.get("Parameters", [])},
    )


def stack_arguments(
    name: str,
    uid: str,
    cluster_id: str,
    template: Path,
    parameters: Sequence[Mapping[str, str]],
    tags: Mapping[str, str],
) -> dict[str, Any]:
    """CreateStack's and UpdateStack's arguments: the template, the parameters, and the owner tags."""
    owner = {**tags, UID_TAG: uid, CLUSTER_TAG: cluster_id}
    return {
        "StackName": name,
        "TemplateBody": template.read_text(encoding="utf-8"),
        "Parameters": list(parameters),
        "Capabilities": CAPABILITIES,
        "Tags": [{"Key": key, "Value": value} for key, value in owner.items()],
    }


def failures(cloudformation: Any, name: str) -> list[str]:
    """The resources that failed in the stack's latest operation, oldest first, each with CloudFormation's
    reason: what a user needs to fix."""
    try:
        events = cloudformation.describe_stack_events(StackName=name)["StackEvents"]
    except botocore.exceptions.ClientError:
        return []
    found: list[str] = []
    for event in events:  # newest first, as returned, back to the start of the latest operation
        if event.get("LogicalResourceId") == name:
            if event.get("ResourceStatusReason") == "User Initiated":
                break
            continue
        if str(event.get("ResourceStatus", "")).endswith("_FAILED"):
            found.append(f"{event.get('LogicalResourceId')}: {event.get('ResourceStatusReason', 'failed')}")
    return found[::-1]


def first_failure(cloudformation: Any, name: str) -> str:
    """The first resource that failed in the stack's latest operation, with the reason."""
    found = failures(cloudformation, name)
    return found[0] if found else ""
