"""ECS containers as Kubernetes Pods on a local node: the local ECS runner's pod mode.

Each container of a task the runner starts becomes one Pod (``restartPolicy: Never``; the runner restarts
service tasks itself, as ECS does) running exactly what the task definition says: its ``image`` (the engine
image the plugin stack names), its ``command`` after the image's own entrypoint (or its ``entryPoint``), its
``environment``, its ``user`` (else the image's), a read-only root filesystem when ``readonlyRootFilesystem``
says so, and its volumes as ``emptyDir`` mounts at their ``containerPath`` (task-scoped storage, as
Fargate's). Like the process mode, the one deviation from ECS is how AWS is reached: ``AWS_ENDPOINT_URL`` (moto
at the node's address) and moto's keys, from a Secret of the launcher's (``envFrom``), where a Fargate task
would have its task role. The Pod's log is copied to the runner's log file when it ends.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import signal
import subprocess
import time
import urllib.error
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dth.devtools.kubernetes import LocalKubernetes

#: Why a container never starts (its image is missing, its spec refused): reported as exit code 127.
_NEVER_STARTS = frozenset(
    {"ErrImageNeverPull", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError", "ErrImagePull"}
)
_STATUS_TTL = 0.5  # seconds a pod's status is reused: the runner polls every container on every pass


@dataclass(frozen=True)
class PodContainer:
    """What a pod runs for one ECS container definition."""

    name: str
    image: str
    command: tuple[str, ...]
    entry_point: tuple[str, ...] | None
    environment: tuple[tuple[str, str], ...]
    user: str | None
    read_only_root: bool
    mounts: tuple[tuple[str, str], ...]
    stop_timeout: float


@dataclass
class PodProcess:
    """A running pod, seen as a process by the runner: ``poll``, ``wait``, ``send_signal`` and ``pid``."""

    launcher: PodLauncher
    name: str
    log_path: Path
    pid: int = 0
    _exit: int | None = None
    _signalled: signal.Signals | None = None
    _checked: float = 0.0
    _status: dict[str, Any] = field(default_factory=dict)

    def poll(self) -> int | None:
        if self._exit is not None:
            return self._exit
        now = time.monotonic()
        if now - self._checked < _STATUS_TTL:
            return None
        self._checked = now
        pod = self.launcher.get_pod(self.name)
        if pod is None:  # deleted (stopped by the runner) before its status said how it ended
            self._exit = 137 if self._signalled == signal.SIGKILL or self._signalled is None else 143
            return self._exit
        self._status = pod.get("status", {})
        for status in self._status.get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated")
            if terminated is not None and self._status.get("phase") in ("Succeeded", "Failed"):
                self._finish(int(terminated.get("exitCode", 1)))
                return self._exit
            waiting = (status.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in _NEVER_STARTS:
                self.log_path.write_text(f"pod {self.name} never started: {waiting.get('reason')}: "
                                         f"{waiting.get('message', '')}\n")  # fmt: skip
                self._exit = 127
                self.launcher.delete_pod(self.name, grace=0)
                return self._exit
        return None

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            code = self.poll()
            if code is not None:
                return code
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.name, timeout or 0)
            time.sleep(_STATUS_TTL)

    def send_signal(self, sig: signal.Signals) -> None:
        """SIGTERM: delete the pod with its stop timeout as grace period (the kubelet sends SIGTERM, then
        SIGKILL, as ECS does); SIGKILL: delete it at once."""
        if self._exit is not None:
            return
        self._signalled = sig
        with contextlib.suppress(Exception):
            self._copy_log()
        self.launcher.delete_pod(self.name, grace=0 if sig == signal.SIGKILL else None)

    def _finish(self, code: int) -> None:
        with contextlib.suppress(Exception):
            self._copy_log()
        self._exit = code
        self.launcher.delete_pod(self.name, grace=0)

    def _copy_log(self) -> None:
        done = self.launcher.cluster.kubectl("logs", "-n", self.launcher.namespace, self.name, check=False)
        if done.returncode == 0:
            self.log_path.write_text(done.stdout)


class PodLauncher:
    """Starts ECS containers as Pods in ``namespace`` of a cluster with a node; AWS at ``aws_endpoint``."""

    credentials_secret = "dth-ecs-runner-aws"

    def __init__(
        self,
        cluster: LocalKubernetes,
        namespace: str,
        *,
        aws_endpoint: str,
        access_key: str,
        secret_key: str,
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.aws_endpoint = aws_endpoint
        self._access_key = access_key
        self._secret_key = secret_key
        self._secret_made = False
        self.launched: list[dict[str, Any]] = []
        """The manifests of the pods started, in order."""

    def launch(
        self, owner: str, container: PodContainer, region: str, log_path: Path, labels: Mapping[str, str]
    ) -> PodProcess:
        self._ensure_secret()
        base = re.sub(r"[^a-z0-9-]+", "-", f"{owner.rsplit('/', 1)[-1]}-{container.name}".lower()).strip("-")
        name = f"{base[:50].rstrip('-')}-{secrets.token_hex(3)}"
        manifest = self.pod_manifest(name, container, region, labels)
        self.cluster.kubectl("create", "-f", "-", input=json.dumps(manifest))
        self.launched.append(manifest)
        return PodProcess(self, name, log_path)

    def pod_manifest(
        self, name: str, container: PodContainer, region: str, labels: Mapping[str, str]
    ) -> dict[str, Any]:
        environment = dict(container.environment)
        # As Fargate sets them; then the runner's deviation: AWS is moto at the node's address.
        environment = {"AWS_REGION": region, "AWS_DEFAULT_REGION": region, **environment}
        environment["AWS_ENDPOINT_URL"] = self.aws_endpoint
        spec: dict[str, Any] = {
            "name": "main",
            "image": container.image,
            "imagePullPolicy": "Never",
            "env": [{"name": key, "value": value} for key, value in environment.items()],
            "envFrom": [{"secretRef": {"name": self.credentials_secret}}],
            "securityContext": {"readOnlyRootFilesystem": container.read_only_root},
            "volumeMounts": [
                {"name": _volume_name(volume), "mountPath": path} for volume, path in container.mounts if volume
            ],
        }
        if container.entry_point is not None:
            spec["command"] = list(container.entry_point)
        spec["args"] = list(container.command)
        security = _user_context(container.user)
        if security:
            spec["securityContext"].update(security)
        volumes = sorted({volume for volume, _ in container.mounts if volume})
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": self.namespace, "labels": dict(labels)},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": int(container.stop_timeout),
                "enableServiceLinks": False,
                "containers": [spec],
                "volumes": [{"name": _volume_name(volume), "emptyDir": {}} for volume in volumes],
            },
        }

    def get_pod(self, name: str) -> dict[str, Any] | None:
        try:
            pod: dict[str, Any] = self.cluster.get(f"/api/v1/namespaces/{self.namespace}/pods/{name}")
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 404:
                return None
            raise
        return pod

    def delete_pod(self, name: str, *, grace: int | None) -> None:
        args: Sequence[str] = ("delete", "pod", "-n", self.namespace, name, "--ignore-not-found", "--wait=false")
        if grace is not None:
            args = (*args, f"--grace-period={grace}", *(["--force"] if grace == 0 else []))
        self.cluster.kubectl(*args, check=False)

    def _ensure_secret(self) -> None:
        if self._secret_made:
            return
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": self.credentials_secret, "namespace": self.namespace},
            "stringData": {"AWS_ACCESS_KEY_ID": self._access_key, "AWS_SECRET_ACCESS_KEY": self._secret_key},
        }
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(secret))
        self._secret_made = True


def _volume_name(volume: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", volume.lower()).strip("-") or "volume"


def _user_context(user: str | None) -> dict[str, Any]:
    """ECS's ``user`` (``uid``, ``uid:gid``; names are left to the image) as a securityContext."""
    if not user:
        return {}
    uid, _, gid = user.partition(":")
    context: dict[str, Any] = {}
    if uid.isdigit():
        context["runAsUser"] = int(uid)
        if gid.isdigit():
            context["runAsGroup"] = int(gid)
    return context
