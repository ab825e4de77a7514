"""Tenants on the real API server: a namespace may reach only what the administrator's policy gives it.

Two namespaces, A and B, under a policy that gives each its own buckets, and B alone a Secrets Manager prefix
and an SSM path. A tenant in A names what only B was given: the operator refuses it at reconcile (phase
Invalid, a Ready=False condition naming the rule, an Event) and, with the admission webhook registered, the
API server refuses it at `kubectl apply`. moto server plays AWS for what is allowed through.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dth.devtools.kubernetes import LocalKubernetes
from dth.devtools.moto import MotoServer
from dth.devtools.operator_env import operator_environment
from dth.devtools.operator_process import OperatorProcess, OperatorProcesses
from dth.devtools.ports import free_port
from dth.devtools.stacks import LocalStacks
from dth.devtools.task_namespace import TaskNamespace as Namespace
from dth.devtools.waiting import wait_for
from dth_operator.admission import NAMESPACE_NAME_LABEL, WEBHOOK_PATH, webhook_configuration
from dth_operator.secrets import secret_id

SECRETS = "arn:aws:secretsmanager:us-east-1:123456789012:secret:"


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def tenants(
    kubernetes: LocalKubernetes, transfertask_crd: str, unique_name: str
) -> Iterator[tuple[Namespace, Namespace]]:
    names = (f"{unique_name}-a", f"{unique_name}-b")
    for name in names:
        kubernetes.kubectl("create", "namespace", name)
    yield Namespace(kubernetes, names[0]), Namespace(kubernetes, names[1])
    for name in names:
        kubernetes.kubectl("delete", "namespace", name, "--wait=false", check=False)


def policy(a: str, b: str) -> dict[str, Any]:
    """Each namespace its own buckets; B alone a secret prefix and an SSM path."""
    return {
        "rules": [
            {
                "name": "tenant-a",
                "namespaces": [a],
                "sourceBuckets": [f"{a}-*"],
                "destinationBuckets": [f"{a}-*"],
                "providers": ["*"],
                "endpoints": ["*"],
            },
            {
                "name": "tenant-b",
                "namespaces": [b],
                "sourceBuckets": [f"{b}-*"],
                "destinationBuckets": [f"{b}-*"],
                "providers": ["*"],
                "endpoints": ["*"],
                "secretArnPrefixes": [f"{SECRETS}team-b/"],
                "ssmParameterPaths": [f"/{b}"],
            },
        ]
    }


@pytest.fixture
def start_operator(
    kubernetes: LocalKubernetes,
    moto_server: MotoServer,
    tenants: tuple[Namespace, Namespace],
    tmp_path: Path,
) -> Iterator[Callable[..., OperatorProcess]]:
    a, b = tenants
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy(a.name, b.name)), encoding="utf-8")
    network = LocalStacks(moto_server.endpoint_url).network(a.name)
    processes = OperatorProcesses(tmp_path)

    def start(settings: dict[str, str] | None = None) -> OperatorProcess:
        env = operator_environment(kubernetes.kubeconfig, moto_server.endpoint_url, network, observe_interval=1)
        env.update({"DTH_TENANT_POLICY": str(policy_file), **(settings or {})})
        arguments = ["--standalone", "--liveness", "", "--verbose"]
        return processes.start(env, arguments + [f"--namespace={namespace.name}" for namespace in tenants])

    yield start
    processes.stop_all()


def s3_task(name: str, source: str, destination: str, **credentials: str) -> dict[str, Any]:
    side: dict[str, Any] = {"type": "Amazon_S3", "region": "us-east-1"}
    return {
        "apiVersion": "dth.io/v1alpha1",
        "kind": "TransferTask",
        "metadata": {"name": name},
        "spec": {
            "type": "S3",
            "source": {**side, "bucket": source, **({"credentials": credentials} if credentials else {})},
            "destination": {**side, "bucket": destination},
        },
    }


def image_task(name: str, parameter: str) -> dict[str, Any]:
    return {
        "apiVersion": "dth.io/v1alpha1",
        "kind": "TransferTask",
        "metadata": {"name": name},
        "spec": {
            "type": "Image",
            "source": {"type": "Registry", "registry": "registry.example", "images": {"ssmParameter": parameter}},
            "destination": {"type": "Registry", "registry": "mirror.example"},
        },
    }


def the_trespasses(a: Namespace, b: Namespace) -> dict[str, tuple[dict[str, Any], str]]:
    """Tasks for namespace A that name what the policy gives only to B, and the rule each refusal names."""
    return {
        "b-bucket": (s3_task("b-bucket", f"{b.name}-data", f"{a.name}-copy"), "sourceBuckets of rule tenant-a"),
        "b-secret": (
            s3_task("b-secret", f"{a.name}-data", f"{a.name}-copy", secretsManagerArn=f"{SECRETS}team-b/keys-AbC123"),
            "secretArnPrefixes of rule tenant-a",
        ),
        "b-copy": (
            # The operator's copy of a Secret of B's: its name is predictable.
            s3_task(
                "b-copy",
                f"{a.name}-data",
                f"{a.name}-copy",
                secretsManagerArn=f"{SECRETS}dth/default/{b.name}/t/k-AbC1",
            ),
            f"not under the namespace's own prefix dth/default/{a.name}/",
        ),
        "b-parameter": (image_task("b-parameter", f"/{b.name}/images"), "ssmParameterPaths of rule tenant-a"),
    }


def test_reconcile_refuses_what_the_policy_gives_only_to_another_namespace(
    tenants: tuple[Namespace, Namespace], start_operator: Callable[..., Any], moto_server: MotoServer
) -> None:
    a, b = tenants
    boundary = "arn:aws:iam::123456789012:policy/dth-task-boundary"
    start_operator({"DTH_PERMISSIONS_BOUNDARY": boundary})
    trespasses = the_trespasses(a, b)
    for manifest, _ in trespasses.values():
        a.apply(manifest)
    # The same references are B's own: allowed there (the operator goes on to make the stack).
    b.apply(s3_task("own-bucket", f"{b.name}-data", f"{b.name}-copy", secretsManagerArn=f"{SECRETS}team-b/k-AbC1"))
    b.apply(image_task("own-parameter", f"/{b.name}/images"))
    for task, (_, rule) in trespasses.items():
        wait_for(lambda task=task: a.status(task).get("phase") == "Invalid", what=f"{task} Invalid")  # type: ignore[misc]
        status = a.status(task)
        (ready,) = status["conditions"]
        assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "PolicyDenied")
        assert "by the tenant policy" in ready["message"] and rule in ready["message"], ready["message"]
        assert "stackName" not in status
    for task in ("own-bucket", "own-parameter"):
        wait_for(lambda task=task: b.status(task).get("stackName"), what=f"{task} deployed")  # type: ignore[misc]
        assert b.status(task).get("phase") != "Invalid"
    stacks = LocalStacks(moto_server.endpoint_url).cloudformation.describe_stacks()["Stacks"]
    assert not [s for s in stacks if s["StackName"].startswith(f"dth-{a.name}-")]
    # Every role of B's stacks is bounded (the chart's plugin.permissionsBoundary).
    own = [s for s in stacks if s["StackName"].startswith(f"dth-{b.name}-")]
    assert len(own) == 2
    for stack in own:
        assert {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}[
            "PermissionsBoundaryArn"
        ] == boundary
    refused = wait_for(
        lambda: [e.message for e in a.events("b-bucket") if e.reason == "PolicyDenied"],
        timeout=30,
        what="a PolicyDenied Event",
    )
    assert "sourceBuckets of rule tenant-a" in refused[0]


def serving_certificate(folder: Path) -> bytes:
    """A CA and a certificate for 127.0.0.1 signed by it (tls.crt, tls.key in `folder`); the CA's PEM."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n", encoding="utf-8")
    for step in (
        "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=dth-test-webhook-ca",
        "req -newkey rsa:2048 -nodes -keyout tls.key -out tls.csr -subj /CN=127.0.0.1",
        "x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out tls.crt -days 2 -extfile san.ext",
    ):
        subprocess.run(["openssl", *step.split()], cwd=folder, check=True, capture_output=True, timeout=60)
    return (folder / "ca.crt").read_bytes()


@pytest.fixture
def webhook(
    kubernetes: LocalKubernetes, tenants: tuple[Namespace, Namespace], unique_name: str, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """The operator's webhook settings, and the API server's configuration that sends the tenants' tasks there
    (only for these namespaces: other tests share the API server)."""
    ca = serving_certificate(tmp_path / "webhook")
    port = free_port()
    for namespace in tenants:  # what Kubernetes 1.21+ does by itself
        kubernetes.kubectl("label", "namespace", namespace.name, f"{NAMESPACE_NAME_LABEL}={namespace.name}")
    client = {"url": f"https://127.0.0.1:{port}{WEBHOOK_PATH}", "caBundle": base64.b64encode(ca).decode()}
    configuration = webhook_configuration(f"dth-{unique_name}", client, [n.name for n in tenants])
    kubernetes.kubectl("apply", "-f", "-", input=yaml.safe_dump(configuration))
    yield {"DTH_WEBHOOK_PORT": str(port), "DTH_WEBHOOK_CERT_DIR": str(tmp_path / "webhook")}
    kubernetes.kubectl("delete", "validatingwebhookconfiguration", f"dth-{unique_name}", check=False)


def test_the_webhook_refuses_at_apply_what_the_policy_gives_only_to_another_namespace(
    tenants: tuple[Namespace, Namespace], start_operator: Callable[..., Any], webhook: dict[str, str]
) -> None:
    a, b = tenants
    start_operator(webhook)
    trespasses = the_trespasses(a, b)
    first, rule = trespasses["b-bucket"]
    # Until the operator serves, the API server cannot ask it and refuses every task (failurePolicy Fail).
    refusal = wait_for(
        lambda: (lambda done: done.stderr if "tenant policy" in done.stderr else None)(a.apply(first, check=False)),
        timeout=60,
        what="the webhook to answer",
    )
    assert "denied the request" in refusal and rule in refusal
    for task, (manifest, rule) in trespasses.items():
        done = a.apply(manifest, check=False)
        assert done.returncode != 0 and rule in done.stderr, (task, done.stderr)
        assert a.kubectl("get", "transfertask", task, check=False).returncode != 0, f"{task} was stored"
    # The same references in B, whose they are: stored.
    b.apply(s3_task("own-bucket", f"{b.name}-data", f"{b.name}-copy", secretsManagerArn=f"{SECRETS}team-b/k-AbC1"))
    b.apply(image_task("own-parameter", f"/{b.name}/images"))
    # A spec that does not parse is refused too, naming the problem.
    same = a.apply(s3_task("loop", f"{a.name}-x", f"{a.name}-x"), check=False)
    assert same.returncode != 0 and "source and destination overlap" in same.stderr
    # An update into B's bucket is refused; one that leaves the spec alone is not, and deletion works.
    allowed = s3_task("allowed", f"{a.name}-data", f"{a.name}-copy")
    a.apply(allowed)
    allowed["spec"]["destination"]["bucket"] = f"{b.name}-copy"
    moved = a.apply(allowed, check=False)
    assert moved.returncode != 0 and "destinationBuckets of rule tenant-a" in moved.stderr
    a.kubectl("annotate", "transfertask", "allowed", "team=a")
    wait_for(lambda: a.status("allowed").get("stackName"), what="the allowed task deployed")
    a.kubectl("delete", "transfertask", "allowed", "--timeout=60s")


def test_changing_a_referenced_secret_reaches_secrets_manager(
    tenants: tuple[Namespace, Namespace], start_operator: Callable[..., Any], moto_server: MotoServer
) -> None:
    a, _ = tenants

    def keys(secret_key: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "source-keys"},
            "stringData": {"access_key_id": "AKIDEXAMPLE", "secret_access_key": secret_key},
        }

    a.apply(keys("first-secret-value"))
    a.apply(s3_task("rotated", f"{a.name}-data", f"{a.name}-copy", secretName="source-keys"))
    a.apply(s3_task("also", f"{a.name}-more", f"{a.name}-copy", secretName="source-keys"))
    start_operator()
    secretsmanager = LocalStacks(moto_server.endpoint_url).client("secretsmanager")

    def copied(task: str) -> str | None:
        try:
            value = secretsmanager.get_secret_value(SecretId=secret_id("default", a.name, task, "source-keys"))[
                "SecretString"
            ]
        except secretsmanager.exceptions.ResourceNotFoundException:
            return None
        return str(json.loads(value)["secret_access_key"])

    for task in ("rotated", "also"):
        wait_for(lambda task=task: a.status(task).get("stackName"), what=f"{task} deployed")  # type: ignore[misc]
        assert copied(task) == "first-secret-value"
    a.apply(keys("rotated-secret-value"))
    for task in ("rotated", "also"):
        wait_for(
            lambda task=task: copied(task) == "rotated-secret-value",  # type: ignore[misc]
            what=f"the new value in {task}'s Secrets Manager copy",
        )
    assert "rotated-secret-value" not in json.dumps(a.status("rotated"))
    rotated = wait_for(lambda: [e.message for e in a.events("rotated") if e.reason == "SecretRotated"], what="an Event")
    assert "source-keys" in rotated[0] and "rotated-secret-value" not in rotated[0]


def test_a_narrower_policy_turns_a_deployed_task_invalid_and_stops_its_stack_when_the_operator_restarts(
    tenants: tuple[Namespace, Namespace], start_operator: Callable[..., Any], moto_server: MotoServer, tmp_path: Path
) -> None:
    a, _ = tenants
    first = start_operator()
    a.apply(s3_task("was-allowed", f"{a.name}-data", f"{a.name}-copy"))
    wait_for(lambda: a.status("was-allowed").get("stackName"), what="the task deployed")
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=30)
    # The administrator takes the namespace's buckets away (the chart rolls the pods on such a change).
    narrower = tmp_path / "narrower.yaml"
    narrower.write_text(yaml.safe_dump({"rules": [{"name": "nothing-for-a", "namespaces": [a.name]}]}), "utf-8")
    start_operator({"DTH_TENANT_POLICY": str(narrower)})
    wait_for(lambda: a.status("was-allowed").get("phase") == "Invalid", what="the task Invalid")
    (ready,) = a.status("was-allowed")["conditions"]
    assert ready["reason"] == "PolicyDenied" and "sourceBuckets of rule nothing-for-a" in ready["message"]
    # Its stack must not go on copying what the namespace may no longer reach: workers and schedule stop.
    stack = a.status("was-allowed")["stackName"]
    cloudformation = LocalStacks(moto_server.endpoint_url).client("cloudformation")

    def suspended() -> bool:
        (described,) = cloudformation.describe_stacks(StackName=stack)["Stacks"]
        values = {p["ParameterKey"]: p["ParameterValue"] for p in described["Parameters"]}
        return bool(described["StackStatus"] == "UPDATE_COMPLETE" and values["Suspend"] == "true")

    wait_for(suspended, what="the refused task's stack suspended")
    wait_for(lambda: "is suspended" in a.status("was-allowed")["message"], what="the task saying so")
    assert a.status("was-allowed")["phase"] == "Invalid"
