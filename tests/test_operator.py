"""The operator on a real Kubernetes API server (etcd + kube-apiserver), with moto server as AWS, radosgw
as S3, and the local ECS runner playing ECS: `kubectl apply` a TransferTask and the objects arrive."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dth.devtools.kubernetes import LocalKubernetes
from dth.devtools.moto import MotoServer
from dth.devtools.ports import free_port
from dth.devtools.sites import S3Site
from dth.devtools.stacks import LocalStacks


def wait_for(
    condition: Callable[[], Any], timeout: float = 90, what: str = "condition", detail: Callable[[], Any] | None = None
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f": {detail()}" if detail else ""))
        time.sleep(0.5)


class Cluster:
    """kubectl on the test cluster, in one namespace."""

    def __init__(self, kubernetes: LocalKubernetes, namespace: str) -> None:
        self.kubernetes = kubernetes
        self.namespace = namespace

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.kubernetes.kubectl("-n", self.namespace, *args, input=input, check=check)

    def apply(self, manifest: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest), check=check)

    def task(self, name: str) -> dict[str, Any] | None:
        done = self.kubectl("get", "transfertask", name, "-o", "json", check=False)
        return json.loads(done.stdout) if done.returncode == 0 else None

    def status(self, name: str) -> dict[str, Any]:
        task = self.task(name) or {}
        return dict(task.get("status") or {})

    def phase(self, name: str) -> str | None:
        return self.status(name).get("phase")


@pytest.fixture
def aws(moto_server: MotoServer) -> LocalStacks:
    return LocalStacks(moto_server.endpoint_url)


@pytest.fixture
def cluster(kubernetes: LocalKubernetes, transfertask_crd: str, unique_name: str) -> Iterator[Cluster]:
    kubernetes.kubectl("create", "namespace", unique_name)
    yield Cluster(kubernetes, unique_name)
    kubernetes.kubectl("delete", "namespace", unique_name, "--wait=false", check=False)


@pytest.fixture
def start_operator(
    kubernetes: LocalKubernetes, moto_server: MotoServer, aws: LocalStacks, cluster: Cluster, tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    network = aws.network(cluster.namespace)
    started: list[subprocess.Popen[str]] = []
    metrics_port = free_port()

    def start(endpoint: str | None = None) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DTH_")) or k == "AWS_CA_BUNDLE"}
        env.update(
            KUBECONFIG=str(kubernetes.kubeconfig),
            AWS_ENDPOINT_URL=endpoint or moto_server.endpoint_url,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_REGION="us-east-1",
            DTH_SUBNETS=",".join(network.subnets),
            DTH_SECURITY_GROUPS=",".join(network.security_groups),
            DTH_ENGINE_IMAGE="dth-engine:test",
            DTH_OBSERVE_INTERVAL="1",
            DTH_METRICS_PORT=str(metrics_port),
        )
        log = (tmp_path / f"operator-{len(started)}.log").open("w")  # closed when the test's tmp_path goes
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dth_operator",
                "--namespace",
                cluster.namespace,
                "--standalone",
                "--liveness",
                "",
                "--verbose",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(process)
        return process

    start.metrics_port = metrics_port  # type: ignore[attr-defined]
    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def secret(name: str, site: S3Site) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "data": {
            "access_key_id": base64.b64encode(site.access_key.encode()).decode(),
            "secret_access_key": base64.b64encode(site.secret_key.encode()).decode(),
        },
    }


def transfer_task(name: str, site: S3Site, source: str, destination: str, **spec: Any) -> dict[str, Any]:
    side = {"type": "S3_Compatible", "endpoint": site.url, "credentials": {"secretName": "rgw-keys"}}
    return {
        "apiVersion": "dth.io/v1alpha1",
        "kind": "TransferTask",
        "metadata": {"name": name},
        "spec": {
            "type": "S3",
            "source": {**side, "bucket": source},
            "destination": {**side, "bucket": destination},
            "options": {"workers": 4},
            **spec,
        },
    }


def stacks(aws: LocalStacks, namespace: str) -> list[dict[str, Any]]:
    found = aws.cloudformation.describe_stacks()["Stacks"]
    return [
        s for s in found if s["StackName"].startswith(f"dth-{namespace}-") and s["StackStatus"] != "DELETE_COMPLETE"
    ]


def parameters(stack: dict[str, Any]) -> dict[str, str]:
    return {p["ParameterKey"]: p["ParameterValue"] for p in stack.get("Parameters", [])}


def test_invalid_specs_get_a_condition_that_names_the_problem(
    cluster: Cluster, start_operator: Callable[..., Any], aws: LocalStacks, rgw_site: S3Site
) -> None:
    start_operator()
    same = transfer_task("loop", rgw_site, "same-bucket", "same-bucket")
    cluster.apply(same)
    no_secret = transfer_task("nosecret", rgw_site, "bucket-a", "bucket-b")
    cluster.apply(no_secret)
    wait_for(lambda: cluster.phase("loop") == "Invalid", what="loop to be Invalid")
    wait_for(lambda: cluster.phase("nosecret") == "Invalid", what="nosecret to be Invalid")
    (loop_ready,) = cluster.status("loop")["conditions"]
    assert loop_ready["type"] == "Ready" and loop_ready["status"] == "False"
    assert "source and destination overlap" in loop_ready["message"]
    assert "Secret" in cluster.status("nosecret")["message"] and "rgw-keys" in cluster.status("nosecret")["message"]
    assert stacks(aws, cluster.namespace) == []
    wait_for(
        lambda: "overlap" in cluster.kubectl("get", "events", "-o", "json").stdout,
        timeout=30,
        what="an Event on the resource",
    )
