"""A throwaway Kubernetes control plane on 127.0.0.1: a real API server for local tests.

One ``etcd``, one ``kube-apiserver`` (TLS, a static admin token, RBAC) and, optionally, one
``kube-controller-manager`` (namespace deletion, default service accounts, garbage collection
of owned objects). By default there is no kubelet and no scheduler: pods are stored but never run.
With ``node=True`` a real node joins (:class:`dth.devtools.node.LocalNode`: containerd, a CNI bridge,
kube-scheduler and kubelet), and pods run. Certificates, keys, etcd's data, the kubeconfig and the logs stay
under a working directory.

The server binaries (v1.20.2, the last release Debian builds) and kubectl come from the cache
that ``bash .ci/kubernetes.sh`` fills (``${DTH_CACHE:-~/.cache/dth}/kubernetes/<version>/bin``);
``DTH_KUBERNETES_BIN`` names another folder to look in first, and ``PATH`` is looked at last.
etcd is Debian's ``etcd-server``; openssl makes the certificates.

Run ``python -m dth.devtools.kubernetes`` to start one in the foreground: it prints the
kubeconfig path (and the server URL) as one JSON line on stdout and runs until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from dth.devtools.node import LocalNode, missing_node_binaries
from dth.devtools.ports import LOOPBACK, free_ports
from dth.devtools.processes import ServerProcesses

#: Executables the control plane needs; ``kube-controller-manager`` only with ``controller_manager``.
SERVER_BINARIES = ("etcd", "kube-apiserver", "openssl")
CONTROLLER_MANAGER_BINARY = "kube-controller-manager"
#: Executables the tests use to talk to it.
CLIENT_BINARIES = ("kubectl",)

#: Environment variable naming a folder (or several, separated by ``os.pathsep``) searched first.
BIN_ENV = "DTH_KUBERNETES_BIN"
#: Environment variable naming the cache root that ``.ci/kubernetes.sh`` fills.
CACHE_ENV = "DTH_CACHE"

SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc"
# Controllers that need nodes or a cloud: there are none.
CONTROLLERS = "*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle"
NODE_CONTROLLERS = "*,-nodeipam,-cloud-node-lifecycle"

_CERT_DAYS = 3650


def cache_bin_dirs() -> list[Path]:
    """The ``bin`` folders of the build cache, newest source version first."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "dth") / "kubernetes"
    try:
        versions = [entry for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith(".")]
    except OSError:
        return []
    versions.sort(key=lambda entry: _natural_key(entry.name), reverse=True)
    return [entry / "bin" for entry in versions if (entry / "bin").is_dir()]


def search_dirs() -> list[Path]:
    """Folders searched for binaries before ``PATH``: ``$DTH_KUBERNETES_BIN``, then the cache."""
    dirs = [Path(part) for part in os.environ.get(BIN_ENV, "").split(os.pathsep) if part]
    return dirs + cache_bin_dirs()


def find_binary(name: str) -> str | None:
    """The path of executable ``name``: from :func:`search_dirs`, else from ``PATH``."""
    for folder in search_dirs():
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


def missing_binaries(*, controller_manager: bool = True, client: bool = True) -> list[str]:
    """The executables a control plane (and, with ``client``, its tests) needs that are not found."""
    names = [*SERVER_BINARIES]
    if controller_manager:
        names.append(CONTROLLER_MANAGER_BINARY)
    if client:
        names.extend(CLIENT_BINARIES)
    return [name for name in names if find_binary(name) is None]


class LocalKubernetes(ServerProcesses):
    """etcd, kube-apiserver and (optionally) kube-controller-manager on free loopback ports.

    The API server accepts the bearer :attr:`token` as a member of ``system:masters``;
    :attr:`kubeconfig` holds it with the cluster's CA. With ``die_with_parent`` (and
    util-linux ``setpriv`` on PATH) the kernel kills the processes when the thread that
    started them dies, even by SIGKILL: start the cluster from a thread that outlives it.
    """

    _workdir_prefix = "dth-k8s-"
    _what = "the Kubernetes control plane"

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        controller_manager: bool = True,
        node: bool = False,
        die_with_parent: bool = True,
        log_verbosity: int = 0,
    ) -> None:
        super().__init__(workdir, die_with_parent=die_with_parent)
        if node and not controller_manager:
            raise ValueError("a node needs the controller manager (service account tokens, ReplicaSets)")
        self._controller_manager = controller_manager
        self._want_node = node
        self._node: LocalNode | None = None
        self._log_verbosity = log_verbosity
        self._token = secrets.token_hex(16)
        self._etcd_client_port = 0
        self._etcd_peer_port = 0
        self._apiserver_port = 0
        self._binaries: dict[str, str] = {}
        self._ssl_context: ssl.SSLContext | None = None

    # -- public properties -------------------------------------------------------------------

    @property
    def token(self) -> str:
        """The bearer token of the ``admin`` user (group ``system:masters``)."""
        return self._token

    @property
    def server_url(self) -> str:
        """``https://127.0.0.1:PORT`` of the API server."""
        if not self._apiserver_port:
            raise RuntimeError("the cluster has not been started")
        return f"https://{LOOPBACK}:{self._apiserver_port}"

    @property
    def etcd_url(self) -> str:
        if not self._etcd_client_port:
            raise RuntimeError("the cluster has not been started")
        return f"http://{LOOPBACK}:{self._etcd_client_port}"

    @property
    def kubeconfig(self) -> Path:
        """A kubeconfig for the admin user (context ``dth-local``, namespace ``default``)."""
        return self.workdir / "kubeconfig"

    @property
    def ca_path(self) -> Path:
        """The CA certificate the API server's serving certificate is signed with."""
        return self.workdir / "pki" / "ca.crt"

    @property
    def controller_manager(self) -> bool:
        return self._controller_manager

    @property
    def node(self) -> LocalNode:
        """The node (``node=True``), once started."""
        if self._node is None:
            raise RuntimeError("this cluster has no node (LocalKubernetes(node=True)) or it is not started")
        return self._node

    @property
    def pids(self) -> dict[str, int]:
        """Process ids of the running components, by name."""
        return {name: proc.pid for name, proc in self._procs.items()}

    def missing_binaries(self) -> list[str]:
        """The executables this cluster needs to start that are not found (kubectl is not needed)."""
        return missing_binaries(controller_manager=self._controller_manager, client=False)

    # -- life cycle --------------------------------------------------------------------------

    def _check_binaries(self) -> None:
        missing = self.missing_binaries()
        if self._want_node:
            missing += missing_node_binaries()
        if missing:
            raise RuntimeError(
                f"Kubernetes binaries not found: {', '.join(missing)} (run `bash .ci/kubernetes.sh`, "
                f"or set {BIN_ENV} to a folder holding them)"
            )
        names = [*SERVER_BINARIES, CONTROLLER_MANAGER_BINARY] if self._controller_manager else [*SERVER_BINARIES]
        self._binaries = {name: find_binary(name) or name for name in names}

    def _release(self) -> None:
        self._apiserver_port = self._etcd_client_port = self._etcd_peer_port = 0

    # -- clients -----------------------------------------------------------------------------

    def kubectl_command(self) -> list[str]:
        """``kubectl`` with this cluster's kubeconfig and a private discovery cache."""
        kubectl = find_binary("kubectl")
        if kubectl is None:
            raise RuntimeError(f"kubectl not found (run `bash .ci/kubernetes.sh`, or set {BIN_ENV})")
        return [kubectl, f"--kubeconfig={self.kubeconfig}", f"--cache-dir={self.workdir / 'kubectl-cache'}"]

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; with ``check``, raise RuntimeError when it fails."""
        argv = [*self.kubectl_command(), *args]
        done = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=self._client_env(),
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def get(self, path: str, timeout: float = 10) -> Any:
        """GET an API path (``/api/v1/namespaces``) as the admin user; the decoded JSON."""
        request = urllib.request.Request(
            self.server_url + path,
            headers={"Authorization": f"Bearer {self._token}", "Accept": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout, context=self._ssl()) as response:
            return json.loads(response.read())

    # -- internals ---------------------------------------------------------------------------

    def _start_once(self, deadline: float) -> None:
        workdir = self.workdir
        for name in ("etcd", "log"):
            shutil.rmtree(workdir / name, ignore_errors=True)
            (workdir / name).mkdir(parents=True)
        self._etcd_client_port, self._etcd_peer_port, self._apiserver_port = free_ports(3)
        if not (workdir / "pki" / "ready").exists():
            self._make_pki(deadline)
            self._phase("certificates")
        (workdir / "pki" / "tokens.csv").write_text(f"{self._token},admin,admin,system:masters\n")
        self._write_kubeconfig()
        self._spawn("etcd", self._etcd_argv())
        self._wait_etcd(deadline)
        self._phase("etcd")
        self._spawn("kube-apiserver", self._apiserver_argv())
        self._wait_apiserver(deadline)
        self._phase("kube-apiserver")
        if self._controller_manager:
            self._spawn("kube-controller-manager", self._controller_manager_argv())
            self._wait_default_service_account(deadline)
            self._phase("kube-controller-manager")
        if self._want_node:
            self._node = LocalNode(self, self.workdir / "node", die_with_parent=self._die_with_parent)
            self._node.start(timeout=max(1.0, deadline - time.monotonic()))
            began = self.startup_phases.get("kube-controller-manager", 0.0)
            for name, seconds in self._node.startup_phases.items():
                self.startup_phases[f"node: {name}"] = round(began + seconds, 3)

    def stop(self, grace: float | None = None) -> None:
        # The node first: kubelet and containerd stop their containers while the API server still answers.
        if self._node is not None:
            self._node.stop(grace)
            self._node = None
        super().stop(grace)

    def _terminate_processes(self, grace: float | None = None) -> None:
        if self._node is not None:
            self._node.stop(grace)
            self._node = None
        super()._terminate_processes(grace)

    def _make_pki(self, deadline: float) -> None:
        pki = self.workdir / "pki"
        shutil.rmtree(pki, ignore_errors=True)
        pki.mkdir(mode=0o700)
        (pki / "ca.cnf").write_text(
            "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = ext\n"
            "[dn]\nCN = dth-local-kubernetes-ca\n"
            "[ext]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign,digitalSignature\n"
            "subjectKeyIdentifier = hash\n"
        )
        (pki / "apiserver.cnf").write_text(
            "[req]\ndistinguished_name = dn\nprompt = no\n"
            "[dn]\nCN = kube-apiserver\n"
            "[ext]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n"
            "extendedKeyUsage = serverAuth\nauthorityKeyIdentifier = keyid\n"
            "subjectAltName = IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
            "DNS:kubernetes.default.svc,IP:10.96.0.1\n"
        )
        days = _CERT_DAYS
        # ECDSA P-256 keys: a fraction of the time RSA keys take on a busy machine.
        ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256"
        steps = [
            # CA
            f"req -x509 -config ca.cnf {ec} -nodes -keyout ca.key -out ca.crt -days {days}",
            # API server serving certificate
            f"req -new -config apiserver.cnf {ec} -nodes -keyout apiserver.key -out apiserver.csr",
            "x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt"
            f" -days {days} -extfile apiserver.cnf -extensions ext",
            # Service account token signing key pair
            "genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out sa.key",
            "pkey -in sa.key -pubout -out sa.pub",
        ]
        openssl = self._binaries["openssl"]
        run = [[openssl, *step.split()] for step in steps]
        for argv in run:
            self._run(argv, cwd=pki, deadline=deadline)
        (pki / "ready").touch()

    def _write_kubeconfig(self) -> None:
        ca = base64.b64encode(self.ca_path.read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "dth-local", "cluster": {"server": self.server_url, "certificate-authority-data": ca}}
            ],
            "users": [{"name": "admin", "user": {"token": self._token}}],
            "contexts": [
                {"name": "dth-local", "context": {"cluster": "dth-local", "user": "admin", "namespace": "default"}}
            ],
            "current-context": "dth-local",
            "preferences": {},
        }
        path = self.kubeconfig
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)

    def _etcd_argv(self) -> list[str]:
        client = f"http://{LOOPBACK}:{self._etcd_client_port}"
        peer = f"http://{LOOPBACK}:{self._etcd_peer_port}"
        return [
            self._binaries["etcd"],
            "--name=dth-local",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=dth-local={peer}",
            "--initial-cluster-state=new",
            f"--initial-cluster-token=dth-{secrets.token_hex(4)}",
            "--logger=zap",
            "--log-outputs=stderr",
            "--log-level=warn",
        ]

    def _apiserver_argv(self) -> list[str]:
        pki = self.workdir / "pki"
        return [
            self._binaries["kube-apiserver"],
            f"--etcd-servers={self.etcd_url}",
            f"--bind-address={LOOPBACK}",
            f"--advertise-address={LOOPBACK}",
            f"--secure-port={self._apiserver_port}",
            "--insecure-port=0",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            f"--v={self._log_verbosity}",
            # There is no kube-proxy: webhooks and aggregated APIs are reached at their endpoints (pod IPs).
            # The node's name resolves nowhere: logs and exec reach kubelet at its address.
            *(
                ["--enable-aggregator-routing=true", "--kubelet-preferred-address-types=InternalIP"]
                if self._want_node
                else []
            ),
        ]

    def _controller_manager_argv(self) -> list[str]:
        pki = self.workdir / "pki"
        return [
            self._binaries[CONTROLLER_MANAGER_BINARY],
            f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            # With a node, its lifecycle controller lifts the not-ready taint kubelet registers it with.
            f"--controllers={NODE_CONTROLLERS if self._want_node else CONTROLLERS}",
            "--use-service-account-credentials=false",
            # No health or metrics endpoints: the fixed default ports would clash between clusters.
            "--port=0",
            "--secure-port=0",
            f"--bind-address={LOOPBACK}",
            f"--cert-dir={pki}",
            f"--v={self._log_verbosity}",
        ]

    def _client_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBECONFIG", "KUBERNETES_"))}
        env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def _env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith(("ETCD", "KUBECONFIG", "KUBERNETES_"))}

    def _run(self, argv: Sequence[str], *, cwd: Path, deadline: float) -> None:
        timeout = max(1.0, deadline - time.monotonic())
        try:
            done = subprocess.run(
                list(argv),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                cwd=cwd,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"{' '.join(argv)} timed out after {timeout:.0f} s") from exc
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace").strip()
            raise RuntimeError(f"{' '.join(argv)} failed with exit code {done.returncode}: {output}")

    def _check_alive(self) -> None:
        for name, proc in self._procs.items():
            code = proc.poll()
            if code is not None:
                raise RuntimeError(f"{name} exited with code {code}\n{self.log_tails()}")

    def _ssl(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context(cafile=str(self.ca_path))
        return self._ssl_context

    def _poll(self, what: str, deadline: float, probe: Callable[[], bool]) -> None:
        """Call ``probe()`` until it returns True; raise with the logs at the deadline."""
        last_error = "no attempt"
        while True:
            self._check_alive()
            try:
                if probe():
                    return
                last_error = "not ready"
            except (OSError, ValueError, urllib.error.URLError) as exc:
                last_error = repr(exc)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not get ready in time ({last_error})\n{self.log_tails()}")
            time.sleep(0.1)

    def _wait_etcd(self, deadline: float) -> None:
        def probe() -> bool:
            with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as response:
                return json.loads(response.read()).get("health") in ("true", True)

        self._poll("etcd", deadline, probe)

    def _wait_apiserver(self, deadline: float) -> None:
        self._ssl_context = None

        def probe() -> bool:
            request = urllib.request.Request(
                f"{self.server_url}/readyz", headers={"Authorization": f"Bearer {self._token}"}
            )
            try:
                with urllib.request.urlopen(request, timeout=5, context=self._ssl()) as response:
                    return bool(response.status == 200 and response.read().strip() == b"ok")
            except urllib.error.HTTPError as exc:  # 500 while post-start hooks run
                exc.close()
                return False

        self._poll("kube-apiserver", deadline, probe)

    def _wait_default_service_account(self, deadline: float) -> None:
        def probe() -> bool:
            try:
                self.get("/api/v1/namespaces/default/serviceaccounts/default", timeout=5)
            except urllib.error.HTTPError as exc:
                exc.close()
                if exc.code == 404:
                    return False
                raise
            return True

        self._poll("kube-controller-manager (default service account)", deadline, probe)


def _natural_key(text: str) -> list[tuple[int, int | str]]:
    """Sort key comparing runs of digits as numbers: ``1.20.10`` after ``1.20.9``."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.findall(r"\d+|\D+", text)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dth.devtools.kubernetes",
        description="Run a throwaway Kubernetes API server (etcd, kube-apiserver, kube-controller-manager) "
        "on 127.0.0.1 until SIGINT/SIGTERM.",
    )
    parser.add_argument("--workdir", type=Path, help="keep the cluster's files here (default: a temp dir)")
    parser.add_argument(
        "--no-controller-manager",
        dest="controller_manager",
        action="store_false",
        help="run only etcd and the API server (no namespace deletion, service accounts or garbage collection)",
    )
    parser.add_argument(
        "--node", action="store_true", help="also run a node: containerd, CNI bridge, kube-scheduler, kubelet"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="start-up timeout in seconds")
    args = parser.parse_args(argv)
    cluster = LocalKubernetes(args.workdir, controller_manager=args.controller_manager, node=args.node)

    def describe() -> dict[str, Any]:
        info: dict[str, Any] = {"kubeconfig": str(cluster.kubeconfig), "server_url": cluster.server_url}
        info["pids"] = cluster.pids
        if args.node:
            info["node_address"] = cluster.node.address
            info["containerd_socket"] = str(cluster.node.containerd_socket)
        return info

    return cluster.run_in_foreground(args.timeout if not args.node else max(args.timeout, 180.0), describe)


if __name__ == "__main__":
    sys.exit(main())
