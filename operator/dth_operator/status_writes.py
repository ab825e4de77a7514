"""Writes to a TransferTask's status subresource made outside kopf's patch (the timer's looks, the finalizer's
progress), and the conditions list a write carries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from dth.spec.model import API_GROUP, API_VERSION, PLURAL, Condition
from dth_operator import kube
from dth_operator.progress import merge_conditions


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


def conditions_with(status: Mapping[str, Any], *updates: Condition) -> list[dict[str, Any]]:
    """The status's conditions with `updates` replacing those of the same type."""
    previous = list(status.get("conditions") or [])
    changed = {update.type for update in updates}
    kept = [c for c in previous if c.get("type") not in changed]
    return kept + merge_conditions(previous, list(updates))
