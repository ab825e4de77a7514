"""The chart and the images on a real node: the operator's pod runs as the Deployment the chart makes.

The images are built with buildah from docker/*.Dockerfile on the debootstrap stand-in base
(dth.devtools.image_build, cached by content) and imported into the node's containerd. AWS is moto, reached
by the pod at the node's address.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dth.devtools.image_build import BuildReport, ProjectImages, build_project_images, missing_programs
from dth.devtools.kubernetes import LocalKubernetes, find_binary
from dth.devtools.moto import MOTO_ACCESS_KEY, MOTO_SECRET_KEY, MotoServer

pytestmark = [pytest.mark.node, pytest.mark.slow]

CHART = Path(__file__).resolve().parents[1] / "helm" / "dth-operator"
RELEASE = "dth-operator"


@pytest.fixture(scope="session")
def project_images(node_cluster: LocalKubernetes) -> ProjectImages:
    """The operator and engine images (buildah, cached by content), imported into the node's containerd."""
    missing = missing_programs()
    if missing:
        message = f"cannot build the images: {', '.join(missing)} missing (bash .ci/node.sh)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    report = BuildReport()
    images = build_project_images(report=report)
    print(f"images: built {report.seconds}, cached {report.cached}")
    for archive in (images.operator, images.engine):
        node_cluster.node.import_image(archive)
    return images


class Release:
    """helm against the node cluster, with its own caches and configuration."""

    def __init__(self, cluster: LocalKubernetes, home: Path, namespace: str) -> None:
        self.cluster = cluster
        self.home = home
        self.namespace = namespace
        binary = find_binary("helm")
        assert binary, "helm not found (bash .ci/kubernetes.sh)"
        self.binary = binary
        self._values = 0

    def run(self, *args: str, timeout: float = 600) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBECONFIG"))}
        env.update(
            HELM_CACHE_HOME=str(self.home / "cache"),
            HELM_CONFIG_HOME=str(self.home / "config"),
            HELM_DATA_HOME=str(self.home / "data"),
            KUBECONFIG=str(self.cluster.kubeconfig),
        )
        done = subprocess.run(
            [self.binary, *args], capture_output=True, text=True, timeout=timeout, check=False, env=env
        )
        if done.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} failed ({done.returncode}):\n{done.stderr}{done.stdout}\n{self.describe()}"
            )
        return done.stdout

    def install(self, values: dict[str, Any], *, upgrade: bool = False) -> None:
        self._values += 1
        path = self.home / f"values-{self._values}.yaml"
        path.write_text(yaml.safe_dump(values))
        verb = ["upgrade"] if upgrade else ["install"]
        self.run(*verb, RELEASE, str(CHART), "-n", self.namespace, "--values", str(path), "--wait", "--timeout=5m")

    def describe(self) -> str:
        pods = self.cluster.kubectl("describe", "pods", "-n", self.namespace, check=False).stdout
        logs = self.cluster.kubectl(
            "logs", "-n", self.namespace, f"deployment/{RELEASE}", "--tail=40", check=False
        ).stdout
        return f"{pods}\n{logs}"


def operator_values(images: ProjectImages, aws_endpoint: str) -> dict[str, Any]:
    repository, tag = images.operator.name.rsplit(":", 1)
    engine_repository, engine_tag = images.engine.name.rsplit(":", 1)
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "aws": {"region": "us-east-1", "endpointUrl": aws_endpoint, "credentialsSecret": {"name": "aws-keys"}},
        "plugin": {"engineImage": {"repository": engine_repository, "tag": engine_tag}},
        "operator": {"logFormat": "text"},
    }


@pytest.fixture
def namespace(node_cluster: LocalKubernetes, unique_name: str) -> Iterator[str]:
    node_cluster.kubectl("create", "namespace", unique_name)
    # Kubernetes 1.20 does not label namespaces with their name; the webhook selects them by it.
    node_cluster.kubectl("label", "namespace", unique_name, f"kubernetes.io/metadata.name={unique_name}")
    yield unique_name
    node_cluster.kubectl("delete", "namespace", unique_name, "--wait=false", check=False)


def operator_pod(cluster: LocalKubernetes, namespace: str) -> dict[str, Any]:
    pods = json.loads(
        cluster.kubectl(
            "get", "pods", "-n", namespace, "-l", "app.kubernetes.io/name=dth-operator", "-o", "json"
        ).stdout
    )["items"]
    running = [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]
    assert len(running) == 1, [pod["metadata"]["name"] for pod in pods]
    return dict(running[0])


def proxy_get(cluster: LocalKubernetes, path: str) -> str:
    return cluster.kubectl("get", "--raw", path).stdout


def test_the_operator_runs_in_a_pod_from_the_chart(
    node_cluster: LocalKubernetes,
    project_images: ProjectImages,
    moto_server: MotoServer,
    namespace: str,
    tmp_path: Path,
) -> None:
    aws_endpoint = f"http://{node_cluster.node.expose(moto_server.port)}"
    node_cluster.kubectl(
        "create",
        "secret",
        "generic",
        "aws-keys",
        "-n",
        namespace,
        f"--from-literal=AWS_ACCESS_KEY_ID={MOTO_ACCESS_KEY}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={MOTO_SECRET_KEY}",
    )
    release = Release(node_cluster, tmp_path / "helm", namespace)
    began = time.monotonic()
    release.install(operator_values(project_images, aws_endpoint))
    print(f"helm install --wait: {time.monotonic() - began:.1f} s")

    pod = operator_pod(node_cluster, namespace)
    name = pod["metadata"]["name"]
    assert pod["spec"]["nodeName"] == node_cluster.node.node_name
    conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conditions["Ready"] == "True", release.describe()
    container = pod["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001
    # The liveness endpoint the kubelet probes, read through the API server's pod proxy.
    health = json.loads(proxy_get(node_cluster, f"/api/v1/namespaces/{namespace}/pods/{name}:8081/proxy/healthz"))
    assert health.get("stacks") is True, health  # CloudFormation (moto) answered the operator's credentials
    # /metrics through the metrics Service, through the API server's service proxy.
    metrics = proxy_get(
        node_cluster, f"/api/v1/namespaces/{namespace}/services/{RELEASE}-metrics:metrics/proxy/metrics"
    )
    assert "# TYPE dth_" in metrics

    # RBAC in practice: the pod's own token reads the Secrets of its namespace and is refused elsewhere.
    account = f"system:serviceaccount:{namespace}:{RELEASE}"
    can_here = node_cluster.kubectl("auth", "can-i", "get", "secrets", "-n", namespace, "--as", account, check=False)
    can_there = node_cluster.kubectl("auth", "can-i", "get", "secrets", "-n", "default", "--as", account, check=False)
    assert (can_here.stdout.strip(), can_there.stdout.strip()) == ("yes", "no")
    probe = (
        "import os, ssl, sys, urllib.request, urllib.error\n"
        "api = 'https://' + os.environ['KUBERNETES_SERVICE_HOST']\n"
        "sa = '/var/run/secrets/kubernetes.io/serviceaccount'\n"
        "token = open(sa + '/token').read()\n"
        "ctx = ssl.create_default_context(cafile=sa + '/ca.crt')\n"
        "for ns in sys.argv[1:]:\n"
        "    req = urllib.request.Request(f'{api}/api/v1/namespaces/{ns}/secrets/aws-keys',"
        " headers={'Authorization': 'Bearer ' + token})\n"
        "    try:\n"
        "        print(urllib.request.urlopen(req, context=ctx, timeout=10).status)\n"
        "    except urllib.error.HTTPError as exc:\n"
        "        print(exc.code)\n"
    )
    node_cluster.kubectl("create", "secret", "generic", "aws-keys", "-n", "default", "--from-literal=x=y", check=False)
    done = node_cluster.kubectl("exec", "-n", namespace, name, "--", "python", "-c", probe, namespace, "default")
    assert done.stdout.split() == ["200", "403"], done.stdout
    secret = json.loads(node_cluster.kubectl("get", "secret", "aws-keys", "-n", namespace, "-o", "json").stdout)
    assert base64.b64decode(secret["data"]["AWS_ACCESS_KEY_ID"]).decode() == MOTO_ACCESS_KEY
