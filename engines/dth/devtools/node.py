"""A real Kubernetes node for a :class:`~dth.devtools.kubernetes.LocalKubernetes` control plane.

containerd (CRI, its own root, state and socket under the node's working directory), a CNI bridge of its
own (``bridge`` + ``host-local``; containerd adds ``loopback``), kube-scheduler and kubelet. Pods get an
address on the node's bridge; the bridge's own address is the node's address, through which pods reach
host servers that :meth:`LocalNode.expose` names (they listen on 127.0.0.1: a DNAT rule and the bridge's
``route_localnet`` let pod traffic to ``node_address:PORT`` reach ``127.0.0.1:PORT``). There is no
kube-proxy: the ``kubernetes`` Service's ClusterIP (10.96.0.1:443, what in-cluster clients use) is sent to
the API server by a rule of its own, and the API server reaches webhooks and proxied Services through their
endpoints (``--enable-aggregator-routing``), so no other Service needs a ClusterIP route.

The binaries: kubelet, kube-scheduler and the pause container's static binary from the cache that
``bash .ci/node.sh`` fills (next to the API server's), containerd, runc, ctr and the CNI plugins from Debian.
The sandbox (pause) image is made here from that binary and imported into containerd's ``k8s.io`` namespace:
nothing is pulled. Needs root (mounts, network namespaces, iptables, cgroups).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from dth.devtools.node_images import ImageArchive, import_archive, pause_archive
from dth.devtools.ports import LOOPBACK, free_ports
from dth.devtools.processes import ServerProcesses, kill_group

if TYPE_CHECKING:
    from dth.devtools.kubernetes import LocalKubernetes

#: The node's own programs (from the build cache or PATH).
NODE_BINARIES = ("kubelet", "kube-scheduler", "pause", "containerd", "containerd-shim-runc-v2", "runc", "ctr")
#: Where Debian's containernetworking-plugins put the CNI plugins.
CNI_BIN_DIRS = (Path("/usr/lib/cni"), Path("/opt/cni/bin"))
CNI_PLUGINS = ("bridge", "host-local", "loopback")
#: containerd's namespace for images and containers that the CRI (kubelet) sees.
CRI_NAMESPACE = "k8s.io"
#: The ClusterIP of the ``kubernetes`` Service (the first address of the service range).
KUBERNETES_SERVICE_IP = "10.96.0.1"
#: Where cgroup v1 hierarchies are mounted; each node gets a cgroup of its own in each (kubelet's cgroupRoot).
CGROUP_MOUNT = Path("/sys/fs/cgroup")
#: Pod subnets are /24s of this range; each node picks one no route uses yet.
POD_NETWORK_POOL = ipaddress.IPv4Network("10.244.0.0/16")


def cni_bin_dir() -> Path | None:
    for folder in CNI_BIN_DIRS:
        if all((folder / plugin).is_file() for plugin in CNI_PLUGINS):
            return folder
    return None


def missing_node_binaries() -> list[str]:
    """The node's executables (and CNI plugins) that are not found."""
    from dth.devtools.kubernetes import find_binary

    missing = [name for name in NODE_BINARIES if find_binary(name) is None]
    if cni_bin_dir() is None:
        missing.append("CNI plugins (" + ", ".join(CNI_PLUGINS) + ")")
    return missing


def pick_pod_subnet() -> ipaddress.IPv4Network:
    """A /24 of :data:`POD_NETWORK_POOL` that no route of this machine overlaps."""
    routes = subprocess.run(["ip", "-4", "-o", "route", "show", "table", "all"], capture_output=True, text=True)
    used: list[ipaddress.IPv4Network] = []
    for line in routes.stdout.splitlines():
        word = line.split()[0] if line.split() else ""
        if word in ("local", "broadcast", "unreachable") and len(line.split()) > 1:
            word = line.split()[1]
        with contextlib.suppress(ValueError):
            net = ipaddress.ip_network(word, strict=False)
            if isinstance(net, ipaddress.IPv4Network) and net.prefixlen > 0:
                used.append(net)
    candidates = list(POD_NETWORK_POOL.subnets(new_prefix=24))
    start = secrets.randbelow(len(candidates))
    for index in range(len(candidates)):
        subnet = candidates[(start + index) % len(candidates)]
        if not any(subnet.overlaps(net) for net in used):
            return subnet
    raise RuntimeError(f"no free /24 in {POD_NETWORK_POOL} for the pod network")


class LocalNode(ServerProcesses):
    """containerd, kube-scheduler and kubelet joined to a started :class:`LocalKubernetes`.

    ``snapshotter`` is containerd's (``overlayfs`` unless ``DTH_NODE_SNAPSHOTTER`` says otherwise; ``native``
    copies layers and works on any filesystem). Start it after the control plane and stop it before.
    """

    _workdir_prefix = "dth-node-"
    _what = "the Kubernetes node"
    _stop_grace = 20.0

    def __init__(
        self,
        cluster: LocalKubernetes,
        workdir: Path | None = None,
        *,
        snapshotter: str | None = None,
        die_with_parent: bool = True,
        log_verbosity: int = 0,
    ) -> None:
        super().__init__(workdir, die_with_parent=die_with_parent)
        self._cluster = cluster
        self._snapshotter = snapshotter or os.environ.get("DTH_NODE_SNAPSHOTTER") or "overlayfs"
        self._log_verbosity = log_verbosity
        self._id = secrets.token_hex(3)
        self._bridge = f"dth{self._id}"
        self._chain = f"DTH-NODE-{self._id.upper()}"
        self._subnet: ipaddress.IPv4Network | None = None
        self._binaries: dict[str, str] = {}
        self._exposed: set[int] = set()
        self._network_ready = False
        self._kubelet_ports: list[int] = []
        self._scheduler_port = 0
        self.node_name = f"dth-node-{self._id}"

    # -- public ------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The node's address: the bridge's own, the gateway of every pod."""
        if self._subnet is None:
            raise RuntimeError("the node has not been started")
        return str(self._subnet.network_address + 1)

    @property
    def pod_subnet(self) -> str:
        if self._subnet is None:
            raise RuntimeError("the node has not been started")
        return str(self._subnet)

    @property
    def containerd_socket(self) -> Path:
        return self.workdir / "run" / "containerd.sock"

    @property
    def snapshotter(self) -> str:
        return self._snapshotter

    def expose(self, port: int) -> str:
        """Let pods reach ``127.0.0.1:port`` of this machine at ``node_address:port``; that address."""
        if port not in self._exposed:
            self._iptables(
                "-t", "nat", "-A", self._chain, "-d", self.address, "-p", "tcp", "--dport", str(port),
                "-j", "DNAT", "--to-destination", f"{LOOPBACK}:{port}",
            )  # fmt: skip
            self._exposed.add(port)
        return f"{self.address}:{port}"

    def ctr(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """``ctr`` against this node's containerd, in the ``k8s.io`` namespace."""
        argv = [self._binaries.get("ctr", "ctr"), f"--address={self.containerd_socket}", f"--namespace={CRI_NAMESPACE}"]
        done = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def import_image(self, archive: ImageArchive) -> None:
        """Import a docker-archive tarball into containerd's ``k8s.io`` namespace (kubelet sees it)."""
        import_archive(self.ctr, archive, self._snapshotter)

    def image_names(self) -> set[str]:
        return set(self.ctr("images", "list", "--quiet").stdout.split())

    # -- life cycle --------------------------------------------------------------------------

    def _check_binaries(self) -> None:
        from dth.devtools.kubernetes import find_binary

        missing = missing_node_binaries()
        if missing:
            raise RuntimeError(f"the node's programs were not found: {', '.join(missing)} (run `bash .ci/node.sh`)")
        if os.geteuid() != 0:
            raise RuntimeError("a local node needs root (mounts, network namespaces, iptables, cgroups)")
        self._binaries = {name: find_binary(name) or name for name in NODE_BINARIES}

    def _release(self) -> None:
        self._teardown_network()
        self._remove_cgroup_root()

    def stop(self, grace: float | None = None) -> None:
        # kubelet first: while it runs it starts again every container killed below.
        for name in ("kubelet", "kube-scheduler"):
            proc = self._procs.pop(name, None)
            if proc is not None and proc.poll() is None:
                kill_group(proc, signal.SIGTERM)
                try:
                    proc.wait(self._stop_grace)
                except subprocess.TimeoutExpired:
                    kill_group(proc, signal.SIGKILL)
                    proc.wait()
        if self._procs:
            with contextlib.suppress(Exception):
                self._remove_containers()
        super().stop(grace)
        if self._workdir is not None:
            self._unmount_under(self._workdir)

    def _start_once(self, deadline: float) -> None:
        workdir = self.workdir
        for name in ("log", "run", "containerd", "kubelet", "cni"):
            if name in ("run", "kubelet", "log"):
                self._unmount_under(workdir / name)
                shutil.rmtree(workdir / name, ignore_errors=True)
            (workdir / name).mkdir(parents=True, exist_ok=True)
        self._kubelet_ports = free_ports(2)
        (self._scheduler_port,) = free_ports(1)
        self._teardown_network()  # what a failed attempt left
        self._setup_network()
        self._make_cgroup_root()
        self._phase("network")
        self._write_containerd_config()
        self._spawn("containerd", [self._binaries["containerd"], f"--config={workdir / 'containerd.toml'}"])
        self._poll("containerd", deadline, lambda: self.ctr("version", check=False).returncode == 0)
        self._phase("containerd")
        self.import_image(pause_archive(Path(self._binaries["pause"]), workdir / "images"))
        self._phase("pause image")
        self._spawn("kube-scheduler", self._scheduler_argv())
        self._write_kubelet_config()
        self._spawn("kubelet", self._kubelet_argv())
        self._poll("the node to be Ready", deadline, self._node_ready)
        self._phase("kubelet")

    # -- network -----------------------------------------------------------------------------

    def _setup_network(self) -> None:
        self._subnet = pick_pod_subnet()
        prefix = self._subnet.prefixlen
        self._run(["ip", "link", "add", self._bridge, "type", "bridge"])
        self._network_ready = True
        self._run(["ip", "addr", "add", f"{self.address}/{prefix}", "dev", self._bridge])
        self._run(["ip", "link", "set", self._bridge, "up"])
        for key, value in (
            ("net.ipv4.ip_forward", "1"),
            (f"net.ipv4.conf.{self._bridge}.route_localnet", "1"),
        ):
            self._run(["sysctl", "-q", "-w", f"{key}={value}"])
        self._iptables("-t", "nat", "-N", self._chain)
        for hook in ("PREROUTING", "OUTPUT"):
            self._iptables("-t", "nat", "-I", hook, "-j", self._chain)
        # In-cluster clients (KUBERNETES_SERVICE_HOST) reach the API server, which listens on loopback.
        port = self._cluster.server_url.rsplit(":", 1)[1]
        self._iptables(
            "-t", "nat", "-A", self._chain, "-s", self.pod_subnet, "-d", KUBERNETES_SERVICE_IP, "-p", "tcp",
            "--dport", "443", "-j", "DNAT", "--to-destination", f"{LOOPBACK}:{port}",
        )  # fmt: skip
        net_d = self.workdir / "cni" / "net.d"
        net_d.mkdir(parents=True, exist_ok=True)
        config = {
            "cniVersion": "0.4.0",
            "name": f"dth-{self._id}",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self._bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.pod_subnet, "gateway": self.address}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.workdir / "cni" / "ipam"),
                    },
                }
            ],
        }
        (net_d / "10-dth.conflist").write_text(json.dumps(config, indent=2))

    def _teardown_network(self) -> None:
        if not self._network_ready:
            return
        for hook in ("PREROUTING", "OUTPUT"):
            self._iptables("-t", "nat", "-D", hook, "-j", self._chain, check=False)
        self._iptables("-t", "nat", "-F", self._chain, check=False)
        self._iptables("-t", "nat", "-X", self._chain, check=False)
        self._run(["ip", "link", "del", self._bridge], check=False)
        self._exposed.clear()
        self._network_ready = False
        self._subnet = None

    def _iptables(self, *args: str, check: bool = True) -> None:
        # -w: other nodes (and Docker-like tools) may hold the xtables lock.
        self._run(["iptables", "-w", "30", *args], check=check)

    # -- cgroups -----------------------------------------------------------------------------

    @property
    def cgroup_root(self) -> str:
        return f"/dth-{self._id}"

    def _cgroup_hierarchies(self) -> list[Path]:
        try:
            return [path for path in CGROUP_MOUNT.iterdir() if (path / "cgroup.procs").exists()]
        except OSError:
            return []

    def _make_cgroup_root(self) -> None:
        # kubelet refuses a cgroupRoot that does not exist in every hierarchy.
        for hierarchy in self._cgroup_hierarchies():
            folder = hierarchy / self.cgroup_root.lstrip("/")
            folder.mkdir(exist_ok=True)
            if hierarchy.name == "cpuset":  # a new cpuset is empty: give it its parent's CPUs and memory nodes
                for name in ("cpuset.cpus", "cpuset.mems"):
                    (folder / name).write_text((hierarchy / name).read_text())

    def _remove_cgroup_root(self) -> None:
        for hierarchy in self._cgroup_hierarchies():
            root = hierarchy / self.cgroup_root.lstrip("/")
            if not root.is_dir():
                continue
            folders = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
            for folder in [*folders, root]:
                with contextlib.suppress(OSError):
                    folder.rmdir()

    # -- containerd --------------------------------------------------------------------------

    def _write_containerd_config(self) -> None:
        workdir = self.workdir
        cni = cni_bin_dir()
        runc_options = {
            "BinaryName": self._binaries["runc"],
            "Root": str(workdir / "run" / "runc"),
            "SystemdCgroup": False,
        }
        config = {
            "version": 2,
            "root": str(workdir / "containerd"),
            "state": str(workdir / "run" / "containerd"),
            "grpc": {"address": str(self.containerd_socket)},
            "ttrpc": {"address": str(workdir / "run" / "containerd.sock.ttrpc")},
            # No metrics or debug listeners: their fixed default addresses would clash between nodes.
            "debug": {"level": "info" if self._log_verbosity else "warn"},
            "disabled_plugins": [
                "io.containerd.snapshotter.v1.aufs",
                "io.containerd.snapshotter.v1.btrfs",
                "io.containerd.snapshotter.v1.devmapper",
                "io.containerd.snapshotter.v1.zfs",
                "io.containerd.internal.v1.tracing",
            ],
            "plugins": {
                "io.containerd.grpc.v1.cri": {
                    "sandbox_image": "",  # set below, once the pause image's name is known
                    "stream_server_address": LOOPBACK,
                    "stream_server_port": "0",
                    "enable_selinux": False,
                    "restrict_oom_score_adj": True,
                    "disable_apparmor": True,
                    "containerd": {
                        "snapshotter": self._snapshotter,
                        "default_runtime_name": "runc",
                        "runtimes": {
                            "runc": {"runtime_type": "io.containerd.runc.v2", "options": runc_options},
                        },
                    },
                    "cni": {"bin_dir": str(cni), "conf_dir": str(workdir / "cni" / "net.d"), "max_conf_num": 1},
                },
                "io.containerd.internal.v1.opt": {"path": str(workdir / "containerd" / "opt")},
            },
        }
        from dth.devtools.node_images import pause_image_name

        config["plugins"]["io.containerd.grpc.v1.cri"]["sandbox_image"] = pause_image_name(  # type: ignore[index]
            Path(self._binaries["pause"])
        )
        (workdir / "containerd.toml").write_text(_toml(config))

    def _remove_containers(self) -> None:
        """Kill every container of this node's containerd and free their network namespaces and mounts."""
        if not self.containerd_socket.exists():
            return
        namespaces: set[str] = set()
        for container in self.ctr("containers", "list", "--quiet", check=False, timeout=60).stdout.split():
            info = self.ctr("containers", "info", container, check=False, timeout=60)
            with contextlib.suppress(ValueError, KeyError, TypeError):
                for entry in json.loads(info.stdout)["Spec"]["linux"]["namespaces"]:
                    if entry.get("type") == "network" and entry.get("path"):
                        namespaces.add(entry["path"])
            self.ctr("tasks", "kill", "--signal", "SIGKILL", container, check=False, timeout=60)
        for container in self.ctr("containers", "list", "--quiet", check=False, timeout=60).stdout.split():
            for _ in range(50):
                if self.ctr("tasks", "delete", "--force", container, check=False, timeout=60).returncode == 0:
                    break
                if "not found" in self.ctr("tasks", "list", check=False, timeout=60).stdout:
                    break
                time.sleep(0.1)
        for path in namespaces:
            self._run(["umount", path], check=False)
            with contextlib.suppress(OSError):
                Path(path).unlink()

    # -- kube-scheduler and kubelet ----------------------------------------------------------

    def _scheduler_argv(self) -> list[str]:
        return [
            self._binaries["kube-scheduler"],
            f"--kubeconfig={self._cluster.kubeconfig}",
            f"--authentication-kubeconfig={self._cluster.kubeconfig}",
            f"--authorization-kubeconfig={self._cluster.kubeconfig}",
            "--leader-elect=false",
            "--port=0",
            f"--secure-port={self._scheduler_port}",
            f"--bind-address={LOOPBACK}",
            f"--cert-dir={self.workdir / 'scheduler-pki'}",
            f"--v={self._log_verbosity}",
        ]

    def _write_kubelet_config(self) -> None:
        port, healthz_port = self._kubelet_ports
        resolv = self.workdir / "resolv.conf"
        # No cluster DNS: pods address servers by IP. An empty search list keeps lookups local.
        resolv.write_text("nameserver 127.0.0.1\n")
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.address,
            "port": port,
            "readOnlyPort": 0,
            "healthzBindAddress": LOOPBACK,
            "healthzPort": healthz_port,
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            # cgroup v1 without systemd as init: the cgroupfs driver.
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "failSwapOn": False,
            "resolvConf": str(resolv),
            "staticPodPath": "",
            # A shared, busy machine: never evict for disk or memory, never collect images (imported, not
            # pulled: a collected image cannot come back).
            "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "maxPods": 50,
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "nodeStatusUpdateFrequency": "5s",
            "runtimeRequestTimeout": "10m",
            "enforceNodeAllocatable": [],
            "protectKernelDefaults": False,
            "makeIPTablesUtilChains": False,
        }
        (self.workdir / "kubelet.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def _kubelet_argv(self) -> list[str]:
        workdir = self.workdir
        return [
            self._binaries["kubelet"],
            f"--config={workdir / 'kubelet.yaml'}",
            f"--kubeconfig={self._cluster.kubeconfig}",
            f"--root-dir={workdir / 'kubelet'}",
            f"--cert-dir={workdir / 'kubelet-pki'}",
            "--container-runtime=remote",
            f"--container-runtime-endpoint=unix://{self.containerd_socket}",
            f"--hostname-override={self.node_name}",
            f"--node-ip={self.address}",
            "--network-plugin=cni",
            f"--v={self._log_verbosity}",
        ]

    def _node_ready(self) -> bool:
        import urllib.error

        try:
            node = self._cluster.get(f"/api/v1/nodes/{self.node_name}", timeout=5)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 404:
                return False
            raise
        conditions = node.get("status", {}).get("conditions", [])
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    # -- helpers -----------------------------------------------------------------------------

    def _poll(self, what: str, deadline: float, probe: Callable[[], bool]) -> None:
        last = "no attempt"
        while True:
            for name, proc in self._procs.items():
                code = proc.poll()
                if code is not None:
                    raise RuntimeError(f"{name} exited with code {code}\n{self.log_tails()}")
            try:
                if probe():
                    return
                last = "not ready"
            except (OSError, ValueError, RuntimeError, subprocess.SubprocessError) as exc:
                last = repr(exc)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: not ready in time ({last})\n{self.log_tails()}")
            time.sleep(0.2)

    def _run(self, argv: Sequence[str], *, check: bool = True) -> None:
        done = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=120)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {(done.stdout + done.stderr).strip()}")

    def _unmount_under(self, root: Path) -> None:
        """Unmount what containerd and kubelet left mounted under ``root`` (deepest first)."""
        prefix = str(root.resolve()) + "/"
        try:
            mounts = Path("/proc/self/mounts").read_text().splitlines()
        except OSError:
            return
        targets = [line.split()[1].encode().decode("unicode_escape") for line in mounts if len(line.split()) > 1]
        for target in sorted((t for t in targets if t.startswith(prefix)), key=len, reverse=True):
            self._run(["umount", "-l", target], check=False)


def _toml(value: dict[str, object], table: str = "") -> str:
    """A minimal TOML writer for containerd's configuration (strings, numbers, booleans, lists, tables)."""
    lines: list[str] = []
    subtables: list[tuple[str, dict[str, object]]] = []
    for key, item in value.items():
        if isinstance(item, dict):
            subtables.append((key, item))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(item)}")
    text = ""
    if table and (lines or not subtables):
        text += f"[{table}]\n"
    text += "".join(line + "\n" for line in lines)
    for key, item in subtables:
        name = f"{table}.{_toml_key(key)}" if table else _toml_key(key)
        text += "\n" + _toml(item, name)
    return text


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _toml_value(item: object) -> str:
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int | float):
        return str(item)
    if isinstance(item, str):
        return json.dumps(item)
    if isinstance(item, list):
        return "[" + ", ".join(_toml_value(element) for element in item) + "]"
    raise TypeError(f"no TOML for {item!r}")
