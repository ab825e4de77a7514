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
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dth.devtools.ecs_runner import EcsRunner
from dth.devtools.faultproxy import Fault, FaultProxy
from dth.devtools.kubernetes import LocalKubernetes
from dth.devtools.moto import MotoServer
from dth.devtools.operator_env import operator_environment
from dth.devtools.ports import free_port
from dth.devtools.sites import S3Site
from dth.devtools.stacks import LocalStacks
from dth.devtools.waiting import wait_for


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


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoServer]:
    """A moto server of these tests' own: stacks that other tests left in the session's server (moto keeps
    ECS resources and half-created stacks) make its CloudFormation answer describe calls with errors."""
    with MotoServer() as server:
        yield server


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

    def start(
        endpoint: str | None = None,
        *,
        peering: bool = False,
        priority: int = 0,
        liveness: str = "",
        settings: dict[str, str] | None = None,
    ) -> subprocess.Popen[str]:
        env = operator_environment(
            kubernetes.kubeconfig,
            endpoint or moto_server.endpoint_url,
            network,
            engine_image="dth-engine:test",
            observe_interval=1,
            metrics_port=metrics_port if not started else free_port(),  # replicas side by side
        )
        env.update(settings or {})
        log = (tmp_path / f"operator-{len(started)}.log").open("w")  # closed when the test's tmp_path goes
        where = ["--peering", "dth-operator", "--priority", str(priority)] if peering else ["--standalone"]
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dth_operator",
                "--namespace",
                cluster.namespace,
                *where,
                "--liveness",
                liveness,
                "--verbose",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(process)
        process.log = log.name  # type: ignore[attr-defined]
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


def create_stack_fault(status: int, code: str, times: int | None = None) -> Fault:
    """CloudFormation's CreateStack answered with an error (query protocol), `times` times or always."""
    return Fault(
        method="POST", body_contains="Action=CreateStack", status=status, code=code, protocol="query", times=times
    )


def events(cluster: Cluster, name: str) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Events about one TransferTask."""
    listed = json.loads(cluster.kubectl("get", "events", "-o", "json").stdout)["items"]
    return [
        (e.get("type", ""), e.get("reason", ""), e.get("message", ""))
        for e in listed
        if e.get("involvedObject", {}).get("name") == name and e.get("involvedObject", {}).get("kind") == "TransferTask"
    ]


def stacks(aws: LocalStacks, namespace: str) -> list[dict[str, Any]]:
    found = aws.cloudformation.describe_stacks()["Stacks"]
    return [
        s for s in found if s["StackName"].startswith(f"dth-{namespace}-") and s["StackStatus"] != "DELETE_COMPLETE"
    ]


def parameters(stack: dict[str, Any]) -> dict[str, str]:
    return {p["ParameterKey"]: p["ParameterValue"] for p in stack.get("Parameters", [])}


@pytest.mark.operator_e2e
def test_apply_runs_the_transfer_and_reports_success(
    cluster: Cluster,
    start_operator: Callable[..., Any],
    aws: LocalStacks,
    moto_server: MotoServer,
    rgw_site: S3Site,
    unique_name: str,
    tmp_path: Path,
    promtool: str,
) -> None:
    client = rgw_site.client()
    client.create_bucket(Bucket=f"{unique_name}-a")
    client.create_bucket(Bucket=f"{unique_name}-b")
    for number in range(12):
        client.put_object(Bucket=f"{unique_name}-a", Key=f"data/{number:02d}", Body=os.urandom(500 + number))
    cluster.apply(secret("rgw-keys", rgw_site))
    start_operator()
    cluster.apply(transfer_task("copy", rgw_site, f"{unique_name}-a", f"{unique_name}-b"))
    (stack,) = wait_for(lambda: stacks(aws, unique_name), what="the plugin stack")
    assert stack["StackName"] == f"dth-{unique_name}-copy"
    assert parameters(stack)["SourceBucket"] == f"{unique_name}-a"
    assert parameters(stack)["SourceCredentialsSecretsManagerArn"].startswith("arn:aws:secretsmanager:")
    assert rgw_site.secret_key not in json.dumps(stack, default=str)
    with EcsRunner(moto_server.endpoint_url, log_dir=tmp_path / "ecs", poll_interval=0.5):
        wait_for(lambda: cluster.phase("copy") == "Succeeded", timeout=180, what="phase Succeeded")
    status = cluster.status("copy")
    assert status["objects"]["found"] == 12
    assert status["objects"]["copied"] == 12
    assert status["objects"]["failed"] == 0
    assert status["progress"] == "12/12"
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True",
        "StackSynced": "True",
        "Degraded": "False",
    }
    copied = client.list_objects_v2(Bucket=f"{unique_name}-b")["Contents"]
    assert len(copied) == 12
    table = cluster.kubectl("get", "tt").stdout
    assert "Succeeded" in table and "12/12" in table
    announced = wait_for(
        lambda: [e for e in events(cluster, "copy") if e[1] == "Succeeded"], timeout=30, what="a Succeeded Event"
    )
    assert announced[0][0] == "Normal" and "12 copied" in announced[0][2]
    assert rgw_site.secret_key not in json.dumps(status)
    port = start_operator.metrics_port  # type: ignore[attr-defined]
    exposition = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'dth_tasks{phase="Succeeded"} 1.0' in exposition
    assert f'dth_task_objects{{name="copy",namespace="{unique_name}",outcome="copied"}} 12.0' in exposition
    # The exposition as the operator serves it, through Prometheus' own linter.
    checked = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


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


@pytest.mark.operator_e2e
def test_update_suspend_delete_and_retain(
    cluster: Cluster, start_operator: Callable[..., Any], aws: LocalStacks, rgw_site: S3Site, unique_name: str
) -> None:
    cluster.apply(secret("rgw-keys", rgw_site))
    start_operator()
    task = transfer_task("lifecycle", rgw_site, f"{unique_name}-a", f"{unique_name}-b")
    cluster.apply(task)
    wait_for(lambda: stacks(aws, unique_name), what="the stack")
    task["spec"]["options"]["workers"] = 9
    cluster.apply(task)
    wait_for(lambda: parameters(stacks(aws, unique_name)[0])["OptionsWorkers"] == "9", what="the update")
    task["spec"]["suspend"] = True
    cluster.apply(task)
    wait_for(lambda: parameters(stacks(aws, unique_name)[0])["Suspend"] == "true", what="suspend")
    wait_for(
        lambda: cluster.phase("lifecycle") == "Suspended",
        what="phase Suspended",
        detail=lambda: cluster.status("lifecycle"),
    )
    cluster.kubectl("delete", "tt", "lifecycle", "--wait=false")
    wait_for(lambda: cluster.task("lifecycle") is None, what="the finalizer to let go")
    assert stacks(aws, unique_name) == []

    kept = transfer_task("kept", rgw_site, f"{unique_name}-a", f"{unique_name}-c")
    kept["metadata"]["annotations"] = {"dth.io/deletion-policy": "retain"}
    cluster.apply(kept)
    wait_for(lambda: stacks(aws, unique_name), what="the retained task's stack")
    cluster.kubectl("delete", "tt", "kept", "--wait=false")
    wait_for(lambda: cluster.task("kept") is None, what="the retained task to go")
    assert [s["StackName"] for s in stacks(aws, unique_name)] == [f"dth-{unique_name}-kept"]


@pytest.mark.operator_e2e
def test_restart_mid_provisioning_adopts_the_stack_and_throttling_is_retried(
    cluster: Cluster,
    start_operator: Callable[..., Any],
    aws: LocalStacks,
    moto_server: MotoServer,
    rgw_site: S3Site,
    unique_name: str,
) -> None:
    cluster.apply(secret("rgw-keys", rgw_site))
    with FaultProxy(moto_server.endpoint_url) as proxy:
        throttled = proxy.add(create_stack_fault(400, "Throttling", times=4))
        first = start_operator(proxy.url)
        cluster.apply(transfer_task("adopt", rgw_site, f"{unique_name}-a", f"{unique_name}-b"))
        wait_for(lambda: stacks(aws, unique_name), timeout=120, what="the stack despite throttling")
        assert throttled.hits == 4  # more than botocore's own attempts: kopf retried the handler
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=20)
    # Forget what the operator wrote, as if it died before recording the stack: it must adopt, not duplicate.
    cluster.kubectl(
        "patch",
        "tt",
        "adopt",
        "--type=merge",
        "-p",
        json.dumps({"metadata": {"annotations": {"dth.io/last-handled-configuration": None}}}),
    )
    start_operator()
    wait_for(lambda: cluster.phase("adopt") in {"Running", "Provisioning", "Succeeded"}, what="the task to resume")
    time.sleep(3)
    assert len(stacks(aws, unique_name)) == 1


def test_metrics_exposition_passes_promtool(promtool: str) -> None:
    """Every metric the operator exports, with values, checked by Prometheus' own linter."""
    from prometheus_client import generate_latest

    from dth.spec.model import Phase
    from dth_operator import metrics

    metrics.set_phase("ns", "task", Phase.RUNNING)
    metrics.OBJECTS.labels("ns", "task", "copied").set(3)
    metrics.BYTES.labels("ns", "task", "copied").set(300)
    metrics.QUEUE_DEPTH.labels("ns", "task").set(1)
    metrics.DEAD_LETTERS.labels("ns", "task").set(0)
    metrics.RECONCILE_SECONDS.labels("reconcile").observe(0.2)
    metrics.AWS_ERRORS.labels("cloudformation", "Throttling").inc()
    exposition = generate_latest()
    checked = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, timeout=30)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    assert b"dth_tasks{" in exposition and b"dth_aws_api_errors_total{" in exposition
    bad = b"# HELP dthTasksCount tasks\n# TYPE dthTasksCount counter\ndthTasksCount 1\n"
    refused = subprocess.run([promtool, "check", "metrics"], input=bad, capture_output=True, timeout=30)
    assert refused.returncode != 0  # the linter does judge names: a camelCase counter without _total fails


def test_liveness_endpoint_answers_and_reports_whether_aws_is_reachable(
    cluster: Cluster, start_operator: Callable[..., Any], moto_server: MotoServer
) -> None:
    alive_port, cut_off_port = free_port(), free_port()
    start_operator(liveness=f"http://127.0.0.1:{alive_port}/healthz")
    start_operator(f"http://127.0.0.1:{free_port()}", liveness=f"http://127.0.0.1:{cut_off_port}/healthz")

    def health(port: int) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
                assert answer.status == 200
                return dict(json.loads(answer.read()))
        except OSError:
            return None  # not serving yet

    assert wait_for(lambda: health(alive_port), what="the liveness endpoint") == {"stacks": True}
    assert wait_for(lambda: health(cut_off_port), what="the second liveness endpoint") == {"stacks": False}


@pytest.fixture(scope="session")
def kopf_peering_crds(kubernetes: LocalKubernetes) -> None:
    manifest = Path(__file__).resolve().parents[1] / "crds" / "kopf-peering.yaml"
    kubernetes.kubectl("apply", "-f", str(manifest))
    for crd in ("kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"):
        kubernetes.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")


def handled(process: Any, task: str) -> bool:
    """Whether this operator process reconciled the task: its JSON log has the spec error for that object."""
    for line in Path(process.log).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # botocore's and kubernetes' debug lines are not kopf's JSON
        if str(record.get("message", "")).startswith("invalid spec") and record.get("object", {}).get("name") == task:
            return True
    return False


def peers(cluster: Cluster) -> dict[str, Any]:
    found = cluster.kubectl("get", "kopfpeering", "dth-operator", "-o", "json", check=False)
    return dict(json.loads(found.stdout).get("status") or {}) if found.returncode == 0 else {}


def test_two_replicas_with_peering_only_one_reconciles_and_the_other_takes_over(
    cluster: Cluster, start_operator: Callable[..., Any], rgw_site: S3Site, kopf_peering_crds: None
) -> None:
    peering = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "dth-operator"}}
    cluster.apply(peering)
    leader = start_operator(peering=True, priority=200)
    follower = start_operator(peering=True, priority=100)
    wait_for(lambda: len(peers(cluster)) == 2, what="both replicas in the peering object")
    cluster.apply(transfer_task("first", rgw_site, "same-bucket", "same-bucket"))
    wait_for(lambda: cluster.phase("first") == "Invalid", what="the first task handled")
    time.sleep(2)
    assert handled(leader, "first")
    assert not handled(follower, "first")

    leader.send_signal(signal.SIGTERM)
    leader.wait(timeout=30)
    cluster.apply(transfer_task("second", rgw_site, "other-bucket", "other-bucket"))
    wait_for(lambda: cluster.phase("second") == "Invalid", timeout=120, what="the follower to take over")
    assert handled(follower, "second")


def test_access_denied_is_reported_on_the_resource_not_retried(
    cluster: Cluster, start_operator: Callable[..., Any], moto_server: MotoServer, rgw_site: S3Site, aws: LocalStacks
) -> None:
    cluster.apply(secret("rgw-keys", rgw_site))
    with FaultProxy(moto_server.endpoint_url) as proxy:
        denied = proxy.add(create_stack_fault(403, "AccessDenied"))
        start_operator(proxy.url)
        cluster.apply(transfer_task("denied", rgw_site, "bucket-a", "bucket-b"))
        wait_for(
            lambda: cluster.phase("denied") == "Failed", what="phase Failed", detail=lambda: cluster.status("denied")
        )
        hits = denied.hits
        time.sleep(3)
        assert denied.hits == hits  # reported, not retried in a loop
    status = cluster.status("denied")
    assert "AWS refused the stack" in status["message"]
    stack_synced = {c["type"]: c for c in status["conditions"]}["StackSynced"]
    assert stack_synced["status"] == "False" and stack_synced["reason"] == "AccessDenied"
    assert stacks(aws, cluster.namespace) == []


def test_an_unreadable_template_is_reported_on_the_resource(
    cluster: Cluster, start_operator: Callable[..., Any], rgw_site: S3Site, aws: LocalStacks, tmp_path: Path
) -> None:
    cluster.apply(secret("rgw-keys", rgw_site))
    missing = tmp_path / "nowhere" / "s3-plugin.yaml"
    start_operator(settings={"DTH_S3_TEMPLATE": str(missing)})
    cluster.apply(transfer_task("notemplate", rgw_site, "bucket-a", "bucket-b"))
    wait_for(lambda: cluster.phase("notemplate") == "Failed", what="phase Failed")
    status = cluster.status("notemplate")
    assert str(missing) in status["message"] and "operator setting" in status["message"]
    assert {c["type"]: c["reason"] for c in status["conditions"]}["StackSynced"] == "TemplateUnreadable"
    assert stacks(aws, cluster.namespace) == []


@pytest.mark.operator_e2e
def test_an_image_task_copies_between_registries_and_reports_success(
    cluster: Cluster,
    start_operator: Callable[..., Any],
    aws: LocalStacks,
    moto_server: MotoServer,
    registry: Any,
    auth_registry: Any,
    unique_name: str,
    tmp_path: Path,
) -> None:
    from dth.devtools.oci import Pusher, build_image

    source = Pusher(registry.url)
    images = {f"{unique_name}/web:1.0": build_image(f"{unique_name}-web", layers=2)}
    images[f"{unique_name}/api:2"] = build_image(f"{unique_name}-api", layers=1)
    digests = {name: source.push(*name.split(":"), artifact) for name, artifact in images.items()}
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "registry-login"},
            "stringData": {"username": auth_registry.username, "password": auth_registry.password},
        }
    )
    start_operator()
    cluster.apply(
        {
            "apiVersion": "dth.io/v1alpha1",
            "kind": "TransferTask",
            "metadata": {"name": "mirror"},
            "spec": {
                "type": "Image",
                "source": {
                    "type": "Registry",
                    "registry": registry.host,
                    "insecure": True,
                    "images": {"names": sorted(images)},
                },
                "destination": {
                    "type": "Registry",
                    "registry": auth_registry.host,
                    "insecure": True,
                    "prefix": "mirror/",
                    "credentials": {"secretName": "registry-login"},
                },
            },
        }
    )
    (stack,) = wait_for(lambda: stacks(aws, unique_name), what="the image plugin stack")
    assert auth_registry.password not in json.dumps(stack, default=str)
    with EcsRunner(moto_server.endpoint_url, log_dir=tmp_path / "ecs", poll_interval=0.5):
        wait_for(
            lambda: cluster.phase("mirror") == "Succeeded",
            timeout=180,
            what="phase Succeeded",
            detail=lambda: cluster.status("mirror"),
        )
    status = cluster.status("mirror")
    assert status["objects"]["found"] == 2 and status["objects"]["copied"] == 2 and status["objects"]["failed"] == 0
    destination = Pusher(auth_registry.url, username=auth_registry.username, password=auth_registry.password)
    for name, digest in digests.items():
        repository, tag = name.split(":")
        assert destination.digest(f"mirror/{repository}", tag) == digest


@pytest.mark.operator_e2e
def test_a_missing_bucket_fails_the_task_with_a_message_that_names_it(
    cluster: Cluster,
    start_operator: Callable[..., Any],
    aws: LocalStacks,
    moto_server: MotoServer,
    rgw_site: S3Site,
    unique_name: str,
    tmp_path: Path,
) -> None:
    rgw_site.client().create_bucket(Bucket=f"{unique_name}-a")
    cluster.apply(secret("rgw-keys", rgw_site))
    start_operator()
    cluster.apply(transfer_task("nowhere", rgw_site, f"{unique_name}-a", f"{unique_name}-missing"))
    wait_for(lambda: stacks(aws, unique_name), what="the plugin stack")
    with EcsRunner(moto_server.endpoint_url, log_dir=tmp_path / "ecs", poll_interval=0.5):
        wait_for(
            lambda: cluster.phase("nowhere") == "Failed",
            timeout=180,
            what="phase Failed",
            detail=lambda: cluster.status("nowhere"),
        )
    message = cluster.status("nowhere")["message"]
    assert message.startswith("the scan failed") and f"{unique_name}-missing" in message
    warned = wait_for(
        lambda: [e for e in events(cluster, "nowhere") if e[1] == "Failed"], timeout=30, what="a Failed Event"
    )
    assert warned[0][0] == "Warning" and f"{unique_name}-missing" in warned[0][2]
    assert rgw_site.secret_key not in json.dumps(cluster.status("nowhere"))
