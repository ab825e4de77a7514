"""Tenants on the real API server: a namespace may reach only what the administrator's policy gives it.

Two namespaces, A and B, under a policy that gives each its own buckets, and B alone a Secrets Manager prefix
and an SSM path. A tenant in A names what only B was given: the operator refuses it at reconcile (phase
Invalid, a Ready=False condition naming the rule, an Event) and, with the admission webhook registered, the
API server refuses it at `kubectl apply`. moto server plays AWS for what is allowed through.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dth.devtools.kubernetes import LocalKubernetes
from dth.devtools.moto import MotoServer
from dth.devtools.operator_env import operator_environment
from dth.devtools.stacks import LocalStacks
from dth.devtools.waiting import wait_for

SECRETS = "arn:aws:secretsmanager:us-east-1:123456789012:secret:"


class Namespace:
    def __init__(self, kubernetes: LocalKubernetes, name: str) -> None:
        self.kubernetes = kubernetes
        self.name = name

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.kubernetes.kubectl("-n", self.name, *args, input=input, check=check)

    def apply(self, manifest: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest), check=check)

    def status(self, task: str) -> dict[str, Any]:
        done = self.kubectl("get", "transfertask", task, "-o", "json", check=False)
        return dict(json.loads(done.stdout).get("status") or {}) if done.returncode == 0 else {}

    def events(self, task: str) -> list[tuple[str, str]]:
        listed = json.loads(self.kubectl("get", "events", "-o", "json").stdout)["items"]
        return [(e.get("reason", ""), e.get("message", "")) for e in listed if e["involvedObject"]["name"] == task]


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
) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    a, b = tenants
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy(a.name, b.name)), encoding="utf-8")
    network = LocalStacks(moto_server.endpoint_url).network(a.name)
    started: list[subprocess.Popen[str]] = []

    def start(settings: dict[str, str] | None = None) -> subprocess.Popen[str]:
        env = operator_environment(kubernetes.kubeconfig, moto_server.endpoint_url, network, observe_interval=1)
        env.update({"DTH_TENANT_POLICY": str(policy_file), **(settings or {})})
        log = (tmp_path / f"operator-{len(started)}.log").open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "dth_operator", "--standalone", "--liveness", "", "--verbose"]
            + [f"--namespace={namespace.name}" for namespace in tenants],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        process.log = log.name  # type: ignore[attr-defined]
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


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
            s3_task("b-copy", f"{a.name}-data", f"{a.name}-copy", secretsManagerArn=f"{SECRETS}dth/{b.name}/t/k-AbC1"),
            f"not under the namespace's own prefix dth/{a.name}/",
        ),
        "b-parameter": (image_task("b-parameter", f"/{b.name}/images"), "ssmParameterPaths of rule tenant-a"),
    }


def test_reconcile_refuses_what_the_policy_gives_only_to_another_namespace(
    tenants: tuple[Namespace, Namespace], start_operator: Callable[..., Any], moto_server: MotoServer
) -> None:
    a, b = tenants
    start_operator()
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
    refused = wait_for(
        lambda: [m for r, m in a.events("b-bucket") if r == "PolicyDenied"], timeout=30, what="a PolicyDenied Event"
    )
    assert "sourceBuckets of rule tenant-a" in refused[0]
