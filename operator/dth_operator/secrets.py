"""Kubernetes Secrets named by a task are copied into per-task Secrets Manager secrets: a stack only
ever receives their ARNs. Values pass through memory only; they are never logged or put in status."""

from __future__ import annotations

import base64
import json
from typing import Any

import botocore.exceptions
import kubernetes

from dth.errors import SpecError
from dth_operator import kube
from dth_operator.aws import error_code

UID_TAG = "dth.io/uid"
REQUIRED_KEYS = ("access_key_id", "secret_access_key")


def secret_id(namespace: str, name: str, secret_name: str) -> str:
    return f"dth/{namespace}/{name}/{secret_name}"


def _kubernetes_secret(namespace: str, secret_name: str, required: tuple[str, ...]) -> dict[str, str]:
    try:
        secret = kubernetes.client.CoreV1Api().read_namespaced_secret(
            secret_name, namespace, _request_timeout=kube.REQUEST_TIMEOUT
        )
    except kube.UNANSWERED as error:
        raise kube.unanswered(f"a read of Secret {namespace}/{secret_name}", error) from None
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            raise SpecError(f"Secret {namespace}/{secret_name} does not exist") from None
        raise
    values = {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}
    missing = [key for key in required if not values.get(key)]
    if missing:
        raise SpecError(f"Secret {namespace}/{secret_name} has no {', '.join(missing)}")
    return values


def copy_secret(
    secretsmanager: Any,
    namespace: str,
    name: str,
    uid: str,
    secret_name: str,
    required: tuple[str, ...] = REQUIRED_KEYS,
) -> str:
    """Create or refresh the task's copy of the Kubernetes Secret; returns its ARN."""
    values = _kubernetes_secret(namespace, secret_name, required)
    document = json.dumps(values)
    identifier = secret_id(namespace, name, secret_name)
    try:
        return str(secretsmanager.put_secret_value(SecretId=identifier, SecretString=document)["ARN"])
    except botocore.exceptions.ClientError as error:
        if error_code(error) != "ResourceNotFoundException":
            raise
    created = secretsmanager.create_secret(
        Name=identifier,
        SecretString=document,
        Description=f"credentials of TransferTask {namespace}/{name}, copied from its Secret {secret_name}",
        Tags=[{"Key": UID_TAG, "Value": uid}],
    )
    return str(created["ARN"])


def delete_secrets(secretsmanager: Any, namespace: str, name: str) -> int:
    """Delete every copy made for the task; returns how many."""
    prefix = secret_id(namespace, name, "")
    deleted = 0
    paginator = secretsmanager.get_paginator("list_secrets")
    for page in paginator.paginate(Filters=[{"Key": "name", "Values": [prefix]}]):
        for entry in page.get("SecretList", []):
            if not str(entry.get("Name", "")).startswith(prefix):
                continue
            secretsmanager.delete_secret(SecretId=entry["ARN"], ForceDeleteWithoutRecovery=True)
            deleted += 1
    return deleted
