"""The local Kubernetes API server is real: it serves the TransferTask CRD as a cluster would.

etcd, kube-apiserver v1.20 and kube-controller-manager run as local processes (see
dth.devtools.kubernetes; ``bash .ci/kubernetes.sh`` builds and caches them). The CRD's schema,
its status subresource and printer columns, and namespace deletion are checked through kubectl
and the Kubernetes Python client, as the operator and its users meet them.
"""

from __future__ import annotations

import copy
import json
import os
import select
import signal
import subprocess
import sys
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from dth.devtools import kubernetes as local_kubernetes
from dth.devtools.kubernetes import LocalKubernetes
from dth.devtools.waiting import wait_for

GROUP, VERSION, PLURAL = "dth.io", "v1alpha1", "transfertasks"
REPO = Path(__file__).resolve().parents[1]

# The README's example manifest.
TASK: dict[str, Any] = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "TransferTask",
    "metadata": {"name": "placeholder"},
    "spec": {
        "type": "S3",
        "source": {
            "type": "Aliyun_OSS",
            "region": "cn-hangzhou",
            "bucket": "my-logs",
            "prefix": "app/",
            "credentials": {"secretName": "oss-keys"},
        },
        "destination": {
            "bucket": "my-logs-copy",
            "region": "cn-north-1",
            "storageClass": "STANDARD_IA",
            "sse": "AES256",
        },
        "options": {
            "compare": "size-etag",
            "exclude": ["*.tmp"],
            "deleteExtraneous": False,
            "chunkSize": "8MiB",
        },
        "schedule": "0 2 * * *",
    },
}


def task(name: str, *, namespace: str = "default", changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The example manifest named ``name``; ``changes`` maps dotted spec paths to new values."""
    manifest = copy.deepcopy(TASK)
    manifest["metadata"] = {"name": name, "namespace": namespace}
    for dotted, value in (changes or {}).items():
        *parents, leaf = dotted.split(".")
        node = manifest["spec"]
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return manifest


def apply(cluster: LocalKubernetes, manifest: dict[str, Any], *flags: str) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("apply", "-f", "-", *flags, input=yaml.safe_dump(manifest), check=False)


def get_task(cluster: LocalKubernetes, name: str, namespace: str = "default") -> dict[str, Any]:
    done = cluster.kubectl("get", "transfertask", name, "-n", namespace, "-o", "json")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def exists(cluster: LocalKubernetes, path: str) -> bool:
    try:
        cluster.get(path)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 404:
            return False
        raise
    return True


@pytest.fixture(scope="module")
def custom_objects(kubeconfig: Path) -> Iterator[Any]:
    """The Kubernetes Python client's CustomObjectsApi, logged in with the kubeconfig."""
    api_client = k8s_config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield k8s_client.CustomObjectsApi(api_client)
    finally:
        api_client.close()


@pytest.fixture
def task_name(unique_name: str, kubernetes: LocalKubernetes, transfertask_crd: str) -> Iterator[str]:
    """A fresh TransferTask name in namespace default; the task is deleted after the test."""
    yield unique_name
    kubernetes.kubectl("delete", "transfertask", unique_name, "--ignore-not-found", "--wait=false")


# -- the server ------------------------------------------------------------------------------


def test_the_server_is_kube_apiserver_1_20(kubernetes: LocalKubernetes) -> None:
    version = kubernetes.get("/version")
    assert version["gitVersion"].startswith("v1.20.")
    assert kubernetes.get("/api/v1/namespaces/kube-system")["metadata"]["name"] == "kube-system"
    # RBAC is on: the admin token is a member of system:masters, an anonymous caller is refused.
    done = kubernetes.kubectl("auth", "can-i", "create", "customresourcedefinitions")
    assert done.stdout.strip() == "yes"
    anonymous = subprocess.run(
        [*kubernetes.kubectl_command(), "--token=not-a-token", "get", "namespaces"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert anonymous.returncode != 0
    assert "Unauthorized" in anonymous.stderr or "must be logged in" in anonymous.stderr


def test_the_crd_is_established(kubernetes: LocalKubernetes, transfertask_crd: str) -> None:
    crd = kubernetes.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{transfertask_crd}")
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions["Established"] == "True"
    assert conditions["NamesAccepted"] == "True"
    assert crd["status"]["acceptedNames"]["shortNames"] == ["tt"]
    resources = kubernetes.kubectl("api-resources", f"--api-group={GROUP}", "-o", "name").stdout.split()
    assert resources == [transfertask_crd]


# -- the CRD's schema ------------------------------------------------------------------------


def test_a_valid_task_is_accepted_and_read_back(kubernetes: LocalKubernetes, task_name: str) -> None:
    manifest = task(task_name)
    done = apply(kubernetes, manifest)
    assert done.returncode == 0, done.stderr
    assert f"transfertask.{GROUP}/{task_name} created" in done.stdout

    stored = get_task(kubernetes, task_name)
    # Every field is kept as written: the schema prunes nothing of a valid manifest.
    assert stored["spec"] == manifest["spec"]
    assert stored["metadata"]["generation"] == 1
    assert "status" not in stored

    again = apply(kubernetes, manifest)
    assert again.returncode == 0, again.stderr
    assert "unchanged" in again.stdout


@pytest.mark.parametrize(
    ("spec_path", "value", "expected"),
    [
        ("options.compare", "fast", ["spec.options.compare", "fast"]),
        ("source.bucket", 12, ["spec.source.bucket", "string"]),
        ("type", "FTP", ["spec.type", "FTP"]),
        ("destination.storageClass", "COLD", ["spec.destination.storageClass", "COLD"]),
        ("options.workers", 0, ["spec.options.workers", "greater than or equal to 1"]),
        ("schedule", "every night", ["spec.schedule"]),
    ],
)
@pytest.mark.parametrize("validate", ["true", "false"], ids=["kubectl-validates", "server-only"])
def test_a_malformed_task_is_refused_naming_the_field(
    kubernetes: LocalKubernetes,
    task_name: str,
    spec_path: str,
    value: object,
    expected: list[str],
    validate: str,
) -> None:
    # With --validate=false kubectl sends the object as it is: the API server itself refuses it.
    done = apply(kubernetes, task(task_name, changes={spec_path: value}), f"--validate={validate}")
    assert done.returncode != 0, done.stdout
    for text in expected:
        assert text in done.stderr
    if validate == "false":
        assert f'The TransferTask "{task_name}" is invalid' in done.stderr
    assert not exists(kubernetes, f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}/{task_name}")


def test_a_task_without_a_destination_is_refused(kubernetes: LocalKubernetes, task_name: str) -> None:
    manifest = task(task_name)
    del manifest["spec"]["destination"]
    done = apply(kubernetes, manifest, "--validate=false")
    assert done.returncode != 0
    assert "spec.destination: Required value" in done.stderr


# -- status subresource and printer columns --------------------------------------------------


def test_status_is_written_only_through_the_status_subresource(
    kubernetes: LocalKubernetes, custom_objects: Any, task_name: str
) -> None:
    assert apply(kubernetes, task(task_name)).returncode == 0

    # Through the main resource a status change is dropped, as on any cluster.
    kubernetes.kubectl("patch", "tt", task_name, "--type=merge", "-p", '{"status": {"phase": "Running"}}')
    assert "status" not in get_task(kubernetes, task_name)

    status = {"phase": "Running", "progress": "3/10", "message": "copying", "objects": {"found": 10, "copied": 3}}
    patched = custom_objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, "default", PLURAL, task_name, {"status": status}
    )
    assert patched["status"] == status
    stored = get_task(kubernetes, task_name)
    assert stored["status"] == status
    assert stored["metadata"]["generation"] == 1  # a status write is not a spec change

    # Through the status subresource a spec change is dropped.
    custom_objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, "default", PLURAL, task_name, {"spec": {"schedule": "once"}}
    )
    assert get_task(kubernetes, task_name)["spec"]["schedule"] == "0 2 * * *"

    # The status has a schema too.
    with pytest.raises(ApiException) as refused:
        custom_objects.patch_namespaced_custom_object_status(
            GROUP, VERSION, "default", PLURAL, task_name, {"status": {"phase": "Bogus"}}
        )
    assert refused.value.status == 422
    assert "status.phase" in refused.value.body


def test_kubectl_get_shows_the_printer_columns(
    kubernetes: LocalKubernetes, custom_objects: Any, task_name: str
) -> None:
    assert apply(kubernetes, task(task_name)).returncode == 0
    custom_objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, "default", PLURAL, task_name, {"status": {"phase": "Running", "progress": "7/9"}}
    )

    header, row = kubernetes.kubectl("get", "tt", task_name).stdout.splitlines()
    assert header.split() == ["NAME", "TYPE", "PHASE", "PROGRESS", "AGE"]
    assert row.split()[:4] == [task_name, "S3", "Running", "7/9"]

    custom_objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, "default", PLURAL, task_name, {"status": {"message": "all-good"}}
    )
    header, row = kubernetes.kubectl("get", "tt", task_name, "-o", "wide").stdout.splitlines()
    assert header.split() == ["NAME", "TYPE", "PHASE", "PROGRESS", "MESSAGE", "AGE"]
    assert row.split()[:5] == [task_name, "S3", "Running", "7/9", "all-good"]

    # The category: `kubectl get dth` lists every kind of the project.
    assert task_name in kubernetes.kubectl("get", "dth").stdout


# -- the controller manager ------------------------------------------------------------------


def test_a_namespace_is_created_and_deleted_with_its_tasks(kubernetes: LocalKubernetes, unique_name: str) -> None:
    namespace = unique_name
    kubernetes.kubectl("create", "namespace", namespace)
    try:
        # The service account controller gives every namespace its default service account.
        wait_for(
            lambda: exists(kubernetes, f"/api/v1/namespaces/{namespace}/serviceaccounts/default"),
            what="the default service account",
        )
        assert apply(kubernetes, task("inside", namespace=namespace)).returncode == 0
        assert get_task(kubernetes, "inside", namespace)["metadata"]["namespace"] == namespace
    finally:
        # Waits until the namespace controller has deleted everything in it, then the namespace.
        kubernetes.kubectl("delete", "namespace", namespace, "--timeout=120s")
    assert not exists(kubernetes, f"/api/v1/namespaces/{namespace}")
    assert not exists(kubernetes, f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/inside")


# -- the launcher ----------------------------------------------------------------------------


def _is_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")  # a zombie waits only for its new parent to reap it


def test_the_command_line_server_dies_with_its_parent(kubernetes: LocalKubernetes, tmp_path: Path) -> None:
    """``python -m dth.devtools.kubernetes`` serves a second, separate cluster; SIGKILL takes it all down."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "engines"), str(REPO / "operator")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dth.devtools.kubernetes", "--no-controller-manager", "--workdir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 150)
        assert ready, "no output within 150 s"
        line = proc.stdout.readline()
        assert line, proc.stderr.read().decode() if proc.stderr else "no output"
        info = json.loads(line)
        assert set(info["pids"]) == {"etcd", "kube-apiserver"}
        assert info["server_url"] != kubernetes.server_url

        kubectl = local_kubernetes.find_binary("kubectl")
        assert kubectl is not None
        listed = subprocess.run(
            [kubectl, f"--kubeconfig={info['kubeconfig']}", "get", "namespaces", "-o", "name"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert "namespace/kube-system" in listed.stdout.split()

        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        for name, pid in info["pids"].items():
            wait_for(lambda pid=pid: _is_gone(pid), what=f"{name} (pid {pid}) to die with its parent", timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


# -- finding the binaries (no server needed) -------------------------------------------------


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_binaries_come_from_the_override_then_the_newest_cache_then_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    old = _executable(cache / "kubernetes" / "1.20.9" / "bin" / "kube-apiserver")
    new = _executable(cache / "kubernetes" / "1.20.10" / "bin" / "kube-apiserver")
    on_path = _executable(tmp_path / "path" / "etcd")
    monkeypatch.setenv("DTH_CACHE", str(cache))
    monkeypatch.setenv("PATH", str(on_path.parent))
    monkeypatch.delenv("DTH_KUBERNETES_BIN", raising=False)

    assert local_kubernetes.cache_bin_dirs() == [new.parent, old.parent]
    assert local_kubernetes.find_binary("kube-apiserver") == str(new)
    assert local_kubernetes.find_binary("etcd") == str(on_path)
    assert local_kubernetes.missing_binaries() == ["openssl", "kube-controller-manager", "kubectl"]
    assert local_kubernetes.missing_binaries(controller_manager=False, client=False) == ["openssl"]

    override = _executable(tmp_path / "override" / "kube-apiserver")
    monkeypatch.setenv("DTH_KUBERNETES_BIN", str(override.parent))
    assert local_kubernetes.find_binary("kube-apiserver") == str(override)


def test_start_names_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DTH_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("DTH_KUBERNETES_BIN", raising=False)
    cluster = LocalKubernetes(tmp_path / "cluster")
    assert cluster.missing_binaries() == ["etcd", "kube-apiserver", "openssl", "kube-controller-manager"]
    with pytest.raises(RuntimeError, match=r"Kubernetes binaries not found: etcd, kube-apiserver"):
        cluster.start()
    assert not cluster.running
