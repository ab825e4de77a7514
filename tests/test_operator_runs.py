"""What the operator does for a task's runs, on the real API server with moto server as AWS, radosgw as S3
and the local ECS runner as ECS: "run now" (the annotation `dth.io/run-now`) starts the finder once per
value, and `status.failures` lists the first failed objects of the last run as the engines recorded them."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dth.devtools.ecs_runner import EcsRunner
from dth.devtools.kubernetes import LocalKubernetes
from dth.devtools.moto import MotoServer
from dth.devtools.operator_env import operator_environment
from dth.devtools.operator_process import OperatorProcess, OperatorProcesses, stop
from dth.devtools.sites import S3Site
from dth.devtools.stacks import LocalStacks
from dth.devtools.task_namespace import TaskNamespace as Namespace
from dth.devtools.waiting import wait_for
from dth.state.dynamodb import DynamoStatusStore
from dth.state.store import ObjectResult, ObjectState, Operation, PlannedObject
from dth_operator.runs import RUN_NOW_ANNOTATION, RUN_NOW_STARTED_BY
from dth_operator.stacks import stack_name, task_name

LAST_HANDLED = "dth.io/last-handled-configuration"


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoServer]:
    """These tests' own moto server (see tests/test_operator.py: other tests' stacks upset moto's describes)."""
    with MotoServer() as server:
        yield server


@pytest.fixture
def aws(moto_server: MotoServer) -> LocalStacks:
    return LocalStacks(moto_server.endpoint_url)


@pytest.fixture
def namespace(kubernetes: LocalKubernetes, transfertask_crd: str, unique_name: str) -> Iterator[Namespace]:
    kubernetes.kubectl("create", "namespace", unique_name)
    yield Namespace(kubernetes, unique_name)
    kubernetes.kubectl("delete", "namespace", unique_name, "--wait=false", check=False)


@pytest.fixture
def start_operator(
    kubernetes: LocalKubernetes, moto_server: MotoServer, aws: LocalStacks, namespace: Namespace, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    processes = OperatorProcesses(tmp_path)

    def start(settings: dict[str, str] | None = None) -> OperatorProcess:
        env = operator_environment(
            kubernetes.kubeconfig,
            moto_server.endpoint_url,
            aws.network(namespace.name),
            engine_image="dth-engine:test",
            observe_interval=1,
            stack_retry_delay=0.5,
        )
        env.update(settings or {})
        return processes.start(env, ["--namespace", namespace.name, "--standalone", "--verbose"])

    yield start
    processes.stop_all()


def keys_secret(site: S3Site) -> dict[str, Any]:
    encoded = {"access_key_id": site.access_key, "secret_access_key": site.secret_key}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "rgw-keys"},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in encoded.items()},
    }


def s3_task(name: str, site: S3Site, source: str, destination: str, **spec: Any) -> dict[str, Any]:
    side = {"type": "S3_Compatible", "endpoint": site.url, "credentials": {"secretName": "rgw-keys"}}
    return {
        "apiVersion": "dth.io/v1alpha1",
        "kind": "TransferTask",
        "metadata": {"name": name},
        "spec": {
            "type": "S3",
            "source": {**side, "bucket": source},
            "destination": {**side, "bucket": destination},
            "options": {"workers": 2},
            **spec,
        },
    }


def run_now_tasks(aws: LocalStacks, cluster: str) -> list[str]:
    """The ECS tasks that "run now" started in the cluster, running or stopped (moto keeps both)."""
    ecs = aws.client("ecs")
    arns: list[str] = []
    for status in ("RUNNING", "STOPPED"):
        arns += ecs.list_tasks(cluster=cluster, desiredStatus=status).get("taskArns", [])
    if not arns:
        return []
    described = ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"]
    return sorted(t["taskArn"] for t in described if t.get("startedBy") == RUN_NOW_STARTED_BY)


# A schedule that never comes due while the test runs (midnight of the 1st of January).
NEVER_DUE = "0 0 1 1 *"


@pytest.mark.operator_e2e
def test_run_now_starts_the_finder_once_per_value_and_is_refused_while_suspended(
    namespace: Namespace,
    start_operator: Callable[..., OperatorProcess],
    aws: LocalStacks,
    moto_server: MotoServer,
    rgw_site: S3Site,
    unique_name: str,
    tmp_path: Path,
) -> None:
    client = rgw_site.client()
    source, destination = f"{unique_name}-a", f"{unique_name}-b"
    client.create_bucket(Bucket=source)
    client.create_bucket(Bucket=destination)
    for number in range(3):
        client.put_object(Bucket=source, Key=f"first/{number}", Body=b"x" * (100 + number))
    namespace.apply(keys_secret(rgw_site))
    operator = start_operator()

    # Not deployed: an invalid task never gets a stack, so its run-now is refused, in words.
    broken = s3_task("broken", rgw_site, source, source)
    broken["metadata"]["annotations"] = {RUN_NOW_ANNOTATION: "2026-01-01T00:00:00Z"}
    namespace.apply(broken)
    refused = wait_for(
        lambda: [e for e in namespace.events("broken") if e.reason == "RunNowRefused"], what="run-now refused"
    )
    assert refused[0][0] == "Warning" and "not deployed" in refused[0][2]
    assert namespace.status("broken")["lastRunNowHandled"] == "2026-01-01T00:00:00Z"

    namespace.apply(s3_task("nightly", rgw_site, source, destination, schedule=NEVER_DUE))
    name = stack_name("default", namespace.name, "nightly")
    wait_for(lambda: namespace.status("nightly").get("stackName") == name, what="the stack")
    cluster = aws.outputs(name)["Cluster"]
    with EcsRunner(moto_server.endpoint_url, log_dir=tmp_path / "ecs", poll_interval=0.5, clusters=[cluster]):
        namespace.annotate("nightly", RUN_NOW_ANNOTATION, "2026-12-02T04:00:00Z")
        wait_for(
            lambda: namespace.status("nightly").get("lastRunNowHandled") == "2026-12-02T04:00:00Z",
            what="the run-now handled",
            detail=lambda: namespace.status("nightly"),
        )
        # The value is claimed in status before RunTask is called: the task may start a moment after.
        wait_for(lambda: len(run_now_tasks(aws, cluster)) == 1, what="one run-now task")
        wait_for(
            lambda: namespace.status("nightly").get("objects", {}).get("copied") == 3,
            timeout=180,
            what="the finder's run copied the objects",
            detail=lambda: namespace.status("nightly"),
        )
        assert len(client.list_objects_v2(Bucket=destination)["Contents"]) == 3
        started = [e for e in namespace.events("nightly") if e.reason == "RunNow"]
        assert started and started[0][0] == "Normal" and "2026-12-02T04:00:00Z" in started[0][2]

        # The same value never runs twice: not when another annotation changes, not when the operator
        # restarts having forgotten what it handled (kopf then sees the task as new).
        namespace.annotate("nightly", "example.com/touched", "yes")
        stop(operator)
        namespace.annotate("nightly", LAST_HANDLED, None)
        operator = start_operator()
        wait_for(
            lambda: LAST_HANDLED in (namespace.existing("nightly")["metadata"].get("annotations") or {}),
            what="the restarted operator to handle the task again",
        )
        assert len(run_now_tasks(aws, cluster)) == 1

        # A new value runs again: the new objects arrive.
        client.put_object(Bucket=source, Key="second/0", Body=b"y" * 10)
        namespace.annotate("nightly", RUN_NOW_ANNOTATION, "2026-12-02T04:05:00Z")
        wait_for(
            lambda: namespace.status("nightly").get("lastRunNowHandled") == "2026-12-02T04:05:00Z",
            what="the second run-now handled",
        )
        wait_for(lambda: len(run_now_tasks(aws, cluster)) == 2, what="a second run-now task")
        wait_for(
            lambda: any(o["Key"] == "second/0" for o in client.list_objects_v2(Bucket=destination)["Contents"]),
            timeout=180,
            what="the second run's object",
        )

    # Suspended: refused in words, nothing started.
    task = s3_task("nightly", rgw_site, source, destination, schedule=NEVER_DUE, suspend=True)
    namespace.apply(task)
    wait_for(lambda: namespace.status("nightly").get("phase") == "Suspended", what="phase Suspended")
    namespace.annotate("nightly", RUN_NOW_ANNOTATION, "2026-12-02T04:10:00Z")
    wait_for(
        lambda: namespace.status("nightly").get("lastRunNowHandled") == "2026-12-02T04:10:00Z",
        what="the third run-now handled",
    )
    assert len(run_now_tasks(aws, cluster)) == 2
    refusal = namespace.status("nightly")["runNow"]
    assert refusal["result"] == "Refused" and "suspended" in refusal["message"]
    assert any(e.reason == "RunNowRefused" and "suspended" in e.message for e in namespace.events("nightly"))


# Keys as S3 allows them: spaces, percent signs, plus, unicode, a tab, dots, query-like text, an emoji.
ODD_KEYS = ["a dir/ü ñ.txt", "b%2Fencoded+plus", "c\ttab", "d/../dots", "e?q=1&x#frag", "f/😀"]


@pytest.mark.operator_e2e
def test_status_lists_the_first_failures_of_the_last_run_with_their_keys_as_recorded(
    namespace: Namespace,
    start_operator: Callable[..., OperatorProcess],
    aws: LocalStacks,
    rgw_site: S3Site,
    unique_name: str,
) -> None:
    namespace.apply(keys_secret(rgw_site))
    start_operator({"DTH_FAILURES_LIMIT": "3"})
    namespace.apply(s3_task("failing", rgw_site, f"{unique_name}-a", f"{unique_name}-b"))
    name = stack_name("default", namespace.name, "failing")
    wait_for(lambda: namespace.status("failing").get("stackName") == name, what="the stack")
    # A run as the engines record it (no finder runs here: no ECS runner), in the stack's own table.
    store = DynamoStatusStore(aws.client("dynamodb"), aws.outputs(name)["TableName"])
    run = store.start_run(task_name(namespace.name, "failing"))
    store.plan(run, [PlannedObject(key, Operation.COPY, 10, "etag") for key in [*ODD_KEYS, "ok"]])
    reasons = {key: f"AccessDenied: no write to {key!r}" for key in ODD_KEYS}
    store.complete(
        run, [ObjectResult(key, Operation.COPY, ObjectState.FAILED, 10, reason=r) for key, r in reasons.items()]
    )
    store.complete(run, [ObjectResult("ok", Operation.COPY, ObjectState.COPIED, 10)])
    store.finish_scan(run)
    status = wait_for(
        lambda: (s := namespace.status("failing")).get("failures") and s,
        what="status.failures",
        detail=lambda: namespace.status("failing"),
    )
    first = sorted(ODD_KEYS)[:3]
    assert status["failures"] == [{"key": key, "reason": reasons[key]} for key in first]
    assert status["objects"]["failed"] == len(ODD_KEYS)
    assert status["lastRun"] == run

    # A new run without failures empties the list.
    second = store.start_run(task_name(namespace.name, "failing"))
    store.plan(second, [PlannedObject("ok", Operation.COPY, 10, "etag")])
    store.complete(second, [ObjectResult("ok", Operation.COPY, ObjectState.COPIED, 10)])
    store.finish_scan(second)
    wait_for(
        lambda: (s := namespace.status("failing")).get("lastRun") == second and s.get("failures") == [],
        what="the failures of the new run (none)",
        detail=lambda: namespace.status("failing"),
    )


def test_a_run_now_claim_holds_only_for_the_version_read(
    namespace: Namespace, kubernetes: LocalKubernetes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim (status.lastRunNowHandled) is a status patch conditional on the resourceVersion: a second
    reader of the same version (a stale event, another replica) gets a conflict and starts nothing."""
    import kubernetes as client

    from dth_operator import run_now, status_writes

    api = client.config.new_client_from_config(config_file=str(kubernetes.kubeconfig))
    monkeypatch.setattr(status_writes, "_kubernetes", client.client.CustomObjectsApi(api))
    namespace.apply(s3_task("claimed", S3Site("http://127.0.0.1:9", "a", "b"), "src", "dst"))
    read = namespace.existing("claimed")["metadata"]["resourceVersion"]
    assert run_now.claim(namespace.name, "claimed", read, "2026-12-02T05:00:00Z")
    assert namespace.status("claimed")["lastRunNowHandled"] == "2026-12-02T05:00:00Z"
    assert not run_now.claim(namespace.name, "claimed", read, "2026-12-02T05:00:00Z")
    assert not run_now.claim(namespace.name, "gone", read, "2026-12-02T05:00:00Z")


def test_run_now_starts_an_image_tasks_sync_task_in_its_stacks_cluster_and_network(
    aws: LocalStacks, unique_name: str
) -> None:
    """The image plugin has no finder: its one sync task is what a run is (output TaskDefinition)."""
    from dth.spec.cfn import PluginSettings, image_stack_parameters, template_path
    from dth.spec.image import ImageTaskSpec
    from dth_operator.runs import refusal, start_finder
    from dth_operator.stacks import describe

    spec = ImageTaskSpec.model_validate(
        {
            "type": "Image",
            "source": {"type": "Registry", "registry": "quay.io", "images": {"names": ["coreos/etcd:v3.5.0"]}},
            "destination": {"type": "Registry", "registry": "registry.example.com"},
            "schedule": "0 3 * * *",
        }
    )
    network = aws.network(unique_name)
    settings = PluginSettings(image="dth:test", subnets=network.subnets, security_groups=network.security_groups)
    name = f"{unique_name}-image"
    aws.create(name, template_path("image-plugin.yaml"), image_stack_parameters(f"ns-{unique_name}", spec, settings))
    stack = describe(aws.client("cloudformation"), name)
    assert stack is not None and refusal("now", False, stack) is None
    refused = refusal("now", True, stack)
    assert refused is not None and refused.reason == "Suspended"

    arn = start_finder(aws.client("ecs"), stack)
    (task,) = aws.client("ecs").describe_tasks(cluster=stack.outputs["Cluster"], tasks=[arn])["tasks"]
    assert task["taskDefinitionArn"] == stack.outputs["TaskDefinition"]
    assert task["startedBy"] == RUN_NOW_STARTED_BY
    definition = aws.client("ecs").describe_task_definition(taskDefinition=task["taskDefinitionArn"])
    assert definition["taskDefinition"]["containerDefinitions"][0]["command"] == ["image", "sync-env"]
