"""Run now: the annotation `dth.io/run-now` starts a deployed task's finder (or its image sync task) once per
value. What a value asks for and how the finder is started are in runs.py; this module is the handler."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import botocore.exceptions
import kopf

from dth.spec.model import Phase
from dth_operator import runs
from dth_operator.aws import count, error_message
from dth_operator.context import RESOURCE, clients, timed
from dth_operator.runs import RunNowOutcome, RunNowResult
from dth_operator.stacks import describe
from dth_operator.status_writes import write_status


@kopf.on.event(*RESOURCE)
def run_now(
    *,
    event: Mapping[str, Any],
    body: kopf.Body,
    meta: kopf.Meta,
    spec: kopf.Spec,
    status: kopf.Status,
    name: str,
    namespace: str | None,
    uid: str,
    logger: Any,
    **_: Any,
) -> None:
    """The annotation dth.io/run-now: each new value starts the finder once (see runs.py). Watched on every
    event, not as a change of the resource: kopf leaves the annotations under its own prefix (dth.io) out of
    what it compares, and a value set while the operator was down must still be seen when it starts."""
    if event.get("type") == "DELETED" or meta.get("deletionTimestamp"):
        return
    value = runs.requested(meta, status)
    if value is None:
        return
    namespace = namespace or "default"
    if not claim(namespace, name, str(meta.get("resourceVersion", "")), value):
        logger.debug(f"run now {value}: claimed elsewhere or the task changed meanwhile; the next event decides")
        return
    with timed("run_now"):
        outcome = start(value, spec, status, uid)
    logger.info(outcome.message)
    write_status(namespace, name, {"runNow": outcome.status()})
    if outcome.result is RunNowResult.STARTED:
        kopf.info(body, reason="RunNow", message=outcome.message)
    else:
        kopf.warn(body, reason=f"RunNow{outcome.result.value}", message=outcome.message)


def claim(namespace: str, name: str, resource_version: str, value: str) -> bool:
    """Record the value as handled, on the condition that the task is still the version read: True when this
    call made the claim. A stale event or another replica that read the same version gets a conflict (so does a
    task deleted meanwhile): the next event looks again."""
    return write_status(namespace, name, {"lastRunNowHandled": value}, seen_version=resource_version)


def start(value: str, spec: Mapping[str, Any], status: Mapping[str, Any], uid: str) -> RunNowOutcome:
    """Start the finder of the task's own stack, or say why not."""
    suspended = bool(spec.get("suspend"))
    stack = None
    try:
        if not suspended and status.get("stackName") and status.get("phase") != Phase.INVALID.value:
            stack = describe(clients().cloudformation, str(status["stackName"]))
            if stack is not None and not stack.owned_by(uid):
                stack = None  # someone else's stack is not this task's deployment
        refused = runs.refusal(value, suspended, stack)
        if refused is not None:
            return refused
        assert stack is not None  # refusal() refuses without a stack
        arn = runs.start_finder(clients().ecs, stack)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, RuntimeError) as error:
        if not isinstance(error, RuntimeError):
            count(error, "ecs")
        why = error_message(error) if isinstance(error, botocore.exceptions.ClientError) else str(error)
        return RunNowOutcome(
            value, RunNowResult.FAILED, "StartFailed", f"run now {value}: the finder did not start: {why}"
        )
    return RunNowOutcome(value, RunNowResult.STARTED, "Started", f"run now {value}: finder task {arn} started")
