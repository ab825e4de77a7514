"""Session-wide local S3 servers: an in-memory Ceph radosgw (two endpoints) and moto server.

Both are real servers in their own processes on 127.0.0.1. When a server's programs are not
installed the tests that need it are skipped, unless the environment variable CI is set: then
they fail, so that a CI machine without them cannot pass by skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import NoReturn

import pytest

from dth.devtools.moto import MOTO_ACCESS_KEY, MOTO_SECRET_KEY, MotoServer, moto_server_command
from dth.devtools.radosgw import RadosGateway, missing_binaries
from dth.devtools.sites import S3Site


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the test servers are required)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def radosgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RadosGateway]:
    """A started single-node Ceph radosgw serving the same data on two endpoints."""
    missing = missing_binaries()
    if missing:
        _unavailable(
            f"Ceph radosgw is not installed (missing {', '.join(missing)}; apt-get install radosgw ceph-mon ceph-osd)"
        )
    # Under pytest's temp dir, so the logs outlive a failed session.
    gateway = RadosGateway(tmp_path_factory.mktemp("radosgw"), endpoints=2)
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """A started moto server (S3, SQS, DynamoDB, ... on one endpoint)."""
    if moto_server_command() is None:
        _unavailable("moto server is not installed (pip install 'moto[server]')")
    server = MotoServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def rgw_site(radosgw: RadosGateway) -> S3Site:
    """radosgw through its first endpoint."""
    return S3Site(radosgw.endpoint_urls[0], radosgw.access_key, radosgw.secret_key)


@pytest.fixture(scope="session")
def rgw_site2(radosgw: RadosGateway) -> S3Site:
    """radosgw through its second endpoint: the same data and keys as ``rgw_site``."""
    return S3Site(radosgw.endpoint_urls[1], radosgw.access_key, radosgw.secret_key)


@pytest.fixture(scope="session")
def moto_site(moto_server: MotoServer) -> S3Site:
    """S3 on moto server (moto accepts any credentials)."""
    return S3Site(moto_server.endpoint_url, MOTO_ACCESS_KEY, MOTO_SECRET_KEY)


@pytest.fixture
def unique_name() -> str:
    """A fresh bucket-safe name for this test, like ``t-1a2b3c4d``."""
    return f"t-{uuid.uuid4().hex[:8]}"


# --- container registries (the image engine) -------------------------------------------------------
# Imports here rather than at the top: this section is appended as a whole.
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

from dth.devtools.registry import DockerRegistry  # noqa: E402

REGISTRY_USER = "dth-user"
REGISTRY_PASSWORD = "s3cret-Registry-Pass"  # tests check it never shows in output


def _require_registry_tools() -> None:
    from dth.devtools.registry import missing_binaries as missing_registry_binaries

    missing = missing_registry_binaries() + ([] if shutil.which("skopeo") else ["skopeo"])
    if missing:
        _unavailable(
            f"registry tools are not installed (missing {', '.join(missing)}; "
            "apt-get install docker-registry skopeo apache2-utils)"
        )


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[DockerRegistry]:
    """A fresh docker-registry on 127.0.0.1 without auth (its storage under the test's tmp_path)."""
    _require_registry_tools()
    server = DockerRegistry(tmp_path / "registry")
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def auth_registry(tmp_path: Path) -> Iterator[DockerRegistry]:
    """A fresh docker-registry on 127.0.0.1 behind htpasswd basic auth (REGISTRY_USER/REGISTRY_PASSWORD)."""
    _require_registry_tools()
    server = DockerRegistry(
        tmp_path / "auth-registry", htpasswd_user=REGISTRY_USER, htpasswd_password=REGISTRY_PASSWORD
    )
    server.start()
    try:
        yield server
    finally:
        server.close()


# --- Kubernetes API server (the operator) ----------------------------------------------------------
# Imports here rather than at the top: this section is appended as a whole.
import pathlib  # noqa: E402

from dth.devtools.kubernetes import LocalKubernetes  # noqa: E402
from dth.devtools.kubernetes import missing_binaries as missing_kubernetes_binaries  # noqa: E402

TRANSFERTASK_CRD = pathlib.Path(__file__).resolve().parents[1] / "crds" / "transfertask.yaml"


@pytest.fixture(scope="session")
def kubernetes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKubernetes]:
    """A started etcd + kube-apiserver (v1.20) + kube-controller-manager on 127.0.0.1; no kubelet."""
    missing = missing_kubernetes_binaries()
    if missing:
        _unavailable(
            f"the Kubernetes test server is not installed (missing {', '.join(missing)}; run bash .ci/kubernetes.sh)"
        )
    # Under pytest's temp dir, so the logs outlive a failed session.
    cluster = LocalKubernetes(tmp_path_factory.mktemp("kubernetes"))
    cluster.start(timeout=120)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def kubeconfig(kubernetes: LocalKubernetes) -> pathlib.Path:
    """The admin kubeconfig of the session's API server."""
    return kubernetes.kubeconfig


@pytest.fixture(scope="session")
def transfertask_crd(kubernetes: LocalKubernetes) -> str:
    """The TransferTask CRD (crds/transfertask.yaml), applied with kubectl and Established; its name."""
    kubernetes.kubectl("apply", "-f", str(TRANSFERTASK_CRD))
    name = "transfertasks.dth.io"
    kubernetes.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")
    return name


@pytest.fixture(scope="session")
def promtool() -> str:
    """Prometheus' linter for metric expositions (Debian package prometheus)."""
    found = shutil.which("promtool")
    if found is None:
        _unavailable("promtool is not installed (apt-get install prometheus)")
    return found


# --- A real node (kubelet, containerd, kube-scheduler) ---------------------------------------------
from dth.devtools.node import missing_node_binaries  # noqa: E402


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The node's tests last: its cluster (a second control plane, containerd and kubelet) is started by the
    first of them and lives until the session ends, so it should not run beside every other test."""
    items.sort(key=lambda item: item.get_closest_marker("node") is not None)


@pytest.fixture(scope="session")
def node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKubernetes]:
    """A control plane of its own with a real node: pods run (containerd, CNI bridge, kubelet, scheduler)."""
    missing = missing_kubernetes_binaries() + missing_node_binaries()
    if missing:
        _unavailable(f"the local node is not installed (missing {', '.join(missing)}; run bash .ci/node.sh)")
    if os.geteuid() != 0:
        _unavailable("a local node needs root (mounts, network namespaces, iptables, cgroups)")
    cluster = LocalKubernetes(tmp_path_factory.mktemp("node-cluster"), node=True)
    cluster.start(timeout=300)
    try:
        yield cluster
    finally:
        cluster.stop()
