"""The whole path in a real cluster: a kind cluster, the two images built from docker/ and loaded into it, the
Helm chart installed, AWS played in the cluster by moto server (S3 included) and the local ECS runner, then a
TransferTask applied until it reaches Succeeded with every object copied.

Runs only where the `docker` and `kind` binaries exist and a Docker engine answers (the development machines
of this project have none: it is skipped there, with the reason). Images are built from the repository;
building needs the base image and PyPI. Set DTH_KIND_KEEP=1 to keep the cluster after the test (its name is
printed), and DTH_KIND_NODE_IMAGE to choose the node image (`kind create cluster --image`).

Where Docker is missing, tests/test_node_e2e.py runs the same scenario (images, chart, moto and the ECS runner
as AWS, TransferTasks to Succeeded) on the local node instead (kubelet and containerd, images from buildah).
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import pytest
import yaml

from dth.devtools.kubernetes import find_binary
from dth.devtools.stacks import LocalStacks
from dth.devtools.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CHART = ROOT / "helm" / "dth-operator"
TAG = "kind-e2e"
OPERATOR_IMAGE = f"dth-operator:{TAG}"
ENGINE_IMAGE = f"dth-engine:{TAG}"
DEV_IMAGE = f"dth-dev:{TAG}"
MOTO_URL = "http://moto.dth-aws.svc.cluster.local:5000"
OPERATOR_NAMESPACE = "dth-system"
TASK_NAMESPACE = "transfers"
RELEASE = "dth"
OBJECTS = 20

pytestmark = [
    pytest.mark.skipif(
        shutil.which("kind") is None or shutil.which("docker") is None,
        reason="needs the docker and kind binaries (it creates a kind cluster); not installed here",
    ),
    pytest.mark.slow,
]


def run(argv: list[str], *, timeout: float = 600, input: str | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, input=input)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr}{done.stdout}")
    return done


@dataclass
class KindCluster:
    name: str
    kubeconfig: Path
    kubectl_binary: str
    helm_binary: str
    helm_home: Path

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run([self.kubectl_binary, f"--kubeconfig={self.kubeconfig}", *args], input=input, timeout=timeout)

    def kubectl_command(self) -> list[str]:
        return [self.kubectl_binary, f"--kubeconfig={self.kubeconfig}"]

    def helm(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        env_args = [
            "env",
            f"KUBECONFIG={self.kubeconfig}",
            f"HELM_CACHE_HOME={self.helm_home / 'cache'}",
            f"HELM_CONFIG_HOME={self.helm_home / 'config'}",
            f"HELM_DATA_HOME={self.helm_home / 'data'}",
        ]
        return run([*env_args, self.helm_binary, *args], timeout=timeout)

    def apply(self, manifest: dict[str, Any] | str, namespace: str | None = None) -> None:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        self.kubectl(*(["-n", namespace] if namespace else []), "apply", "-f", "-", input=text)

    def logs(self, namespace: str, target: str, tail: int = 80) -> str:
        done = subprocess.run(
            [*self.kubectl_command(), "-n", namespace, "logs", target, f"--tail={tail}", "--all-containers"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return done.stdout + done.stderr


def docker_engine_answers() -> bool:
    done = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60, check=False)
    return done.returncode == 0


@pytest.fixture(scope="module")
def kind_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KindCluster]:
    if not docker_engine_answers():
        pytest.skip("the docker binary is there but no Docker engine answers (docker info failed)")
    kubectl = find_binary("kubectl")
    helm = find_binary("helm")
    if kubectl is None or helm is None:
        pytest.skip("kubectl and helm are needed (bash .ci/kubernetes.sh caches both)")
    workdir = tmp_path_factory.mktemp("kind")
    name = f"dth-e2e-{uuid.uuid4().hex[:6]}"
    cluster = KindCluster(name, workdir / "kubeconfig", kubectl, helm, workdir / "helm")
    cluster.helm_home.mkdir()

    # Images first: a build failure costs no cluster.
    run(["docker", "build", "-f", str(ROOT / "docker" / "operator.Dockerfile"), "-t", OPERATOR_IMAGE, str(ROOT)])
    run(["docker", "build", "-f", str(ROOT / "docker" / "engine.Dockerfile"), "-t", ENGINE_IMAGE, str(ROOT)])
    run(
        [
            "docker",
            "build",
            "-f",
            str(HERE / "dev.Dockerfile"),
            "--build-arg",
            f"ENGINE_IMAGE={ENGINE_IMAGE}",
            "-t",
            DEV_IMAGE,
            str(HERE),
        ]
    )
    create = ["kind", "create", "cluster", "--name", name, "--kubeconfig", str(cluster.kubeconfig), "--wait", "180s"]
    if os.environ.get("DTH_KIND_NODE_IMAGE"):
        create += ["--image", os.environ["DTH_KIND_NODE_IMAGE"]]
    run(create, timeout=600)
    try:
        for image in (OPERATOR_IMAGE, ENGINE_IMAGE, DEV_IMAGE):
            run(["kind", "load", "docker-image", image, "--name", name])
        yield cluster
    finally:
        if os.environ.get("DTH_KIND_KEEP"):
            print(f"kept kind cluster {name} (kubeconfig {cluster.kubeconfig})")
        else:
            subprocess.run(["kind", "delete", "cluster", "--name", name], capture_output=True, timeout=300, check=False)


@contextmanager
def port_forward(cluster: KindCluster, namespace: str, target: str, port: int) -> Iterator[int]:
    """`kubectl port-forward` to a local port; yields that port."""
    process = subprocess.Popen(
        [*cluster.kubectl_command(), "-n", namespace, "port-forward", target, f":{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        seen = ""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([process.stdout], [], [], 1.0)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            line = process.stdout.readline()
            seen += line
            match = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", line)
            if match:
                yield int(match.group(1))
                return
            if not line and process.poll() is not None:
                break
        raise AssertionError(f"port-forward to {namespace}/{target} did not start:\n{seen}")
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
    }


def test_transfer_task_succeeds_in_a_kind_cluster(kind_cluster: KindCluster) -> None:
    cluster = kind_cluster
    manifest = Template((HERE / "aws-standin.yaml").read_text(encoding="utf-8")).substitute(DEV_IMAGE=DEV_IMAGE)
    cluster.apply(manifest)
    for deployment in ("moto", "ecs-runner"):
        cluster.kubectl("-n", "dth-aws", "rollout", "status", f"deployment/{deployment}", "--timeout=300s")

    with port_forward(cluster, "dth-aws", "service/moto", 5000) as port:
        aws = LocalStacks(f"http://127.0.0.1:{port}")
        network = aws.network("kind-e2e")
        s3 = aws.client("s3")
        s3.create_bucket(Bucket="kind-source")
        s3.create_bucket(Bucket="kind-destination")
        for number in range(OBJECTS):
            s3.put_object(Bucket="kind-source", Key=f"data/{number:03d}", Body=os.urandom(1000 + number))

    cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE)
    cluster.kubectl("create", "namespace", TASK_NAMESPACE)
    cluster.apply(
        secret("aws-keys", {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}), OPERATOR_NAMESPACE
    )
    values = {
        "image": {"repository": "dth-operator", "tag": TAG, "pullPolicy": "Never"},
        "watch": {"mode": "namespaced", "namespaces": [TASK_NAMESPACE]},
        "aws": {"region": "us-east-1", "credentialsSecret": {"name": "aws-keys"}, "endpointUrl": MOTO_URL},
        "plugin": {
            "engineImage": {"repository": "dth-engine", "tag": TAG},
            "subnets": list(network.subnets),
            "securityGroups": list(network.security_groups),
        },
        "operator": {"observeInterval": 2, "verbose": True},
    }
    values_file = cluster.helm_home.parent / "values.yaml"
    values_file.write_text(yaml.safe_dump(values), encoding="utf-8")
    cluster.helm(
        "install", RELEASE, str(CHART), "--namespace", OPERATOR_NAMESPACE, "--values", str(values_file),
        "--wait", "--timeout", "5m",
    )  # fmt: skip

    side = {"type": "S3_Compatible", "endpoint": MOTO_URL, "credentials": {"secretName": "s3-keys"}}
    cluster.apply(secret("s3-keys", {"access_key_id": "testing", "secret_access_key": "testing"}), TASK_NAMESPACE)
    cluster.apply(
        {
            "apiVersion": "dth.io/v1alpha1",
            "kind": "TransferTask",
            "metadata": {"name": "copy"},
            "spec": {
                "type": "S3",
                "source": {**side, "bucket": "kind-source"},
                "destination": {**side, "bucket": "kind-destination"},
                "options": {"workers": 2},
            },
        },
        TASK_NAMESPACE,
    )

    def status() -> dict[str, Any]:
        done = cluster.kubectl("-n", TASK_NAMESPACE, "get", "transfertask", "copy", "-o", "json")
        return dict(json.loads(done.stdout).get("status") or {})

    def diagnostics() -> str:
        runner_logs = subprocess.run(
            [*cluster.kubectl_command(), "-n", "dth-aws", "exec", "deployment/ecs-runner", "--",
             "sh", "-c", "find /tmp/ecs-logs -type f -exec tail -n 30 {} +"],
            capture_output=True, text=True, timeout=60, check=False,
        ).stdout  # fmt: skip
        return "\n".join(
            [
                f"status: {json.dumps(status(), indent=2)}",
                f"operator:\n{cluster.logs(OPERATOR_NAMESPACE, f'deployment/{RELEASE}-dth-operator')}",
                f"ecs-runner:\n{cluster.logs('dth-aws', 'deployment/ecs-runner')}",
                f"tasks:\n{runner_logs}",
            ]
        )

    def finished() -> bool:
        phase = status().get("phase")
        if phase in {"Failed", "Invalid"}:
            raise AssertionError(f"the task ended {phase}\n{diagnostics()}")
        return phase == "Succeeded"

    wait_for(finished, timeout=600, what="phase Succeeded", detail=diagnostics)
    final = status()
    assert final["objects"]["found"] == OBJECTS, diagnostics()
    assert final["objects"]["copied"] == OBJECTS
    assert final["objects"]["failed"] == 0
    table = cluster.kubectl("-n", TASK_NAMESPACE, "get", "tt").stdout
    assert "Succeeded" in table

    with port_forward(cluster, "dth-aws", "service/moto", 5000) as port:
        s3 = LocalStacks(f"http://127.0.0.1:{port}").client("s3")
        copied = s3.list_objects_v2(Bucket="kind-destination")["Contents"]
        assert sorted(o["Key"] for o in copied) == [f"data/{n:03d}" for n in range(OBJECTS)]
        source = s3.get_object(Bucket="kind-source", Key="data/007")["Body"].read()
        assert s3.get_object(Bucket="kind-destination", Key="data/007")["Body"].read() == source

    # The operator's pod ran with the chart's hardening, as the non-root user of the image.
    pod = json.loads(
        cluster.kubectl(
            "-n", OPERATOR_NAMESPACE, "get", "pods", "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "json"
        ).stdout
    )["items"][0]
    assert pod["status"]["phase"] == "Running"
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0, diagnostics()
    cluster.helm("uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE)
