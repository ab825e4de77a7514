"""The observe timer: the real state of each task's stack, counters and queues, read on an interval and written
to the status (phase, counters, conditions, the first failed objects), with an Event when the phase changes
and the Prometheus metrics."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import botocore.exceptions
import kopf

from dth.spec.model import Phase
from dth_operator import metrics, runs
from dth_operator.aws import count
from dth_operator.context import RESOURCE, SETTINGS, clients, timed
from dth_operator.deploy import recovering
from dth_operator.observation import stack_conditions
from dth_operator.progress import Progress, merge_conditions, phase_of, read_progress
from dth_operator.stacks import describe, first_failure, task_name
from dth_operator.status_writes import write_status


@kopf.timer(*RESOURCE, interval=SETTINGS.observe_interval, initial_delay=1.0)
def observe(
    *,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    body: kopf.Body,
    name: str,
    namespace: str | None,
    uid: str,
    patch: kopf.Patch,
    logger: Any,
    **_: Any,
) -> None:
    """Poll the real state: the stack, the counters, the queues."""
    namespace = namespace or "default"
    # kopf hands a timer live views of the task, updated by each watch event while the tick runs: the version
    # is taken first and the status copied, so what this tick writes is judged against the oldest view it used.
    seen_version = str(meta.get("resourceVersion") or "")
    view: dict[str, Any] = copy.deepcopy(dict(status))
    if view.get("phase") in (Phase.INVALID.value, None) or not view.get("stackName"):
        return
    if meta.get("deletionTimestamp"):
        return  # being deleted: the finalizer's handler reports on the stack now
    with timed("observe"):
        aws = clients()
        synced_before = dict(view.get("stackSync") or {})  # reconcile's own field: never stale for long
        generation = int(meta.get("generation") or 0)
        pending = int(view.get("observedGeneration") or 0) < generation
        try:
            stack = describe(aws.cloudformation, view["stackName"])
            if stack is None:
                recreating = pending and synced_before.get("reason") == "Recreating"
                write_status(
                    namespace,
                    name,
                    {
                        "phase": (Phase.PROVISIONING if recreating else Phase.PENDING).value,
                        "message": "stack not found",
                    },
                    seen_version=seen_version,
                )
                return
            if not stack.owned_by(uid):
                return  # someone else's stack: reconcile said so on the resource, and nothing here is ours
            progress = read_progress(aws.dynamodb, aws.sqs, task_name(namespace, name), stack.outputs)
            failures = _failures(aws.dynamodb, namespace, name, stack.outputs, progress)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
            count(error, "observe")
            logger.warning(f"cannot read the stack or its progress, will try again: {error}")
            return  # the next tick tries again; the status keeps its last known state
        phase, message = phase_of(
            stack, progress, once=spec.get("schedule", "once") == "once", suspended=bool(spec.get("suspend"))
        )
        attempts = int(view.get("recoveryAttempts") or 0)
        if pending and recovering(stack.status, attempts, str(synced_before.get("reason", ""))):
            phase, message = Phase.PROVISIONING, str(synced_before.get("message") or f"stack {stack.status}")
        elif stack.failed:
            message = first_failure(aws.cloudformation, stack.name) or message
        observed: dict[str, Any] = {}
        c = progress.counters
        observed["phase"] = phase.value
        observed["message"] = message
        observed["stackId"] = stack.stack_id
        observed["objects"] = c.model_dump(by_alias=True)
        observed["progress"] = f"{c.copied + c.skipped}/{c.found}"
        if progress.run:
            observed["lastRun"] = progress.run
        observed["failures"] = failures
        dead = progress.depth.dead if progress.depth else 0
        if progress.depth:
            observed["queueDepth"] = progress.depth.pending
            observed["deadLetterDepth"] = dead
        looked = stack_conditions(
            stack,
            pending=pending,
            generation=generation,
            synced_before=synced_before,
            dead_letters=dead,
            failed_objects=c.failed,
            first_failure=lambda: first_failure(aws.cloudformation, stack.name),
        )
        observed["conditions"] = merge_conditions(list(view.get("conditions") or []), list(looked))
        if not write_status(namespace, name, observed, seen_version=seen_version):
            logger.debug("the task changed since this look; the next tick looks again")
            return
        _announce(body, namespace, name, phase, message, previous=view.get("phase"))
        metrics.set_phase(namespace, name, phase)
        for outcome in ("found", "copied", "skipped", "failed"):
            metrics.OBJECTS.labels(namespace, name, outcome).set(getattr(c, outcome))
        for outcome in ("found", "copied", "skipped"):
            metrics.BYTES.labels(namespace, name, outcome).set(getattr(c, f"bytes_{outcome}"))
        if progress.depth:
            metrics.QUEUE_DEPTH.labels(namespace, name).set(progress.depth.pending)
            metrics.DEAD_LETTERS.labels(namespace, name).set(dead)


# What each task's status.failures last listed, and of which run and failed count: read again only when they
# change (a run with many objects and few failures costs a read of its whole partition).
_failures_read: dict[tuple[str, str], tuple[str, int, list[dict[str, str]]]] = {}


def _failures(
    dynamodb: Any, namespace: str, name: str, outputs: Mapping[str, str], progress: Progress
) -> list[dict[str, str]]:
    """status.failures: the first failed objects of the last run, from the status table where the workers (and
    the dead-letter sweep) record them."""
    failed = progress.counters.failed
    if not progress.run or not failed or not outputs.get("TableName"):
        return []
    cached = _failures_read.get((namespace, name))
    if cached is not None and cached[:2] == (progress.run, failed):
        return cached[2]
    found = runs.read_failures(dynamodb, outputs["TableName"], progress.run, SETTINGS.failures_limit)
    # Empty strings left out: this API server stores "" in a status patch as null, then refuses it.
    listed = [{k: v for k, v in f.model_dump(by_alias=True).items() if v != ""} for f in found]
    _failures_read[(namespace, name)] = (progress.run, failed, listed)
    return listed


# The phase each task's last Event announced. The timer's `status` can lag behind what it wrote itself (the
# watch brings it back later), so it alone would announce some changes twice.
_announced: dict[tuple[str, str], str] = {}


def _announce(body: kopf.Body, namespace: str, name: str, phase: Phase, message: str, previous: str | None) -> None:
    """An Event when the phase changes: what `kubectl describe tt` and `kubectl get events` show."""
    before = _announced.get((namespace, name), previous)
    _announced[(namespace, name)] = phase.value
    if phase.value == before:
        return
    if phase is Phase.FAILED:
        kopf.warn(body, reason=phase.value, message=message)
    else:
        kopf.info(body, reason=phase.value, message=message)


def forget(namespace: str, name: str) -> None:
    """A deleted task's remembered failures and announced phase go with it."""
    _announced.pop((namespace, name), None)
    _failures_read.pop((namespace, name), None)
