"""The kopf handlers that bring each TransferTask to its spec: the spec is parsed and checked against the
tenant policy, and the task becomes a CloudFormation plugin stack. Run with `python -m dth_operator`, which
also loads the observe timer (observe.py), the finalizer (finalizer.py), and the admission webhook, Secret
rotation and run-now handlers (admission.py, rotation.py, run_now.py).

State lives in the resource's status; a bad spec is a PermanentError (reported, not retried); AWS
throttling and 5xx, and a stack in progress, are TemporaryErrors (retried with backoff); how each stack state
is met is in deploy.py.
"""

from __future__ import annotations

import logging
from typing import Any

import botocore.exceptions
import kopf

from dth.errors import SpecError
from dth.spec.cfn import image_stack_parameters, s3_stack_parameters
from dth.spec.image import ImageTaskSpec
from dth.spec.load import parse_task_spec
from dth.spec.model import API_GROUP, Phase, S3TaskSpec
from dth_operator import metrics
from dth_operator.aws import count, error_code, error_message, is_retryable, temporary
from dth_operator.context import RESOURCE, SETTINGS, backoff, clients, timed
from dth_operator.deploy import Deployment, StackBlockedError, StackWaitError, suspend_in_place
from dth_operator.policy import PolicyViolationError, configured_policy
from dth_operator.progress import condition, merge_conditions
from dth_operator.secrets import REQUIRED_KEYS, Owner, SecretNotOwnedError, copy_secret
from dth_operator.stacks import describe, stack_arguments, stack_name, task_name
from dth_operator.status_writes import conditions_with


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
        patch.status["conditions"] = conditions_with(status, synced, condition("Degraded", True, reason, message))
    else:
        patch.status["phase"] = Phase.FAILED.value
        patch.status["message"] = message
        patch.status["conditions"] = conditions_with(status, synced)
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
            patch.status["conditions"] = conditions_with(
                status, condition("StackSynced", False, wait.reason, wait.message)
            )
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
        patch.status["conditions"] = conditions_with(
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
