"""Local processes for the web console's tests and benchmark: `dth console` itself, a real OpenID Connect
provider (oidc-provider-mock) on 127.0.0.1, and the console's ServiceAccount identity on the local API
server, with the RBAC the chart gives it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from dth.devtools.kubernetes import LocalKubernetes
from dth.devtools.ports import LOOPBACK, free_port, port_is_open
from dth.devtools.waiting import wait_for

#: The console ServiceAccount's cluster role: what the chart grants it (console-ops writes the chart's copy).
CONSOLE_CLUSTER_ROLE: dict[str, Any] = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRole",
    "metadata": {"name": "dth-console-test"},
    "rules": [
        {"apiGroups": [""], "resources": ["users", "groups"], "verbs": ["impersonate"]},
        {"apiGroups": ["dth.io"], "resources": ["transfertasks"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
    ],
}


class _Process:
    """A local server process logging to a file: started, then waited for until it answers."""

    #: How the process is named in errors and waits.
    what = "process"

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self._argv = argv
        self._log_path = log
        self._env = env
        self.process: subprocess.Popen[bytes] | None = None

    def _start(self) -> None:
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with self._log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self._argv, stdout=log, stderr=subprocess.STDOUT, env=self._env, start_new_session=True
            )

    def start(self) -> Self:
        self._start()

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.what} exited: {self.log_text()[-2000:]}")
            return self._answers()

        wait_for(ready, timeout=60, what=self.what)
        return self

    def _answers(self) -> bool:
        """Whether the server answers yet."""
        raise NotImplementedError

    def log_text(self) -> str:
        try:
            return self._log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


class OidcProvider(_Process):
    """oidc-provider-mock on a free port, with predefined users (claims as JSON, `sub` required)."""

    what = "oidc-provider-mock"

    def __init__(self, log: Path, users: list[dict[str, Any]]) -> None:
        self.port = free_port()
        program = shutil.which("oidc-provider-mock")
        argv = [program] if program else [sys.executable, "-m", "oidc_provider_mock"]
        argv += ["--host", LOOPBACK, "--port", str(self.port)]
        for user in users:
            argv += ["--user-claims", json.dumps(user)]
        super().__init__(argv, log)

    @property
    def issuer(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.issuer}/.well-known/openid-configuration", timeout=2):
                return True
        except OSError:
            return False


class ConsoleProcess(_Process):
    """`dth console` on a free port: local mode with a kubeconfig, or in-cluster mode with `settings`."""

    what = "dth console"

    def __init__(self, log: Path, *, kubeconfig: Path | None = None, settings: dict[str, str] | None = None) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DTH_CONSOLE_")}
        env.update(settings or {})
        argv = [sys.executable, "-m", "dth", "console", "--port", str(self.port)]
        if kubeconfig is not None:
            argv += ["--kubeconfig", str(kubeconfig)]
        super().__init__(argv, log, env)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _answers(self) -> bool:
        return port_is_open(self.port)


def service_account_kubeconfig(kubernetes: LocalKubernetes, namespace: str, name: str, path: Path) -> Path:
    """A ServiceAccount with the console's cluster role, and a kubeconfig holding its token (the token
    controller of kube-controller-manager writes it into a Secret)."""
    kubernetes.kubectl("create", "namespace", namespace, check=False)
    kubernetes.kubectl("-n", namespace, "create", "serviceaccount", name, check=False)
    kubernetes.kubectl("apply", "-f", "-", input=yaml.safe_dump(CONSOLE_CLUSTER_ROLE))
    kubernetes.kubectl(
        "create",
        "clusterrolebinding",
        f"{name}-{namespace}",
        "--clusterrole=dth-console-test",
        f"--serviceaccount={namespace}:{name}",
        check=False,
    )

    def token() -> str:
        account = json.loads(kubernetes.kubectl("-n", namespace, "get", "serviceaccount", name, "-o", "json").stdout)
        for reference in account.get("secrets") or []:
            secret = json.loads(
                kubernetes.kubectl("-n", namespace, "get", "secret", reference["name"], "-o", "json").stdout
            )
            if secret.get("data", {}).get("token"):
                import base64

                return base64.b64decode(secret["data"]["token"]).decode()
        return ""

    bearer = wait_for(token, timeout=60, what=f"the token of ServiceAccount {namespace}/{name}")
    admin = yaml.safe_load(kubernetes.kubeconfig.read_text())
    for user in admin["users"]:
        user["user"] = {"token": bearer}
    path.write_text(yaml.safe_dump(admin))
    return path
