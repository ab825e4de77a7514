"""Kubernetes Secrets named by a task are copied into per-task Secrets Manager secrets: a stack only
ever receives their ARNs. Values pass through memory only; they are never logged or put in status."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import botocore.exceptions
import kubernetes

from dth.errors import SpecError
from dth_operator import kube
from dth_operator.aws import error_code

UID_TAG = "dth.io/uid"
CLUSTER_TAG = "dth.io/cluster"
NAMESPACE_TAG = "dth.io/namespace"
REQUIRED_KEYS = ("access_key_id", "secret_access_key")


@dataclass(frozen=True)
class Owner:
    """Who a Secrets Manager copy belongs to: one operator's cluster, one TransferTask (its UID: a task deleted
    and made again under the same name is another owner)."""

    cluster_id: str
    namespace: str
    name: str
    uid: str

    def tags(self) -> list[dict[str, str]]:
        return [
            {"Key": CLUSTER_TAG, "Value": self.cluster_id},
            {"Key": NAMESPACE_TAG, "Value": self.namespace},
            {"Key": UID_TAG, "Value": self.uid},
        ]

    def owns(self, tags: list[dict[str, str]] | None) -> bool:
        found = {tag.get("Key"): tag.get("Value") for tag in tags or []}
        return all(found.get(tag["Key"]) == tag["Value"] for tag in self.tags())


class SecretNotOwnedError(Exception):
    """A Secrets Manager secret of the task's name exists but its owner tags name someone else."""


def secret_id(cluster_id: str, namespace: str, name: str, secret_name: str) -> str:
    return f"dth/{cluster_id}/{namespace}/{name}/{secret_name}"


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


def copy_secret(secretsmanager: Any, owner: Owner, secret_name: str, required: tuple[str, ...] = REQUIRED_KEYS) -> str:
    """Create or refresh the task's copy of the Kubernetes Secret; returns its ARN. A secret of that name that
    another owner made is never overwritten (SecretNotOwnedError)."""
    values = _kubernetes_secret(owner.namespace, secret_name, required)
    document = json.dumps(values)
    identifier = secret_id(owner.cluster_id, owner.namespace, owner.name, secret_name)
    for _ in range(2):  # a create can race another's: then the existing secret's owner is checked again
        try:
            existing = secretsmanager.describe_secret(SecretId=identifier)
        except botocore.exceptions.ClientError as error:
            if error_code(error) != "ResourceNotFoundException":
                raise
        else:
            if not owner.owns(existing.get("Tags")):
                raise SecretNotOwnedError(
                    f"Secrets Manager secret {identifier} belongs to another owner (its tags: "
                    f"{_owner_text(existing.get('Tags'))}); it is left alone: delete it if it is a leftover of an "
                    "earlier task of this name, or give each cluster sharing the account its own cluster id"
                )
            return str(secretsmanager.put_secret_value(SecretId=existing["ARN"], SecretString=document)["ARN"])
        try:
            created = secretsmanager.create_secret(
                Name=identifier,
                SecretString=document,
                Description=f"credentials of TransferTask {owner.namespace}/{owner.name}, copied from its Secret "
                f"{secret_name}",
                Tags=owner.tags(),
            )
        except botocore.exceptions.ClientError as error:
            if error_code(error) != "ResourceExistsException":
                raise
            continue
        return str(created["ARN"])
    raise SecretNotOwnedError(f"Secrets Manager secret {identifier} keeps changing hands; will not write it")


def _owner_text(tags: list[dict[str, str]] | None) -> str:
    owner_keys = {CLUSTER_TAG, NAMESPACE_TAG, UID_TAG}
    found = [f"{tag['Key']}={tag['Value']}" for tag in tags or [] if tag.get("Key") in owner_keys]
    return ", ".join(found) or "none"


def delete_secrets(secretsmanager: Any, owner: Owner) -> int:
    """Delete every copy made for the task (and only those its owner tags say are the task's); returns how
    many."""
    prefix = secret_id(owner.cluster_id, owner.namespace, owner.name, "")
    deleted = 0
    paginator = secretsmanager.get_paginator("list_secrets")
    for page in paginator.paginate(Filters=[{"Key": "name", "Values": [prefix]}]):
        for entry in page.get("SecretList", []):
            if not str(entry.get("Name", "")).startswith(prefix) or not owner.owns(entry.get("Tags")):
                continue
            secretsmanager.delete_secret(SecretId=entry["ARN"], ForceDeleteWithoutRecovery=True)
            deleted += 1
    return deleted
