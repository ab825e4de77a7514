"""The kopf handlers: each TransferTask becomes a CloudFormation plugin stack, and its status follows the
stack and the transfer's progress. Run with `python -m dth_operator` (or `kopf run -m dth_operator.handlers`).

State lives in the resource's status; a bad spec is a PermanentError (reported, not retried); AWS
throttling and 5xx are TemporaryErrors (retried with backoff); a finalizer deletes the stack and the
task's secrets unless the annotation `dth.io/deletion-policy: retain` asks to keep them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import botocore.exceptions
import kopf

from dth.errors import SpecError
from dth.spec.cfn import image_stack_parameters, s3_stack_parameters
from dth.spec.image import ImageTaskSpec
from dth.spec.load import parse_task_spec
from dth.spec.model import API_GROUP, API_VERSION, PLURAL, Phase, S3TaskSpec
from dth_operator import kube, metrics
from dth_operator.aws import Clients, count, error_code, error_message, is_retryable, temporary
from dth_operator.policy import PolicyViolationError, configured_policy
from dth_operator.progress import condition, merge_conditions, phase_of, read_progress
from dth_operator.secrets import REQUIRED_KEYS, copy_secret, delete_secrets
from dth_operator.settings import OperatorSettings
from dth_operator.stacks import Action, describe, ensure, first_failure, stack_name, task_name

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


def write_status(namespace: str, name: str, status: dict[str, Any]) -> None:
    """Patch the status subresource directly. The timer does not hand its changes to kopf: kopf would wait for
    the patched version to come back through the watch before the next tick, and the timer would stall
    whenever that watch event is late or lost."""
    import kubernetes

    try:
        kubernetes_client().patch_namespaced_custom_object_status(
            API_GROUP,
            API_VERSION,
            namespace,
            PLURAL,
            name,
            {"status": {k: v for k, v in status.items() if v != ""}},
            _request_timeout=kube.REQUEST_TIMEOUT,
        )
    except kube.UNANSWERED as error:
        raise kube.unanswered("a status write", error) from None
    except kubernetes.client.ApiException as error:
        if error.status != 404:  # a task deleted meanwhile has no status to write
            raise kopf.TemporaryError(
                f"cannot write the status: {error.reason}: {str(error.body)[:400]}", delay=5
            ) from None


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
    patch.status["phase"] = Phase.INVALID.value
    patch.status["message"] = message
    patch.status["conditions"] = merge_conditions([], [condition("Ready", False, reason, message)])
    metrics.set_phase(namespace, name, Phase.INVALID)
    return kopf.PermanentError(message)


def _secret_arns(spec: S3TaskSpec | ImageTaskSpec, namespace: str, name: str, uid: str) -> dict[str, str]:
    arns: dict[str, str] = {}
    for side in (spec.source, spec.destination):
        credentials = side.credentials
        if credentials is not None and credentials.secret_name and credentials.secret_name not in arns:
            required = ("username", "password") if isinstance(spec, ImageTaskSpec) else REQUIRED_KEYS
            arns[credentials.secret_name] = copy_secret(
                clients().secretsmanager, namespace, name, uid, credentials.secret_name, required
            )
    return arns


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
    name: str,
    namespace: str | None,
    uid: str,
    patch: kopf.Patch,
    body: kopf.Body,
    logger: Any,
    **_: Any,
) -> None:
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
            raise _invalid(body, patch, namespace, name, str(error), reason="PolicyDenied") from None
        stack = stack_name(namespace, name)
        try:
            arns = _secret_arns(task, namespace, name, uid)
            if isinstance(task, S3TaskSpec):
                template = SETTINGS.s3_template
                parameters = s3_stack_parameters(task_name(namespace, name), task, SETTINGS.plugin(), secret_arns=arns)
            else:
                template = SETTINGS.image_template
                parameters = image_stack_parameters(
                    task_name(namespace, name), task, SETTINGS.plugin(), secret_arns=arns
                )
            action = ensure(
                clients().cloudformation,
                stack,
                uid,
                template,
                parameters,
                {"dth.io/namespace": namespace, "dth.io/name": name},
            )
        except SpecError as error:
            logger.error(f"cannot deploy: {error}")
            raise _invalid(body, patch, namespace, name, str(error)) from None
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
            if is_retryable(error):
                raise temporary(error, "cloudformation") from None
            raise _refused(error, body, patch, logger) from None
        except OSError as error:  # the operator's own setting is wrong: reported here, fixed by a restart
            raise _refused(error, body, patch, logger) from None
        logger.info(f"stack {stack} {action.value}")
        patch.status["stackName"] = stack
        patch.status["observedGeneration"] = meta.get("generation")
        phase = Phase.SUSPENDED if task.suspend else Phase.PROVISIONING
        if action is not Action.UNCHANGED or task.suspend:
            patch.status["phase"] = phase.value
            patch.status["message"] = "workers and schedule stopped" if task.suspend else f"stack {action.value}"
        metrics.set_phase(namespace, name, phase)


@kopf.timer(*RESOURCE, interval=SETTINGS.observe_interval, initial_delay=1.0)
def observe(
    *,
    spec: kopf.Spec,
    status: kopf.Status,
    body: kopf.Body,
    name: str,
    namespace: str | None,
    patch: kopf.Patch,
    logger: Any,
    **_: Any,
) -> None:
    """Poll the real state: the stack, the counters, the queues."""
    namespace = namespace or "default"
    if status.get("phase") in (Phase.INVALID.value, None) or not status.get("stackName"):
        return
    with timed("observe"):
        aws = clients()
        try:
            stack = describe(aws.cloudformation, status["stackName"])
            if stack is None:
                write_status(namespace, name, {"phase": Phase.PENDING.value, "message": "stack not found"})
                return
            progress = read_progress(aws.dynamodb, aws.sqs, task_name(namespace, name), stack.outputs)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
            count(error, "observe")
            logger.warning(f"cannot read the stack or its progress, will try again: {error}")
            return  # the next tick tries again; the status keeps its last known state
        phase, message = phase_of(
            stack, progress, once=spec.get("schedule", "once") == "once", suspended=bool(spec.get("suspend"))
        )
        if stack.failed:
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
        dead = progress.depth.dead if progress.depth else 0
        if progress.depth:
            observed["queueDepth"] = progress.depth.pending
            observed["deadLetterDepth"] = dead
        observed["conditions"] = merge_conditions(
            list(status.get("conditions") or []),
            [
                condition("Ready", stack.ready, stack.status),
                condition("StackSynced", not stack.in_progress and not stack.failed, stack.status, stack.reason),
                condition(
                    "Degraded",
                    dead > 0 or c.failed > 0,
                    "DeadLetters" if dead else "NoDeadLetters",
                    f"{dead} messages on the dead-letter queue" if dead else "",
                ),
            ],
        )
        write_status(namespace, name, observed)
        _announce(body, namespace, name, phase, message, previous=status.get("phase"))
        metrics.set_phase(namespace, name, phase)
        for outcome in ("found", "copied", "skipped", "failed"):
            metrics.OBJECTS.labels(namespace, name, outcome).set(getattr(c, outcome))
        for outcome in ("found", "copied", "skipped"):
            metrics.BYTES.labels(namespace, name, outcome).set(getattr(c, f"bytes_{outcome}"))
        if progress.depth:
            metrics.QUEUE_DEPTH.labels(namespace, name).set(progress.depth.pending)
            metrics.DEAD_LETTERS.labels(namespace, name).set(dead)


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
def remove(*, meta: kopf.Meta, status: kopf.Status, name: str, namespace: str | None, logger: Any, **_: Any) -> None:
    """Delete the stack and the task's secrets, waiting until the stack is gone (the finalizer holds the
    resource until then), unless the deletion policy is `retain`."""
    namespace = namespace or "default"
    with timed("delete"):
        metrics.set_phase(namespace, name, None)
        _announced.pop((namespace, name), None)
        if meta.get("annotations", {}).get(RETAIN_ANNOTATION) == "retain":
            logger.info("deletion policy retain: stack and secrets kept")
            return
        aws = clients()
        stack = status.get("stackName") or stack_name(namespace, name)
        try:
            state = describe(aws.cloudformation, stack)
            if state is not None and state.status != "DELETE_COMPLETE":
                if state.status != "DELETE_IN_PROGRESS":
                    aws.cloudformation.delete_stack(StackName=stack)
                    logger.info(f"stack {stack} deleting")
                raise kopf.TemporaryError(f"waiting for stack {stack} to be deleted", delay=5)
            deleted = delete_secrets(aws.secretsmanager, namespace, name)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
            raise temporary(error, "cloudformation") from None
        logger.info(f"stack {stack} deleted, {deleted} secrets removed")


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
