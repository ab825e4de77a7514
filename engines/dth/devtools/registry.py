"""Debian's `docker-registry` (CNCF distribution 2.8) as a subprocess on a free loopback port: a real OCI
registry for local tests and benchmarks, optionally behind htpasswd basic auth.

Run ``python -m dth.devtools.registry [--user NAME --password PASS]`` to start one in the foreground: it
prints its host and URL as one JSON line on stdout and runs until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import http.client
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from dth.devtools.ports import LOOPBACK, free_port

#: Programs the registry needs (Debian packages ``docker-registry`` and, for htpasswd, ``apache2-utils``).
REGISTRY_BINARY = "docker-registry"
HTPASSWD_BINARY = "htpasswd"


def missing_binaries(*, htpasswd: bool = True) -> list[str]:
    wanted = [REGISTRY_BINARY, HTPASSWD_BINARY] if htpasswd else [REGISTRY_BINARY]
    return [name for name in wanted if shutil.which(name) is None]


class DockerRegistry:
    """``docker-registry serve CONFIG`` on ``127.0.0.1:PORT``, storing images under ``workdir``.

    With ``htpasswd_user`` (and ``htpasswd_password``) every request needs basic auth. The storage
    survives :meth:`stop`, so ``start()`` after ``stop()`` (same port by default) brings the same images
    back: tests use that to make a registry fail in the middle of a sync.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        htpasswd_user: str | None = None,
        htpasswd_password: str | None = None,
        port: int | None = None,
        die_with_parent: bool = True,
    ) -> None:
        if htpasswd_user is not None and not htpasswd_password:
            raise ValueError("htpasswd_user needs htpasswd_password")
        self._requested_workdir = workdir
        self.username = htpasswd_user
        self.password = htpasswd_password
        self._requested_port = port
        self._die_with_parent = die_with_parent
        self._workdir: Path | None = None
        self._owns_workdir = False
        self._port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._atexit_registered = False
        self.startup_seconds: float | None = None

    # -- where it is -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``: the registry part of image references."""
        if not self._port:
            raise RuntimeError("the registry has not been started")
        return f"{LOOPBACK}:{self._port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise RuntimeError("the registry has not been started")
        return self._workdir

    @property
    def log_path(self) -> Path:
        return self.workdir / "registry.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- life cycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 30) -> None:
        """Start the registry and wait until ``GET /v2/`` answers."""
        if self._proc is not None:
            raise RuntimeError("the registry is already started")
        if shutil.which(REGISTRY_BINARY) is None:
            raise RuntimeError("docker-registry is not installed (apt-get install docker-registry)")
        began = time.monotonic()
        if self._workdir is None:
            if self._requested_workdir is not None:
                self._workdir = self._requested_workdir
                self._workdir.mkdir(parents=True, exist_ok=True)
            else:
                self._workdir = Path(tempfile.mkdtemp(prefix="dth-registry-"))
                self._owns_workdir = True
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        if self.username is not None:
            self._write_htpasswd()
        setpriv = shutil.which("setpriv") if self._die_with_parent else None
        guard = [setpriv, "--pdeathsig", "KILL"] if setpriv else []
        attempts = 1 if (self._requested_port or self._port) else 3
        for attempt in range(1, attempts + 1):
            self._port = self._requested_port or self._port or free_port()
            config = self._write_config()
            self._log = self.log_path.open("ab")
            self._proc = subprocess.Popen(
                [*guard, REGISTRY_BINARY, "serve", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                self._wait_ready(began + timeout)
            except RuntimeError:
                clash = "address already in use" in self._tail().lower()
                self._terminate()
                if clash and attempt < attempts:
                    self._port = 0
                    continue
                raise
            break
        self.startup_seconds = time.monotonic() - began

    def stop(self, grace: float = 5.0) -> None:
        """Stop the server; the stored images stay (until the temp workdir is removed by :meth:`close`)."""
        self._terminate(grace)

    def close(self) -> None:
        """Stop and forget: removes a workdir this object created."""
        self._terminate()
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False
        if self._owns_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
            self._owns_workdir = False
        self._port = 0

    def wipe(self) -> None:
        """Delete every image (the server must be stopped): a fresh, empty registry on the next start."""
        if self.running:
            raise RuntimeError("stop the registry before wiping it")
        shutil.rmtree(self.workdir / "storage", ignore_errors=True)

    def __enter__(self) -> Self:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- helpers for clients -----------------------------------------------------------------------

    def auth_header(self) -> dict[str, str]:
        """The Authorization header for this registry's user ({} without auth)."""
        if self.username is None or self.password is None:
            return {}
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def request(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, timeout: float = 10
    ) -> tuple[int, dict[str, str], bytes]:
        """One plain HTTP request to the registry, with its credentials."""
        conn = http.client.HTTPConnection(LOOPBACK, self._port, timeout=timeout)
        try:
            conn.request(method, path, headers={**self.auth_header(), **(headers or {})})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    # -- internals -------------------------------------------------------------------------------

    def _write_htpasswd(self) -> None:
        assert self.username is not None and self.password is not None
        # bcrypt, the only scheme distribution accepts; the password goes through stdin, not argv.
        done = subprocess.run(
            [HTPASSWD_BINARY, "-iBn", self.username],
            input=self.password.encode(),
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"htpasswd failed: {done.stderr.decode(errors='replace').strip()}")
        path = self.workdir / "htpasswd"
        path.write_bytes(done.stdout)
        path.chmod(0o600)

    def _write_config(self) -> Path:
        # JSON is YAML: no YAML writer needed. Access logs off; errors still go to the log file.
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.workdir / "storage")},
                "delete": {"enabled": True},
                "cache": {"blobdescriptor": "inmemory"},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": f"{LOOPBACK}:{self._port}", "secret": secrets.token_hex(16)},
        }
        if self.username is not None:
            config["auth"] = {"htpasswd": {"realm": "dth-test", "path": str(self.workdir / "htpasswd")}}
        path = self.workdir / "config.yml"
        path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        return path

    def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None
        while True:
            code = self._proc.poll()
            if code is not None:
                raise RuntimeError(f"docker-registry exited with code {code}:\n{self._tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, _, _ = self.request("GET", "/v2/", timeout=1)
                if status in (200, 401):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not answer in time:\n{self._tail()}")
            time.sleep(0.02)

    def _tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, RuntimeError):
            return "(no log)"

    def _terminate(self, grace: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dth.devtools.registry",
        description="Run docker-registry on 127.0.0.1 until SIGINT/SIGTERM.",
    )
    parser.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    parser.add_argument("--workdir", type=Path, help="keep the images here (default: a temp dir)")
    parser.add_argument("--user", help="require basic auth with this user")
    parser.add_argument("--password", help="the user's password")
    args = parser.parse_args(argv)
    registry = DockerRegistry(args.workdir, htpasswd_user=args.user, htpasswd_password=args.password, port=args.port)
    try:
        registry.start()
    except (RuntimeError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 1
    signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        print(json.dumps({"host": registry.host, "url": registry.url, "workdir": str(registry.workdir)}), flush=True)
        while registry.running:
            if signal.sigtimedwait(signals, 1.0) is not None:
                return 0
        print("docker-registry exited", file=sys.stderr)
        return 1
    finally:
        registry.close()


if __name__ == "__main__":
    sys.exit(main())
