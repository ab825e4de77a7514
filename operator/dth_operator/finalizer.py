"""The finalizer: a deleted TransferTask takes its stack and its secrets with it, unless the annotation
`dth.io/deletion-policy: retain` asks to keep them; only what carries the task's owner tags is ever touched."""

from __future__ import annotations

from typing import Any

import botocore.exceptions
import kopf

from dth.spec.model import Phase
from dth_operator import metrics, observe
from dth_operator.aws import temporary
from dth_operator.context import RESOURCE, RETAIN_ANNOTATION, SETTINGS, backoff, clients, timed
from dth_operator.progress import condition
from dth_operator.secrets import Owner, delete_secrets
from dth_operator.stacks import UID_TAG, StackState, describe, first_failure, stack_name
from dth_operator.status_writes import conditions_with, write_status


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
        observe.forget(namespace, name)
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
                "conditions": conditions_with(
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
