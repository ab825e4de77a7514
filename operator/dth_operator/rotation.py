"""Kubernetes Secret rotation: a change to a Secret that deployed tasks name reaches their Secrets Manager
copies, where the engines re-read credentials. The operator watches the Secrets of the namespaces it serves
(list and watch on Secrets there); an index of the tasks (kept by kopf from the TransferTask watch) says which
tasks name which Secret, so a change costs no API call beyond the copies themselves.

Only deployed tasks (with a stack, not Invalid) are refreshed: a task that never got a copy gets none here.
A Secret's first sighting (the operator's start, or a new Secret) is not a rotation: reconcile copies then.
"""

from __future__ import annotations

from typing import Any

import botocore.exceptions
import kopf

from dth.errors import SpecError
from dth.spec.model import API_GROUP, API_VERSION, KIND, PLURAL, Phase
from dth_operator.context import SETTINGS, clients
from dth_operator.secrets import REQUIRED_KEYS, Owner, copy_secret

IMAGE_KEYS = ("username", "password")


@kopf.index(API_GROUP, API_VERSION, PLURAL)
def tasks_by_secret(
    *, namespace: str | None, name: str, uid: str, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[tuple[str, str], tuple[str, str, str]]:
    """{(namespace, Secret name): (task name, uid, task type)} of the deployed tasks."""
    if status.get("phase") == Phase.INVALID.value or not status.get("stackName"):
        return {}
    found = {}
    for side in ("source", "destination"):
        credentials = (spec.get(side) or {}).get("credentials") or {}
        if credentials.get("secretName"):
            found[(namespace or "default", str(credentials["secretName"]))] = (name, uid, str(spec.get("type")))
    return found


@kopf.on.event("", "v1", "secrets")
def secret_changed(*, type: str, name: str, namespace: str | None, logger: Any, **kwargs: Any) -> None:
    if type != "MODIFIED":
        return
    tasks_by_secret: kopf.Index[tuple[str, str], tuple[str, str, str]] = kwargs["tasks_by_secret"]
    namespace = namespace or "default"
    for task, uid, task_type in tasks_by_secret.get((namespace, name), []):
        about = kopf.Body(
            {
                "apiVersion": f"{API_GROUP}/{API_VERSION}",
                "kind": KIND,
                "metadata": {"name": task, "namespace": namespace, "uid": uid},
            }
        )
        required = IMAGE_KEYS if task_type == "Image" else REQUIRED_KEYS
        try:
            copy_secret(clients().secretsmanager, Owner(SETTINGS.cluster_id, namespace, task, uid), name, required)
        except (
            SpecError,
            kopf.TemporaryError,
            botocore.exceptions.ClientError,
            botocore.exceptions.BotoCoreError,
        ) as e:
            message = f"the change to Secret {name} did not reach Secrets Manager: {e}"
            logger.error(f"{namespace}/{task}: {message}")
            kopf.warn(about, reason="SecretRotationFailed", message=message)
            continue
        logger.info(f"{namespace}/{task}: Secret {name} copied to Secrets Manager again")
        kopf.info(about, reason="SecretRotated", message=f"Secret {name} changed: its Secrets Manager copy follows")
