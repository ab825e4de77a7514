"""The observe timer's status writes against the real API server: a look taken from a stale view of the task
must not overwrite what reconcile wrote since (seen in CI: a task turned Invalid by the tenant policy at restart
was written back to Running by a timer tick that had looked at the stack before, and stayed Running)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from dth.devtools.kubernetes import LocalKubernetes
from dth_operator import status_writes


@pytest.fixture
def task(kubernetes: LocalKubernetes, transfertask_crd: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A TransferTask in a namespace of its own; the operator's API client points at the test server."""
    namespace = f"writes-{uuid.uuid4().hex[:8]}"
    kubernetes.kubectl("create", "namespace", namespace)
    manifest = {
        "apiVersion": "dth.io/v1alpha1",
        "kind": "TransferTask",
        "metadata": {"name": "t", "namespace": namespace},
        "spec": {
            "type": "S3",
            "source": {"type": "Amazon_S3", "bucket": "bucket-a", "region": "us-east-1"},
            "destination": {"type": "Amazon_S3", "bucket": "bucket-b", "region": "us-east-1"},
        },
    }
    kubernetes.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    api = kubernetes_api(kubernetes)
    monkeypatch.setattr(status_writes, "_kubernetes", api)
    yield namespace
    kubernetes.kubectl("delete", "namespace", namespace, "--wait=false")


def kubernetes_api(cluster: LocalKubernetes) -> Any:
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=configuration)
    return kubernetes.client.CustomObjectsApi(kubernetes.client.ApiClient(configuration))


def read(namespace: str) -> dict[str, Any]:
    return dict(
        status_writes._kubernetes.get_namespaced_custom_object("dth.io", "v1alpha1", namespace, "transfertasks", "t")
    )


def test_a_write_from_a_stale_view_is_refused_and_changes_nothing(task: str) -> None:
    seen = read(task)["metadata"]["resourceVersion"]  # what the timer's view holds
    assert status_writes.write_status(task, "t", {"phase": "Invalid", "message": "refused by rule x"})  # reconcile
    written = status_writes.write_status(task, "t", {"phase": "Running", "message": "transferring"}, seen_version=seen)
    assert written is False
    status = read(task)["status"]
    assert (status["phase"], status["message"]) == ("Invalid", "refused by rule x")


def test_a_write_from_the_current_view_is_made(task: str) -> None:
    seen = read(task)["metadata"]["resourceVersion"]
    assert status_writes.write_status(task, "t", {"phase": "Running", "message": "transferring"}, seen_version=seen)
    assert read(task)["status"]["phase"] == "Running"
