"""The local node: pods really run on kubelet and containerd, and reach host servers at the node's address."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from dth.devtools.kubernetes import LocalKubernetes
from dth.devtools.moto import MOTO_ACCESS_KEY, MOTO_SECRET_KEY, MotoServer
from dth.devtools.node_images import busybox_archive

pytestmark = pytest.mark.node


def wait_for_pod_phase(cluster: LocalKubernetes, namespace: str, name: str, phases: set[str]) -> dict[str, Any]:
    """The pod once its phase is one of ``phases`` (AssertionError naming its state after 180 s)."""
    deadline = time.monotonic() + 180
    pod: dict[str, Any] = {}
    while time.monotonic() < deadline:
        pod = json.loads(cluster.kubectl("get", "pod", "-n", namespace, name, "-o", "json").stdout)
        if pod.get("status", {}).get("phase") in phases:
            return pod
        time.sleep(0.5)
    events = cluster.kubectl("get", "events", "-n", namespace, check=False).stdout
    raise AssertionError(f"pod {name} not in {phases}: {json.dumps(pod.get('status'))}\n{events}")


def test_a_pod_runs_a_local_image_and_reaches_a_host_server(
    node_cluster: LocalKubernetes, moto_server: MotoServer, unique_name: str, tmp_path: Path
) -> None:
    node = node_cluster.node
    busybox = shutil.which("busybox")
    assert busybox, "busybox-static is not installed (bash .ci/node.sh)"
    image = busybox_archive(Path(busybox), tmp_path)
    node.import_image(image)
    assert image.name in node.image_names()
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_server.endpoint_url,
        aws_access_key_id=MOTO_ACCESS_KEY,
        aws_secret_access_key=MOTO_SECRET_KEY,
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket=unique_name)
    address = node.expose(moto_server.port)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": unique_name, "namespace": "default"},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsUser": 10001, "runAsGroup": 10001, "runAsNonRoot": True},
            "containers": [
                {
                    "name": "fetch",
                    "image": image.name,
                    "imagePullPolicy": "Never",
                    # S3's ListBuckets without a signature: moto answers it; the bucket's name proves the way.
                    "command": ["/bin/sh", "-c", f'id -u && wget -q -O- "http://{address}/"'],
                    "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False},
                }
            ],
        },
    }
    node_cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    done = wait_for_pod_phase(node_cluster, "default", unique_name, {"Succeeded", "Failed"})
    logs = node_cluster.kubectl("logs", "-n", "default", unique_name).stdout
    assert done["status"]["phase"] == "Succeeded", (done["status"], logs)
    assert done["spec"]["nodeName"] == node.node_name
    assert done["status"]["podIP"].rsplit(".", 1)[0] == node.address.rsplit(".", 1)[0]
    assert logs.splitlines()[0] == "10001"
    assert f"<Name>{unique_name}</Name>" in logs
