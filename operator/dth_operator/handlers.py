"""The kopf handlers: each TransferTask becomes a CloudFormation plugin stack, and its status follows the
stack and the transfer's progress. Run with `python -m dth_operator`, which also loads the admission webhook,
Secret rotation and run-now handlers (admission.py, rotation.py, run_now.py).

State lives in the resource's status; a bad spec is a PermanentError (reported, not retried); AWS
throttling and 5xx, and a stack in progress, are TemporaryErrors (retried with backoff); how each stack state
is met is in deploy.py. A finalizer deletes the stack and the task's secrets unless the annotation
`dth.io/deletion-policy: retain` asks to keep them; only what carries the task's owner tags is ever touched.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import botocore.exceptions
import kopf

from dth.errors import SpecError
from dth.spec.cfn import image_stack_parameters, s3_stack_parameters
from dth.spec.image import ImageTaskSpec
from dth.spec.load import parse_task_spec
from dth.spec.model import API_GROUP, API_VERSION, PLURAL, Condition, Phase, S3TaskSpec
from dth_operator import kube, metrics, runs
from dth_operator.aws import Clients, count, error_code, error_message, is_retryable, temporary
from dth_operator.deploy import Deployment, StackBlockedError, StackWaitError, recovering, suspend_in_place
from dth_operator.observation import stack_conditions
from dth_operator.policy import PolicyViolationError, configured_policy
from dth_operator.progress import Progress, condition, merge_conditions, phase_of, read_progress
from dth_operator.secrets import REQUIRED_KEYS, Owner, SecretNotOwnedError, copy_secret, delete_secrets
from dth_operator.settings import OperatorSettings
from dth_operator.stacks import (
    UID_TAG,
    StackState,
    describe,
    first_failure,
    stack_arguments,
    stack_name,
    task_name,
)

RESOURCE = (API_GROUP, API_VERSION, PLURAL)
RETAIN_ANNOTATION = "dth.io/deletion-policy"

SETTINGS = OperatorSettings.from_environment()
_clients: Clients | None = None


def clients() -> Clients:
    global _clients  # one set of clients per operator process, made on first use
    if _clients is None:
        _clients = Clients(SETTINGS.region)
    return _clients


@contextmanager
def timed(handler: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        metrics.RECONCILE_SECONDS.labels(handler=handler).observe(time.perf_counter() - started)


def write_status(namespace: str, name: str, status: dict[str, Any], *, seen_version: str | None = None) -> bool:
    """Patch the status subresource directly; whether it was written. The timer does not hand its changes to
    kopf: kopf would wait for the patched version to come back through the watch before the next tick, and the
    timer would stall whenever that watch event is late or lost.

    With `seen_version` (the resourceVersion the caller's view of the task was read at), the API server makes the
    write only if the task is still at that version: a look taken from a stale view must not overwrite what
    reconcile wrote since (an Invalid written back to Running stays Running, as the timer trusts the status).
    A refused write is skipped, and the next tick looks again."""
    import kubernetes

    body: dict[str, Any] = {"status": {k: v for k, v in status.items() if v != ""}}
    if seen_version:
        body["metadata"] = {"resourceVersion": seen_version}
    try:
        kubernetes_client().patch_namespaced_custom_object_status(
            API_GROUP, API_VERSION, namespace, PLURAL, name, body, _request_timeout=kube.REQUEST_TIMEOUT
        )
    except kube.UNANSWERED as error:
        raise kube.unanswered("a status write", error) from None
    except kubernetes.client.ApiException as error:
        if error.status == 409 and seen_version:
            return False  # changed since the caller looked
        if error.status != 404:  # a task deleted meanwhile has no status to write
            raise kopf.TemporaryError(
                f"cannot write the status: {error.reason}: {str(error.body)[:400]}", delay=5
            ) from None
        return False
    return True


_kubernetes: Any = None


def kubernetes_client() -> Any:
    global _kubernetes  # one API client per operator process, made on first use
    if _kubernetes is None:
        import kubernetes

        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()
        _kubernetes = kubernetes.client.CustomObjectsApi()
    return _kubernetes


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Events are posted explicitly (kopf.event/kopf.warn) for what a user must see: lifecycle milestones and
    # problems. Posting every handler log line would flood the resource with kopf's own per-timer lines.
    settings.posting.enabled = True
    settings.posting.level = logging.INFO
    settings.persistence.finalizer = f"{API_GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration"
    )
    settings.watching.server_timeout = 60
    # A request the API server never answers must fail and be retried, not stall the operator for good.
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 10
    configured_policy()  # a policy file that does not parse stops the operator here, not at the first task
    metrics.serve(SETTINGS.metrics_port)


def _invalid(
    body: kopf.Body, patch: kopf.Patch, namespace: str, name: str, message: str, reason: str = "InvalidSpec"
) -> kopf.PermanentError:
    kopf.warn(body, reason=reason, message=message)
    _mark_invalid(patch, namespace, name, message, reason)
    return kopf.PermanentError(message)


def _mark_invalid(patch: kopf.Patch, namespace: str, name: str, message: str, reason: str) -> None:
    patch.status["phase"] = Phase.INVALID.value
    patch.status["message"] = message
    patch.status["conditions"] = merge_conditions([], [condition("Ready", False, reason, message)])
    metrics.set_phase(namespace, name, Phase.INVALID)


def _stop_refused(
    status: kopf.Status, namespace: str, name: str, uid: str, retry: int, patch: kopf.Patch, refusal: str
) -> str:
    """A deployed task the tenant policy no longer allows must not go on copying what its namespace may no longer
    reach: its stack is suspended in place. Retried (the task already Invalid) while that is under way; what was
    done, in words."""
    stack = status.get("stackName")
    if not stack:
        return ""
    try:
        return suspend_in_place(clients().cloudformation, str(stack), uid)
    except StackWaitError as wait:
        _mark_invalid(patch, namespace, name, f"{refusal}; {wait.message}", "PolicyDenied")
        raise kopf.TemporaryError(wait.message, delay=backoff(retry)) from None
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
        if is_retryable(error):
            raise temporary(error, "cloudformation") from None
        why = error_message(error) if isinstance(error, botocore.exceptions.ClientError) else str(error)
        return f"its stack {stack} could not be suspended ({why}): delete the task or stop its workers by hand"


def _secret_arns(spec: S3TaskSpec | ImageTaskSpec, owner: Owner) -> dict[str, str]:
    arns: dict[str, str] = {}
    for side in (spec.source, spec.destination):
        credentials = side.credentials
        if credentials is not None and credentials.secret_name and credentials.secret_name not in arns:
            required = ("username", "password") if isinstance(spec, ImageTaskSpec) else REQUIRED_KEYS
            arns[credentials.secret_name] = copy_secret(
                clients().secretsmanager, owner, credentials.secret_name, required
            )
    return arns


def _plugin(task: S3TaskSpec | ImageTaskSpec, namespace: str, name: str, arns: dict[str, str]) -> tuple[Any, Any]:
    """The plugin template and its parameters for the task."""
    if isinstance(task, S3TaskSpec):
        return SETTINGS.s3_template, s3_stack_parameters(
            task_name(namespace, name), task, SETTINGS.plugin(), secret_arns=arns
        )
    return SETTINGS.image_template, image_stack_parameters(
        task_name(namespace, name), task, SETTINGS.plugin(), secret_arns=arns
    )


def _stack_name_for(status: kopf.Status, namespace: str, name: str, uid: str) -> str:
    """The task's stack name; a stack recorded in the status under an earlier naming is kept if it is ours."""
    computed = stack_name(SETTINGS.cluster_id, namespace, name)
    recorded = status.get("stackName")
    if recorded and recorded != computed:
        earlier = describe(clients().cloudformation, recorded)
        if earlier is not None and earlier.status != "DELETE_COMPLETE" and earlier.owned_by(uid):
            return str(recorded)
    return computed


def backoff(retry: int) -> float:
    """Seconds before the next look at a stack in progress (or a failed delete): the setting's delay, doubling
    with each try, at most twelve times the delay (two minutes by default)."""
    base = SETTINGS.stack_retry_delay
    return float(min(base * 2 ** min(retry, 4), 12 * base))


def _conditions(status: Mapping[str, Any], *updates: Condition) -> list[dict[str, Any]]:
    """The status's conditions with `updates` replacing those of the same type."""
    previous = list(status.get("conditions") or [])
    changed = {update.type for update in updates}
    kept = [c for c in previous if c.get("type") not in changed]
    return kept + merge_conditions(previous, list(updates))


def _blocked(
    error: StackBlockedError | SecretNotOwnedError,
    body: kopf.Body,
    status: kopf.Status,
    patch: kopf.Patch,
    namespace: str,
    name: str,
    logger: Any,
) -> kopf.PermanentError:
    """The stack (or a secret) cannot reach the spec without a person: said on the resource, not retried. A
    rolled-back update leaves the task running (Degraded); anything else fails it."""
    reason = error.reason if isinstance(error, StackBlockedError) else "SecretNotOwned"
    message = str(error)
    logger.error(message)
    kopf.warn(body, reason=reason, message=message)
    synced = condition("StackSynced", False, reason, message)
    patch.status["stackSync"] = {"reason": reason, "message": message}
    if isinstance(error, StackBlockedError) and error.degraded:
        patch.status["conditions"] = _conditions(status, synced, condition("Degraded", True, reason, message))
    else:
        patch.status["phase"] = Phase.FAILED.value
        patch.status["message"] = message
        patch.status["conditions"] = _conditions(status, synced)
        metrics.set_phase(namespace, name, Phase.FAILED)
    return kopf.PermanentError(message)


def _remember(deployment: Deployment, body: kopf.Body, patch: kopf.Patch) -> None:
    """What the task's status keeps about its stack, whatever the step's outcome; and the step's Events. A stack
    that is not (yet) the task's own is not recorded: observe would report its state as the task's."""
    if deployment.ours:
        patch.status["stackName"] = deployment.name
    patch.status["stackGeneration"] = deployment.sent_generation
    patch.status["recoveryAttempts"] = deployment.attempts
    for kind, reason, message in deployment.events:
        (kopf.warn if kind == "Warning" else kopf.info)(body, reason=reason, message=message)


def _refused(error: Exception, body: kopf.Body, patch: kopf.Patch, logger: Any) -> kopf.PermanentError:
    """Access denied, a missing template...: reported on the resource, not retried in a crash loop."""
    if isinstance(error, botocore.exceptions.ClientError):
        count(error, "cloudformation")
        reason, message = error_code(error), f"AWS refused the stack: {error_message(error)}"
    elif isinstance(error, OSError):  # a setting of the operator's, not of the task: fixed by a restart
        reason = "TemplateUnreadable"
        message = f"cannot read the plugin template {error.filename}: {error.strerror} (an operator setting)"
    else:
        count(error, "cloudformation")
        reason, message = type(error).__name__, f"AWS unreachable: {error}"
    logger.error(message)
    kopf.warn(body, reason="StackRefused", message=message)
    patch.status["phase"] = Phase.FAILED.value
    patch.status["message"] = message
    patch.status["conditions"] = merge_conditions([], [condition("StackSynced", False, reason, message)])
    return kopf.PermanentError(message)


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
def reconcile(
    *,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    name: str,
    namespace: str | None,
    uid: str,
    retry: int,
    patch: kopf.Patch,
    body: kopf.Body,
    logger: Any,
    **_: Any,
) -> None:
    """Bring the stack to the spec: one step per call, retried with backoff while the stack is in progress
    (see deploy.py); done when the generation is applied."""
    namespace = namespace or "default"
    with timed("reconcile"):
        try:
            task = parse_task_spec(dict(spec))
        except SpecError as error:
            logger.error(f"invalid spec: {error}")
            raise _invalid(body, patch, namespace, name, str(error)) from None
        try:
            configured_policy().check(namespace, task)
        except PolicyViolationError as error:
            logger.error(f"refused by the tenant policy: {error}")
            stopped = _stop_refused(status, namespace, name, uid, retry, patch, str(error))
            message = f"{error}; {stopped}" if stopped else str(error)
            raise _invalid(body, patch, namespace, name, message, reason="PolicyDenied") from None
        generation = int(meta.get("generation") or 0)
        try:
            arns = _secret_arns(task, Owner(SETTINGS.cluster_id, namespace, name, uid))
            template, parameters = _plugin(task, namespace, name, arns)
            stack = _stack_name_for(status, namespace, name, uid)
            tags = {"dth.io/namespace": namespace, "dth.io/name": name}
            deployment = Deployment(
                clients().cloudformation,
                stack_arguments(stack, uid, SETTINGS.cluster_id, template, parameters, tags),
                uid,
                generation,
                sent_generation=status.get("stackGeneration"),
                attempts=int(status.get("recoveryAttempts") or 0),
            )
            try:
                action = deployment.step()
            finally:
                _remember(deployment, body, patch)
        except SpecError as error:
            logger.error(f"cannot deploy: {error}")
            raise _invalid(body, patch, namespace, name, str(error)) from None
        except StackWaitError as wait:
            delay = backoff(retry)
            logger.info(f"{wait.message}; next look in {delay:.0f} s")
            patch.status["conditions"] = _conditions(status, condition("StackSynced", False, wait.reason, wait.message))
            patch.status["stackSync"] = {"reason": wait.reason, "message": wait.message}
            if status.get("phase") in (None, Phase.PENDING.value, Phase.INVALID.value, Phase.FAILED.value):
                patch.status["phase"] = Phase.PROVISIONING.value
                patch.status["message"] = wait.message
                metrics.set_phase(namespace, name, Phase.PROVISIONING)
            raise kopf.TemporaryError(wait.message, delay=delay) from None
        except (StackBlockedError, SecretNotOwnedError) as error:
            raise _blocked(error, body, status, patch, namespace, name, logger) from None
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
            if is_retryable(error):
                raise temporary(error, "cloudformation") from None
            raise _refused(error, body, patch, logger) from None
        except OSError as error:  # the operator's own setting is wrong: reported here, fixed by a restart
            raise _refused(error, body, patch, logger) from None
        logger.info(f"stack {stack} {action.value}: generation {generation}")
        patch.status["observedGeneration"] = generation
        patch.status["stackSync"] = None
        patch.status["conditions"] = _conditions(
            status, condition("StackSynced", True, "Applied", f"generation {generation}")
        )
        if task.suspend:
            patch.status["phase"] = Phase.SUSPENDED.value
            patch.status["message"] = "workers and schedule stopped"
            metrics.set_phase(namespace, name, Phase.SUSPENDED)
        elif status.get("phase") in (None, Phase.PENDING.value, Phase.INVALID.value, Phase.SUSPENDED.value):
            patch.status["phase"] = Phase.PROVISIONING.value
            patch.status["message"] = f"stack {action.value}"
            metrics.set_phase(namespace, name, Phase.PROVISIONING)


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


@kopf.on.delete(*RESOURCE)
def remove(
    *,
    meta: kopf.Meta,
    status: kopf.Status,
    body: kopf.Body,
    name: str,
    namespace: str | None,
    uid: str,
    retry: int,
    logger: Any,
    **_: Any,
) -> None:
    """Delete the stack and the task's secrets, waiting until the stack is gone (the finalizer holds the
    resource until then), unless the deletion policy is `retain`. Only what the task owns is deleted: a stack
    or secret whose owner tags name someone else is left alone."""
    namespace = namespace or "default"
    with timed("delete"):
        metrics.set_phase(namespace, name, None)
        _announced.pop((namespace, name), None)
        _failures_read.pop((namespace, name), None)
        if meta.get("annotations", {}).get(RETAIN_ANNOTATION) == "retain":
            logger.info("deletion policy retain: stack and secrets kept")
            return
        aws = clients()
        stack = status.get("stackName") or stack_name(SETTINGS.cluster_id, namespace, name)
        try:
            state = describe(aws.cloudformation, stack)
            if state is not None and state.status != "DELETE_COMPLETE":
                if state.owned_by(uid):
                    _delete_stack(state, body, namespace, name, backoff(retry), logger)
                else:
                    message = (
                        f"stack {stack} belongs to another resource (tag {UID_TAG}={state.uid}, cluster "
                        f"{state.cluster}): left in place"
                    )
                    logger.warning(message)
                    kopf.warn(body, reason="StackNotOwned", message=message)
            deleted = delete_secrets(aws.secretsmanager, Owner(SETTINGS.cluster_id, namespace, name, uid))
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
            raise temporary(error, "cloudformation") from None
        logger.info(f"stack {stack} gone, {deleted} secrets removed")


def _delete_stack(state: StackState, body: kopf.Body, namespace: str, name: str, delay: float, logger: Any) -> None:
    """One step of deleting the task's own stack; raises TemporaryError until it is gone."""
    aws = clients()
    if state.status == "DELETE_FAILED":
        failure = first_failure(aws.cloudformation, state.name) or state.reason
        message = (
            f"CloudFormation could not delete stack {state.name}: {failure}. Tried again now and after each "
            f"wait (next look in {delay:.0f} s, doubling): fix that resource, or annotate the task "
            "dth.io/deletion-policy=retain to keep the stack and let the task go"
        )
        logger.warning(message)
        kopf.warn(body, reason="StackDeleteFailed", message=message)
        write_status(
            namespace,
            name,
            {
                "conditions": _conditions(
                    body.get("status") or {}, condition("StackSynced", False, "DeleteFailed", message)
                )
            },
        )
        aws.cloudformation.delete_stack(StackName=state.name)
        raise kopf.TemporaryError(message, delay=delay)
    if state.in_progress and state.status != "DELETE_IN_PROGRESS" and state.status != "CREATE_IN_PROGRESS":
        # CloudFormation refuses a delete while an update or a rollback runs: wait for it to settle.
        raise kopf.TemporaryError(f"stack {state.name} is {state.status}; deleting it after", delay=delay)
    if state.status != "DELETE_IN_PROGRESS":
        aws.cloudformation.delete_stack(StackName=state.name)
        logger.info(f"stack {state.name} deleting")
        write_status(namespace, name, {"phase": Phase.DELETING.value, "message": f"deleting stack {state.name}"})
    raise kopf.TemporaryError(f"waiting for stack {state.name} to be deleted", delay=delay)


@kopf.on.probe(id="stacks")
def stacks_reachable(**_: Any) -> bool:
    """Reported on the liveness endpoint: whether CloudFormation answers. Never raises: the endpoint says the
    operator is alive (restarting it would not bring AWS back), and this key tells whether AWS is reachable."""
    try:
        clients().probe.describe_stacks(StackName="dth-liveness-probe")
    except botocore.exceptions.ClientError as error:
        return error_code(error) == "ValidationError"  # "does not exist": CloudFormation answered
    except botocore.exceptions.BotoCoreError:
        return False
    return True
