"""The operator on a real Kubernetes API server (etcd + kube-apiserver), with moto server as AWS, radosgw
as S3, and the local ECS runner playing ECS: `kubectl apply` a TransferTask and the objects arrive."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dth.devtools.cfnproxy import CfnProxy
from dth.devtools.ecs_runner import EcsRunner
from dth.devtools.faultproxy import Fault, FaultProxy
from dth.devtools.kubernetes import LocalKubernetes
from dth.devtools.moto import MotoServer
from dth.devtools.operator_env import operator_environment
from dth.devtools.operator_process import OperatorProcess, OperatorProcesses
from dth.devtools.ports import free_port
from dth.devtools.sites import S3Site
from dth.devtools.stacks import LocalStacks
from dth.devtools.task_namespace import TaskNamespace as Namespace
from dth.devtools.waiting import wait_for
from dth_operator.stacks import stack_name


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
def cluster(kubernetes: LocalKubernetes, transfertask_crd: str, unique_name: str) -> Iterator[Namespace]:
    kubernetes.kubectl("create", "namespace", unique_name)
    yield Namespace(kubernetes, unique_name)
    kubernetes.kubectl("delete", "namespace", unique_name, "--wait=false", check=False)


@pytest.fixture
def start_operator(
    kubernetes: LocalKubernetes, moto_server: MotoServer, aws: LocalStacks, cluster: Namespace, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    network = aws.network(cluster.name)
    processes = OperatorProcesses(tmp_path)
    metrics_port = free_port()

    def start(
        endpoint: str | None = None,
        *,
        peering: bool = False,
        priority: int = 0,
        liveness: str = "",
        settings: dict[str, str] | None = None,
        kubeconfig: Path | None = None,
        namespaces: list[str] | None = None,
    ) -> OperatorProcess:
        env = operator_environment(
            kubeconfig or kubernetes.kubeconfig,
            endpoint or moto_server.endpoint_url,
            network,
            engine_image="dth-engine:test",
            observe_interval=1,
            metrics_port=metrics_port if not processes.started else free_port(),  # replicas side by side
            stack_retry_delay=0.5,
        )
        env.update(settings or {})
        where = ["--peering", "dth-operator", "--priority", str(priority)] if peering else ["--standalone"]
        watched = [arg for namespace in namespaces or [cluster.name] for arg in ("--namespace", namespace)]
        return processes.start(env, [*watched, *where, "--liveness", liveness, "--verbose"])

    start.metrics_port = metrics_port  # type: ignore[attr-defined]
    yield start
    processes.stop_all()


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


def events(cluster: Namespace, name: str) -> list[tuple[str, str, str]]:
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
    cluster: Namespace,
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
    assert stack["StackName"] == stack_name("default", unique_name, "copy")
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
    cluster: Namespace, start_operator: Callable[..., Any], aws: LocalStacks, rgw_site: S3Site
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
    assert stacks(aws, cluster.name) == []
    wait_for(
        lambda: "overlap" in cluster.kubectl("get", "events", "-o", "json").stdout,
        timeout=30,
        what="an Event on the resource",
    )


@pytest.mark.operator_e2e
def test_update_suspend_delete_and_retain(
    cluster: Namespace, start_operator: Callable[..., Any], aws: LocalStacks, rgw_site: S3Site, unique_name: str
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
    assert [s["StackName"] for s in stacks(aws, unique_name)] == [stack_name("default", unique_name, "kept")]


@pytest.mark.operator_e2e
def test_restart_mid_provisioning_adopts_the_stack_and_throttling_is_retried(
    cluster: Namespace,
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
    cluster: Namespace, start_operator: Callable[..., Any], moto_server: MotoServer
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


def peers(cluster: Namespace) -> dict[str, Any]:
    found = cluster.kubectl("get", "kopfpeering", "dth-operator", "-o", "json", check=False)
    return dict(json.loads(found.stdout).get("status") or {}) if found.returncode == 0 else {}


def test_two_replicas_with_peering_only_one_reconciles_and_the_other_takes_over(
    cluster: Namespace, start_operator: Callable[..., Any], rgw_site: S3Site, kopf_peering_crds: None
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
    cluster: Namespace, start_operator: Callable[..., Any], moto_server: MotoServer, rgw_site: S3Site, aws: LocalStacks
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
    assert stacks(aws, cluster.name) == []


def test_an_unreadable_template_is_reported_on_the_resource(
    cluster: Namespace, start_operator: Callable[..., Any], rgw_site: S3Site, aws: LocalStacks, tmp_path: Path
) -> None:
    cluster.apply(secret("rgw-keys", rgw_site))
    missing = tmp_path / "nowhere" / "s3-plugin.yaml"
    start_operator(settings={"DTH_S3_TEMPLATE": str(missing)})
    cluster.apply(transfer_task("notemplate", rgw_site, "bucket-a", "bucket-b"))
    wait_for(lambda: cluster.phase("notemplate") == "Failed", what="phase Failed")
    status = cluster.status("notemplate")
    assert str(missing) in status["message"] and "operator setting" in status["message"]
    assert {c["type"]: c["reason"] for c in status["conditions"]}["StackSynced"] == "TemplateUnreadable"
    assert stacks(aws, cluster.name) == []


@pytest.mark.operator_e2e
def test_an_image_task_copies_between_registries_and_reports_success(
    cluster: Namespace,
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
    cluster: Namespace,
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


# --- stack states, through the CloudFormation stand-in (dth.devtools.cfnproxy) ---------------------------


def conditions(cluster: Namespace, name: str) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in cluster.status(name).get("conditions", [])}


def stack_exists(aws: LocalStacks, name: str) -> bool:
    return any(s["StackName"] == name for s in stacks_of(aws))


def stacks_of(aws: LocalStacks) -> list[dict[str, Any]]:
    found = aws.cloudformation.describe_stacks()["Stacks"]
    return [s for s in found if s["StackStatus"] != "DELETE_COMPLETE"]


def synced(cluster: Namespace, name: str) -> dict[str, Any]:
    return conditions(cluster, name).get("StackSynced", {})


def generation(cluster: Namespace, name: str) -> int:
    return int((cluster.task(name) or {}).get("metadata", {}).get("generation", 0))


def applied(cluster: Namespace, name: str) -> bool:
    """The task's current generation is applied and its stack in sync."""
    status = cluster.status(name)
    return (
        status.get("observedGeneration") == generation(cluster, name) and synced(cluster, name).get("status") == "True"
    )


@pytest.mark.operator_e2e
def test_a_spec_change_while_the_stack_is_in_progress_waits_and_is_applied_after(
    cluster: Namespace, start_operator: Callable[..., Any], aws: LocalStacks, moto_server: MotoServer, rgw_site: S3Site
) -> None:
    cluster.apply(secret("rgw-keys", rgw_site))
    with CfnProxy(moto_server.endpoint_url, hold=600) as cfn:  # each phase ends when the test releases it
        start_operator(cfn.url)
        task = transfer_task("busy", rgw_site, "bucket-a", "bucket-b")
        cluster.apply(task)
        (created,) = wait_for(lambda: stacks(aws, cluster.name), what="the stack")
        name = created["StackName"]
        wait_for(lambda: cfn.status(name) == "CREATE_IN_PROGRESS", what="the create")
        task["spec"]["options"]["workers"] = 7
        cluster.apply(task)  # generation 2 while CloudFormation is still creating
        wait_for(
            lambda: (
                synced(cluster, "busy").get("reason") == "StackBusy"
                and "generation 2" in synced(cluster, "busy").get("message", "")
            ),
            what="StackSynced=False saying why generation 2 waits",
            detail=lambda: cluster.status("busy"),
        )
        assert cluster.status("busy").get("observedGeneration") != 2
        assert cluster.phase("busy") == "Provisioning"  # not Failed: nothing is wrong, only busy
        cfn.release(name)  # CREATE_COMPLETE: the waiting spec is sent now
        wait_for(lambda: cfn.status(name) == "UPDATE_IN_PROGRESS", what="the update of generation 2")
        task["spec"]["options"]["workers"] = 9
        cluster.apply(task)  # generation 3 while generation 2 is being applied
        wait_for(
            lambda: "generation 3" in synced(cluster, "busy").get("message", ""),
            what="generation 3 waiting",
            detail=lambda: cluster.status("busy"),
        )
        cfn.release(name)
        wait_for(lambda: cfn.calls["UpdateStack"] >= 2 and cfn.status(name) == "UPDATE_IN_PROGRESS", what="update 3")
        cfn.release(name)
        wait_for(lambda: applied(cluster, "busy"), what="generation 3 applied", detail=lambda: cluster.status("busy"))
    assert parameters(stacks(aws, cluster.name)[0])["OptionsWorkers"] == "9"
    assert not [e for e in events(cluster, "busy") if e[0] == "Warning"]


@pytest.mark.operator_e2e
def test_a_create_that_rolls_back_is_deleted_and_created_again_then_fails_after_three_tries(
    cluster: Namespace, start_operator: Callable[..., Any], moto_server: MotoServer, rgw_site: S3Site
) -> None:
    cluster.apply(secret("rgw-keys", rgw_site))
    once, always = stack_name("default", cluster.name, "once"), stack_name("default", cluster.name, "always")
    with CfnProxy(moto_server.endpoint_url, hold=0.3) as cfn:
        cfn.fail_next_create(once, "WorkerService", "subnet-0123 does not exist")
        cfn.fail_next_create(always, "QueuePolicy", "Invalid policy document", "AWS::SQS::QueuePolicy", times=3)
        start_operator(cfn.url)
        cluster.apply(transfer_task("once", rgw_site, "bucket-a", "bucket-b"))
        cluster.apply(transfer_task("always", rgw_site, "bucket-c", "bucket-d"))
        wait_for(
            lambda: applied(cluster, "once"), what="the second create to succeed", detail=lambda: cluster.status("once")
        )
        assert cfn.status(once) == "CREATE_COMPLETE"
        rolled_back = [e for e in events(cluster, "once") if e[1] == "StackRolledBack"]
        assert rolled_back and rolled_back[0][0] == "Warning"
        assert "WorkerService: subnet-0123 does not exist" in rolled_back[0][2]
        assert not [e for e in events(cluster, "once") if e[1] == "Failed"]  # recovering is not failing
        wait_for(
            lambda: synced(cluster, "always").get("reason") == "CreateFailed",
            what="the third failure to fail the task",
            detail=lambda: cluster.status("always"),
        )
        wait_for(lambda: cluster.phase("always") == "Failed", what="phase Failed")
        status = cluster.status("always")
        assert "QueuePolicy: Invalid policy document" in status["message"]
        assert "3 tries" in synced(cluster, "always")["message"]
        assert cfn.status(always) == "ROLLBACK_COMPLETE"
        assert [e[1] for e in events(cluster, "always")].count("StackRolledBack") == 2


@pytest.mark.operator_e2e
def test_an_update_that_rolls_back_keeps_the_task_running_degraded_until_the_next_change(
    cluster: Namespace, start_operator: Callable[..., Any], aws: LocalStacks, moto_server: MotoServer, rgw_site: S3Site
) -> None:
    cluster.apply(secret("rgw-keys", rgw_site))
    name = stack_name("default", cluster.name, "rollback")
    with CfnProxy(moto_server.endpoint_url, hold=0.3) as cfn:
        start_operator(cfn.url)
        task = transfer_task("rollback", rgw_site, "bucket-a", "bucket-b")
        cluster.apply(task)
        wait_for(lambda: applied(cluster, "rollback"), what="the stack", detail=lambda: cluster.status("rollback"))
        cfn.fail_next_update(name, "WorkerTaskDefinition", "Invalid CPU or memory value specified")
        task["spec"]["options"]["workers"] = 7
        cluster.apply(task)
        wait_for(
            lambda: conditions(cluster, "rollback").get("Degraded", {}).get("reason") == "UpdateRolledBack",
            what="Degraded=True naming the resource",
            detail=lambda: cluster.status("rollback"),
        )
        degraded = conditions(cluster, "rollback")["Degraded"]
        assert degraded["status"] == "True"
        assert "WorkerTaskDefinition: Invalid CPU or memory value specified" in degraded["message"]
        assert synced(cluster, "rollback")["reason"] == "UpdateRolledBack"
        assert cfn.status(name) == "UPDATE_ROLLBACK_COMPLETE"
        assert parameters(aws.describe(name))["OptionsWorkers"] == "4"  # the previous spec still runs
        time.sleep(2)  # a few observe ticks: they must keep saying why, and not fail the task
        assert cluster.phase("rollback") != "Failed"
        assert conditions(cluster, "rollback")["Degraded"]["reason"] == "UpdateRolledBack"
        assert cluster.status("rollback")["observedGeneration"] == 1
        task["spec"]["options"]["workers"] = 9
        cluster.apply(task)  # the next spec change is tried again
        wait_for(lambda: applied(cluster, "rollback"), what="generation 3", detail=lambda: cluster.status("rollback"))
        assert parameters(aws.describe(name))["OptionsWorkers"] == "9"
        wait_for(
            lambda: conditions(cluster, "rollback")["Degraded"]["status"] == "False",
            what="Degraded=False after the next update",
        )


@pytest.mark.operator_e2e
def test_a_failed_rollback_is_continued_or_reported_when_it_cannot_be(
    cluster: Namespace, start_operator: Callable[..., Any], aws: LocalStacks, moto_server: MotoServer, rgw_site: S3Site
) -> None:
    cluster.apply(secret("rgw-keys", rgw_site))
    fixed, stuck = (stack_name("default", cluster.name, task) for task in ("fixed", "stuck"))
    with CfnProxy(moto_server.endpoint_url, hold=0.3) as cfn:
        start_operator(cfn.url)
        tasks = {name: transfer_task(name, rgw_site, f"{name}-a", f"{name}-b") for name in ("fixed", "stuck")}
        for task in tasks.values():
            cluster.apply(task)
        for name in tasks:
            wait_for(lambda: applied(cluster, name), what=f"{name}'s stack")  # noqa: B023 - called at once
        for stack in (fixed, stuck):
            cfn.fail_next_update(stack, "Table", "update refused", rollback_reason="Table was modified outside")
        cfn.fail_next_continue_rollback(stuck, "Table", "Table still modified outside", times=5)
        for task in tasks.values():
            task["spec"]["options"]["workers"] = 6
            cluster.apply(task)
        # ContinueUpdateRollback brings `fixed` back, and its spec is sent again.
        wait_for(lambda: applied(cluster, "fixed"), what="fixed to be applied", detail=lambda: cluster.status("fixed"))
        assert cfn.calls["ContinueUpdateRollback"] >= 1
        continued = [e for e in events(cluster, "fixed") if e[1] == "ContinuingRollback"]
        assert continued and "Table: Table was modified outside" in continued[0][2]
        assert parameters(aws.describe(fixed))["OptionsWorkers"] == "6"
        # `stuck` keeps failing: after two tries, a condition and an Event that say what to do.
        wait_for(
            lambda: synced(cluster, "stuck").get("reason") == "UpdateRollbackFailed",
            what="the condition on stuck",
            detail=lambda: cluster.status("stuck"),
        )
        message = synced(cluster, "stuck")["message"]
        assert "continue-update-rollback" in message and "Table still modified outside" in message
        assert [e for e in events(cluster, "stuck") if e[1] == "UpdateRollbackFailed" and e[0] == "Warning"]
        assert cfn.status(stuck) == "UPDATE_ROLLBACK_FAILED"
        wait_for(lambda: cluster.phase("stuck") == "Failed", what="stuck to be Failed")


@pytest.mark.operator_e2e
def test_a_failed_delete_warns_and_is_retried_with_backoff(
    cluster: Namespace, start_operator: Callable[..., Any], aws: LocalStacks, moto_server: MotoServer, rgw_site: S3Site
) -> None:
    cluster.apply(secret("rgw-keys", rgw_site))
    name = stack_name("default", cluster.name, "sticky")
    with CfnProxy(moto_server.endpoint_url, hold=0.3) as cfn:
        start_operator(cfn.url)
        cluster.apply(transfer_task("sticky", rgw_site, "bucket-a", "bucket-b"))
        wait_for(lambda: applied(cluster, "sticky"), what="the stack", detail=lambda: cluster.status("sticky"))
        cfn.fail_next_delete(name, "DestinationBucketPolicy", "The bucket you tried to delete is not empty", times=2)
        cluster.kubectl("delete", "tt", "sticky", "--wait=false")
        warned = wait_for(
            lambda: [e for e in events(cluster, "sticky") if e[1] == "StackDeleteFailed"],
            what="a Warning naming the resource",
        )
        assert warned[0][0] == "Warning"
        assert "DestinationBucketPolicy: The bucket you tried to delete is not empty" in warned[0][2]
        assert "dth.io/deletion-policy=retain" in warned[0][2]
        wait_for(lambda: synced(cluster, "sticky").get("reason") == "DeleteFailed", what="the condition")
        wait_for(lambda: cluster.task("sticky") is None, what="the delete to succeed on the third try")
        assert cfn.calls["DeleteStack"] == 3  # one per failure and the last: no DeleteStack loop meanwhile
        waits = sorted(
            float(re.search(r"next look in (\d+) s", e[2]).group(1))  # type: ignore[union-attr]
            for e in events(cluster, "sticky")
            if e[1] == "StackDeleteFailed"
        )
        assert len(waits) == 2 and waits[0] < waits[1]  # backoff: each wait longer than the one before
    assert stacks(aws, cluster.name) == []


# --- ownership: never touch another task's stack or secret --------------------------------------------


@pytest.mark.operator_e2e
def test_tasks_whose_names_read_alike_get_their_own_stacks_and_deleting_one_keeps_the_other(
    kubernetes: LocalKubernetes,
    cluster: Namespace,
    start_operator: Callable[..., Any],
    aws: LocalStacks,
    rgw_site: S3Site,
    unique_name: str,
) -> None:
    # dth-<ns>-x-y-z twice under the old names: namespace "<ns>" with task "x-y-z", namespace "<ns>-x" with "y-z".
    other = Namespace(kubernetes, f"{unique_name}-x")
    kubernetes.kubectl("create", "namespace", other.name)
    try:
        for where in (cluster, other):
            where.apply(secret("rgw-keys", rgw_site))
        start_operator(namespaces=[cluster.name, other.name])
        cluster.apply(transfer_task("x-y-z", rgw_site, "bucket-a", "bucket-b"))
        other.apply(transfer_task("y-z", rgw_site, "bucket-c", "bucket-d"))
        wait_for(lambda: applied(cluster, "x-y-z"), what="the first task", detail=lambda: cluster.status("x-y-z"))
        wait_for(lambda: applied(other, "y-z"), what="the second task", detail=lambda: other.status("y-z"))
        first, second = cluster.status("x-y-z")["stackName"], other.status("y-z")["stackName"]
        assert first != second
        other.kubectl("delete", "tt", "y-z", "--wait=false")
        wait_for(lambda: other.task("y-z") is None, what="the second task to go")
        assert aws.describe(first)["StackStatus"] == "CREATE_COMPLETE"
        assert not stack_exists(aws, second)
    finally:
        kubernetes.kubectl("delete", "namespace", other.name, "--wait=false", check=False)


@pytest.mark.operator_e2e
def test_a_stack_or_secret_of_another_owner_is_reported_and_never_touched(
    cluster: Namespace, start_operator: Callable[..., Any], aws: LocalStacks, moto_server: MotoServer, rgw_site: S3Site
) -> None:
    cluster.apply(secret("rgw-keys", rgw_site))
    # A stack under the name this task will get, made by someone else (another UID).
    taken = stack_name("default", cluster.name, "taken")
    aws.cloudformation.create_stack(
        StackName=taken,
        TemplateBody=json.dumps({"Resources": {"Queue": {"Type": "AWS::SQS::Queue"}}}),
        Tags=[{"Key": "dth.io/uid", "Value": "someone-else"}, {"Key": "dth.io/cluster", "Value": "default"}],
    )
    # A Secrets Manager secret under the name this task's copy will get, with another owner's tags.
    secretsmanager = aws.client("secretsmanager")
    foreign = f"dth/default/{cluster.name}/borrowed/rgw-keys"
    secretsmanager.create_secret(
        Name=foreign, SecretString="theirs", Tags=[{"Key": "dth.io/uid", "Value": "someone-else"}]
    )
    start_operator()
    cluster.apply(transfer_task("taken", rgw_site, "bucket-a", "bucket-b"))
    cluster.apply(transfer_task("borrowed", rgw_site, "bucket-c", "bucket-d"))
    for name, reason in (("taken", "StackNotOwned"), ("borrowed", "SecretNotOwned")):
        wait_for(
            lambda: synced(cluster, name).get("reason") == reason,  # noqa: B023 - called at once
            what=f"{reason} on {name}",
            detail=lambda: cluster.status(name),  # noqa: B023
        )
        assert cluster.phase(name) == "Failed"
        assert [e for e in events(cluster, name) if e[1] == reason and e[0] == "Warning"]
    assert "someone-else" in synced(cluster, "taken")["message"]
    assert secretsmanager.get_secret_value(SecretId=foreign)["SecretString"] == "theirs"
    time.sleep(2)  # observe ticks: the foreign stack's state must not become this task's
    assert cluster.phase("taken") == "Failed"
    for name in ("taken", "borrowed"):
        cluster.kubectl("delete", "tt", name, "--wait=false")
        wait_for(lambda: cluster.task(name) is None, what=f"{name} to go")  # noqa: B023
    assert aws.describe(taken)["StackStatus"] == "CREATE_COMPLETE"  # left alone
    assert secretsmanager.get_secret_value(SecretId=foreign)["SecretString"] == "theirs"


@pytest.mark.operator_e2e
def test_two_clusters_sharing_one_account_never_touch_each_others_stack_or_secret(
    cluster: Namespace,
    start_operator: Callable[..., Any],
    aws: LocalStacks,
    rgw_site: S3Site,
    tmp_path: Path,
) -> None:
    """Two API servers (two clusters), each with an operator of its own cluster id, the same namespace, the same
    task and Secret names, and one moto as their shared AWS account."""
    with LocalKubernetes(tmp_path / "west", controller_manager=False) as west_server:
        west_server.kubectl("apply", "-f", str(Path(__file__).resolve().parents[1] / "crds" / "transfertask.yaml"))
        west_server.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/transfertasks.dth.io")
        west_server.kubectl("create", "namespace", cluster.name)
        east, west = cluster, Namespace(west_server, cluster.name)
        keys = {"east": secret("rgw-keys", rgw_site), "west": secret("rgw-keys", rgw_site)}
        keys["west"]["data"]["access_key_id"] = base64.b64encode(b"WEST-KEY-ID").decode()
        east.apply(keys["east"])
        west.apply(keys["west"])
        start_operator(settings={"DTH_CLUSTER_ID": "east"})
        start_operator(settings={"DTH_CLUSTER_ID": "west"}, kubeconfig=west_server.kubeconfig)
        for where in (east, west):
            where.apply(transfer_task("copy", rgw_site, "bucket-a", "bucket-b"))
        for where in (east, west):
            wait_for(lambda: applied(where, "copy"), what="both tasks applied", detail=lambda: where.status("copy"))  # noqa: B023
        named = {"east": east.status("copy")["stackName"], "west": west.status("copy")["stackName"]}
        assert named["east"] != named["west"]
        for cluster_id, stack in named.items():
            tags = {t["Key"]: t["Value"] for t in aws.describe(stack)["Tags"]}
            assert tags["dth.io/cluster"] == cluster_id
        secretsmanager = aws.client("secretsmanager")

        def copied(cluster_id: str) -> dict[str, str]:
            name = f"dth/{cluster_id}/{cluster.name}/copy/rgw-keys"
            return dict(json.loads(secretsmanager.get_secret_value(SecretId=name)["SecretString"]))

        assert copied("east")["access_key_id"] == rgw_site.access_key
        assert copied("west")["access_key_id"] == "WEST-KEY-ID"
        west.kubectl("delete", "tt", "copy", "--wait=false")
        wait_for(lambda: west.task("copy") is None, what="west's task to go")
        assert aws.describe(named["east"])["StackStatus"] == "CREATE_COMPLETE"
        assert copied("east")["access_key_id"] == rgw_site.access_key
        assert not stack_exists(aws, named["west"])
        assert not secretsmanager.list_secrets(Filters=[{"Key": "name", "Values": [f"dth/west/{cluster.name}/"]}])[
            "SecretList"
        ]
