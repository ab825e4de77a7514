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

from dth.devtools.cfnproxy import CfnProxy
from dth.devtools.console import OidcProvider
from dth.devtools.ecs_pods import PodLauncher
from dth.devtools.ecs_runner import EcsRunner
from dth.devtools.image_build import BuildReport, ProjectImages, build_project_images, missing_programs
from dth.devtools.kubernetes import LocalKubernetes, find_binary
from dth.devtools.moto import MOTO_ACCESS_KEY, MOTO_SECRET_KEY, MotoServer
from dth.devtools.oci import Pusher, build_image
from dth.devtools.radosgw import RadosGateway
from dth.devtools.registry import DockerRegistry
from dth.devtools.stacks import LocalStacks
from dth.devtools.waiting import wait_for

pytestmark = [pytest.mark.node, pytest.mark.slow]

CHART = Path(__file__).resolve().parents[1] / "helm" / "dth-operator"
RELEASE = "dth-operator"
OBJECTS = 12


@pytest.fixture(scope="module")
def own_moto() -> Iterator[MotoServer]:
    """A moto server of this module's own: the ECS runner here runs every service it finds as a pod."""
    server = MotoServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


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
        home.mkdir(parents=True, exist_ok=True)
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


#: Run inside the console's pod: its sign-in redirect, and what its ServiceAccount token may do in practice
#: (argv: the namespace, a user RBAC lets read tasks there, a user it does not).
CONSOLE_PROBE = """
import http.client, json, os, ssl, sys, urllib.error, urllib.request
namespace, reader, stranger = sys.argv[1:4]
local = http.client.HTTPConnection("127.0.0.1", 8080, timeout=30)
local.request("GET", "/login")
answer = local.getresponse()
results = {"login": [answer.status, answer.getheader("Location", "")]}
api = "https://" + os.environ["KUBERNETES_SERVICE_HOST"]
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
token = open(sa + "/token").read()
context = ssl.create_default_context(cafile=sa + "/ca.crt")
def status(path, user=None):
    headers = {"Authorization": "Bearer " + token}
    if user:
        headers["Impersonate-User"] = user
    try:
        return urllib.request.urlopen(urllib.request.Request(api + path, headers=headers), context=context).status
    except urllib.error.HTTPError as error:
        return error.code
tasks = f"/apis/dth.io/v1alpha1/namespaces/{namespace}/transfertasks"
results["tasks as reader"] = status(tasks, reader)
results["tasks as stranger"] = status(tasks, stranger)
results["secrets as itself"] = status(f"/api/v1/namespaces/{namespace}/secrets")
print(json.dumps(results))
"""


def test_the_console_runs_in_a_pod_from_the_chart(
    node_cluster: LocalKubernetes,
    project_images: ProjectImages,
    moto_server: MotoServer,
    namespace: str,
    tmp_path: Path,
) -> None:
    node = node_cluster.node
    with OidcProvider(tmp_path / "oidc.log", [{"sub": "reader", "email": "reader@example.com"}]) as provider:
        provider.start()
        # The pod reaches the provider at the node's address; its discovery document names that issuer.
        issuer = f"http://{node.expose(provider.port)}"
        create_secret(node_cluster, namespace, "aws-keys", {
            "AWS_ACCESS_KEY_ID": MOTO_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": MOTO_SECRET_KEY})  # fmt: skip
        create_secret(node_cluster, namespace, "oidc", {
            "client-secret": "console-client-secret", "session-secret": "s" * 40})  # fmt: skip
        node_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(TASK_READER_ROLE))
        node_cluster.kubectl("create", "rolebinding", "reader-tasks", "-n", namespace,
                             f"--clusterrole={TASK_READER_ROLE['metadata']['name']}", "--user=reader@example.com")  # fmt: skip
        values = operator_values(project_images, f"http://{node.expose(moto_server.port)}")
        repository, tag = project_images.operator.name.rsplit(":", 1)
        values["console"] = {
            "enabled": True,
            "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
            "publicUrl": "http://console.example",
            "oidc": {"issuer": issuer, "clientId": "dth-console", "existingSecret": "oidc"},
        }
        release = Release(node_cluster, tmp_path / "helm", namespace)
        began = time.monotonic()
        release.install(values)
        print(f"helm install --wait (operator and console): {time.monotonic() - began:.1f} s")

        pod = console_pod(node_cluster, namespace)
        name = pod["metadata"]["name"]
        assert pod["spec"]["nodeName"] == node.node_name
        assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True", release.describe()
        assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["spec"]["securityContext"]["runAsUser"] == 10001
        health = proxy_get(
            node_cluster, f"/api/v1/namespaces/{namespace}/services/{RELEASE}-console:http/proxy/healthz"
        )
        assert health.strip() == "ok", health

        done = node_cluster.kubectl(
            "exec", "-n", namespace, name, "--", "python", "-c", CONSOLE_PROBE,
            namespace, "reader@example.com", "stranger@example.com",
        )  # fmt: skip
        results = json.loads(done.stdout)
        status, location = results["login"]
        # Sign-in: the console read the provider's discovery document from inside the pod and sends the
        # browser to its authorization endpoint, with PKCE, coming back to the public address.
        assert status in (302, 307), results
        assert location.startswith(f"{issuer}/"), location
        assert "client_id=dth-console" in location and "code_challenge=" in location, location
        assert "redirect_uri=http%3A%2F%2Fconsole.example%2Fauth%2Fcallback" in location, location
        # Impersonation decides what a person sees; the console itself may not read a Secret.
        assert results["tasks as reader"] == 200, results
        assert results["tasks as stranger"] == 403, results
        assert results["secrets as itself"] == 403, results
        logs = node_cluster.kubectl("logs", "-n", namespace, name).stdout
        assert "console-client-secret" not in logs and "s" * 40 not in logs


#: Reading TransferTasks (the built-in `view` role does not cover custom resources on Kubernetes 1.20).
TASK_READER_ROLE: dict[str, Any] = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRole",
    "metadata": {"name": "dth-node-e2e-task-reader"},
    "rules": [{"apiGroups": ["dth.io"], "resources": ["transfertasks"], "verbs": ["get", "list", "watch"]}],
}


def console_pod(cluster: LocalKubernetes, namespace: str) -> dict[str, Any]:
    listed = cluster.kubectl(
        "get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/name={RELEASE}-console", "-o", "json"
    ).stdout
    running = [pod for pod in json.loads(listed)["items"] if not pod["metadata"].get("deletionTimestamp")]
    assert len(running) == 1, [pod["metadata"]["name"] for pod in running]
    return dict(running[0])


def create_secret(cluster: LocalKubernetes, namespace: str, name: str, data: dict[str, str]) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": data,
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def task_status(cluster: LocalKubernetes, namespace: str, name: str) -> dict[str, Any]:
    done = cluster.kubectl("get", "transfertask", "-n", namespace, name, "-o", "json", check=False)
    if done.returncode != 0:
        return {}
    return dict(json.loads(done.stdout).get("status") or {})


@pytest.fixture
def cloudformation(own_moto: MotoServer) -> Iterator[CfnProxy]:
    """CloudFormation that behaves as AWS's does, in front of moto: stacks pass through *_IN_PROGRESS, and an
    update that changes nothing is refused ("No updates are to be performed."). Plain moto applies such an
    update, and its UPDATE_COMPLETE fires a once-task's rule a second time when the replaced operator's pod
    sends the spec its killed predecessor had already sent (seen here: the image synced twice)."""
    with CfnProxy(own_moto.endpoint_url, hold=1.0) as proxy:
        yield proxy


def test_s3_and_image_tasks_succeed_with_the_operator_and_the_engines_in_pods(
    node_cluster: LocalKubernetes,
    project_images: ProjectImages,
    own_moto: MotoServer,
    cloudformation: CfnProxy,
    radosgw: RadosGateway,
    registry: DockerRegistry,
    auth_registry: DockerRegistry,
    namespace: str,
    tmp_path: Path,
) -> None:
    node = node_cluster.node
    moto_url = f"http://{node.expose(own_moto.port)}"
    # The operator's AWS: CloudFormation as AWS behaves; every other call is passed through to moto.
    aws_url = f"http://{node.expose(int(cloudformation.url.rsplit(':', 1)[1]))}"
    rgw_port = int(radosgw.endpoint_urls[0].rsplit(":", 1)[1])
    rgw_url = f"http://{node.expose(rgw_port)}"
    source_registry = node.expose(registry.port)
    destination_registry = node.expose(auth_registry.port)
    aws = LocalStacks(own_moto.endpoint_url)
    network = aws.network(namespace)

    # The data: objects in radosgw, images in a registry.
    s3 = boto3_client(radosgw)
    source_bucket, destination_bucket = f"{namespace}-a", f"{namespace}-b"
    s3.create_bucket(Bucket=source_bucket)
    s3.create_bucket(Bucket=destination_bucket)
    bodies = {f"data/{n:02d}": os.urandom(700 + n) for n in range(OBJECTS)}
    for key, body in bodies.items():
        s3.put_object(Bucket=source_bucket, Key=key, Body=body)
    pusher = Pusher(registry.url)
    images = {f"{namespace}/web:1.0": build_image(f"{namespace}-web", layers=2)}
    digests = {}
    for name, artifact in images.items():
        repository, tag = name.split(":")
        digests[name] = pusher.push(repository, tag, artifact)

    create_secret(node_cluster, namespace, "aws-keys", {
        "AWS_ACCESS_KEY_ID": MOTO_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": MOTO_SECRET_KEY})  # fmt: skip
    create_secret(node_cluster, namespace, "rgw-keys", {
        "access_key_id": radosgw.access_key, "secret_access_key": radosgw.secret_key})  # fmt: skip
    assert auth_registry.username and auth_registry.password
    login = {"username": auth_registry.username, "password": auth_registry.password}
    create_secret(node_cluster, namespace, "registry-login", login)
    release = Release(node_cluster, tmp_path / "helm", namespace)
    values = operator_values(project_images, aws_url)
    values["plugin"].update(subnets=list(network.subnets), securityGroups=list(network.security_groups))
    values["operator"].update(observeInterval=2, stackRetryDelay=1)
    release.install(values)
    first_pod = operator_pod(node_cluster, namespace)["metadata"]["uid"]

    side = {"type": "S3_Compatible", "endpoint": rgw_url, "credentials": {"secretName": "rgw-keys"}}
    tasks = [
        {
            "apiVersion": "dth.io/v1alpha1",
            "kind": "TransferTask",
            "metadata": {"name": "copy", "namespace": namespace},
            "spec": {
                "type": "S3",
                "source": {**side, "bucket": source_bucket},
                "destination": {**side, "bucket": destination_bucket},
                "options": {"workers": 2},
            },
        },
        {
            "apiVersion": "dth.io/v1alpha1",
            "kind": "TransferTask",
            "metadata": {"name": "mirror", "namespace": namespace},
            "spec": {
                "type": "Image",
                "source": {
                    "type": "Registry",
                    "registry": source_registry,
                    "insecure": True,
                    "images": {"names": sorted(images)},
                },
                "destination": {
                    "type": "Registry",
                    "registry": destination_registry,
                    "insecure": True,
                    "prefix": "mirror/",
                    "credentials": {"secretName": "registry-login"},
                },
            },
        },
    ]
    launcher = PodLauncher(
        node_cluster, namespace, aws_endpoint=moto_url, access_key=MOTO_ACCESS_KEY, secret_key=MOTO_SECRET_KEY
    )

    def diagnostics() -> str:
        statuses = {name: task_status(node_cluster, namespace, name) for name in ("copy", "mirror")}
        logs = "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-2000:]}"
            for path in sorted((tmp_path / "ecs").glob("*.log"))
        )
        return f"{json.dumps(statuses, indent=2)}\n{release.describe()}\n{logs}"

    with EcsRunner(own_moto.endpoint_url, log_dir=tmp_path / "ecs", poll_interval=0.5, pods=launcher) as runner:
        applied = time.monotonic()
        node_cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": tasks}))
        # The operator's pod killed: the Deployment replaces it, and the tasks still complete.
        node_cluster.kubectl("delete", "pod", "-n", namespace, "-l", "app.kubernetes.io/name=dth-operator",
                             "--grace-period=0", "--force")  # fmt: skip
        finished: dict[str, float] = {}

        def both_succeeded() -> bool:
            for name in ("copy", "mirror"):
                phase = task_status(node_cluster, namespace, name).get("phase")
                if phase in ("Failed", "Invalid"):
                    raise AssertionError(f"{name} ended {phase}\n{diagnostics()}")
                if phase == "Succeeded":
                    finished.setdefault(name, time.monotonic() - applied)
            return len(finished) == 2

        wait_for(both_succeeded, timeout=900, what="both tasks Succeeded", detail=diagnostics, interval=1)
        print(f"apply -> Succeeded: {finished}")
        launched = list(launcher.launched)
        assert not runner.errors, runner.errors

    assert operator_pod(node_cluster, namespace)["metadata"]["uid"] != first_pod
    copy = task_status(node_cluster, namespace, "copy")
    assert copy["objects"]["found"] == OBJECTS and copy["objects"]["copied"] == OBJECTS, diagnostics()
    assert copy["objects"]["failed"] == 0
    for key, body in bodies.items():
        assert s3.get_object(Bucket=destination_bucket, Key=key)["Body"].read() == body
    mirror = task_status(node_cluster, namespace, "mirror")
    assert mirror["objects"]["found"] == len(images) and mirror["objects"]["copied"] == len(images), diagnostics()
    destination = Pusher(auth_registry.url, username=auth_registry.username, password=auth_registry.password)
    for name, digest in digests.items():
        repository, tag = name.split(":")
        assert destination.digest(f"mirror/{repository}", tag) == digest
    # The engines ran as the task definitions say, in the engine image the chart named.
    assert {pod["spec"]["containers"][0]["image"] for pod in launched} == {project_images.engine.name}
    commands = {tuple(pod["spec"]["containers"][0]["args"]) for pod in launched}
    assert {("s3", "finder"), ("s3", "worker"), ("image", "sync-env")} <= commands, commands
    # Each once-task ran once, though the operator that deployed it was replaced on the way.
    runs = [tuple(pod["spec"]["containers"][0]["args"]) for pod in launched]
    assert (runs.count(("s3", "finder")), runs.count(("image", "sync-env"))) == (1, 1), runs
    assert all("command" not in pod["spec"]["containers"][0] for pod in launched)  # the image's entrypoint, dth

    # helm upgrade with a changed value rolls the pod and keeps the tasks.
    before = operator_pod(node_cluster, namespace)["metadata"]["uid"]
    values["operator"].update(observeInterval=3)
    release.install(values, upgrade=True)
    after = operator_pod(node_cluster, namespace)
    assert after["metadata"]["uid"] != before
    assert task_status(node_cluster, namespace, "copy")["phase"] == "Succeeded"
    # helm uninstall leaves the TransferTasks.
    release.run("uninstall", RELEASE, "-n", namespace)
    left = json.loads(node_cluster.kubectl("get", "transfertasks", "-n", namespace, "-o", "json").stdout)["items"]
    assert sorted(item["metadata"]["name"] for item in left) == ["copy", "mirror"]


def boto3_client(radosgw: RadosGateway) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=radosgw.endpoint_urls[0],
        aws_access_key_id=radosgw.access_key,
        aws_secret_access_key=radosgw.secret_key,
        region_name="us-east-1",
    )
