"""moto server as a subprocess on a free loopback port: the AWS control plane for local tests.

Run ``python -m dth.devtools.moto`` to start one in the foreground: it prints the endpoint
URL as one JSON line on stdout and runs until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import http.client
import importlib.util
import json
import os
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

#: Credentials to hand to clients: moto accepts any, but botocore insists on some.
MOTO_ACCESS_KEY = "testing"
MOTO_SECRET_KEY = "testing"


def moto_server_command() -> list[str] | None:
    """The command that starts moto's server (its application, with CloudFormation requests serialised:
    see ``dth.devtools.moto_app``), or None when ``moto[server]`` is not installed."""
    if importlib.util.find_spec("moto") is not None and importlib.util.find_spec("flask") is not None:
        return [sys.executable, "-m", "dth.devtools.moto_app"]
    return None


class MotoServer:
    """``moto_server -H 127.0.0.1 -p PORT`` in its own process group.

    With ``die_with_parent`` (and util-linux ``setpriv`` on PATH) the kernel kills the server
    when the thread that started it dies, even by SIGKILL.
    """

    def __init__(self, *, port: int | None = None, die_with_parent: bool = True) -> None:
        self._requested_port = port
        self._die_with_parent = die_with_parent
        self._port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_dir: Path | None = None
        self._atexit_registered = False
        self.access_key = MOTO_ACCESS_KEY
        self.secret_key = MOTO_SECRET_KEY
        self.startup_seconds: float | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def endpoint_url(self) -> str:
        if not self._port:
            raise RuntimeError("moto server has not been started")
        return f"http://{LOOPBACK}:{self._port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30) -> None:
        """Start moto server and wait until it answers HTTP requests."""
        if self._proc is not None:
            raise RuntimeError("moto server is already started")
        command = moto_server_command()
        if command is None:
            raise RuntimeError("moto server is not installed (pip install 'moto[server]')")
        setpriv = shutil.which("setpriv") if self._die_with_parent else None
        guard = [setpriv, "--pdeathsig", "KILL"] if setpriv else []
        began = time.monotonic()
        deadline = began + timeout
        self._log_dir = Path(tempfile.mkdtemp(prefix="dth-moto-"))
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        attempts = 1 if self._requested_port else 3
        for attempt in range(1, attempts + 1):
            self._port = self._requested_port or free_port()
            log_path = self._log_dir / f"moto-{attempt}.log"
            self._log = log_path.open("wb")
            self._proc = subprocess.Popen(
                [*guard, *command, "-H", LOOPBACK, "-p", str(self._port)],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env={k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"},
                start_new_session=True,
            )
            try:
                self._wait_ready(deadline, log_path)
            except RuntimeError:
                clash = "Address already in use" in log_path.read_text(errors="replace")
                self._terminate()
                if clash and attempt < attempts:
                    continue
                self.stop()
                raise
            break
        self.startup_seconds = time.monotonic() - began

    def stop(self, grace: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``grace`` seconds)."""
        self._terminate(grace)
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False
        if self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)
            self._log_dir = None
        self._port = 0

    def reset(self) -> None:
        """Forget every resource (``POST /moto-api/reset``)."""
        status, body = self._request("POST", "/moto-api/reset")
        if status != 200:
            raise RuntimeError(f"moto reset failed: HTTP {status} {body[:200]!r}")

    def __enter__(self) -> Self:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _request(self, method: str, path: str, timeout: float = 10) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(LOOPBACK, self._port, timeout=timeout)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def _wait_ready(self, deadline: float, log_path: Path) -> None:
        assert self._proc is not None
        while True:
            code = self._proc.poll()
            if code is not None:
                raise RuntimeError(f"moto server exited with code {code}:\n{_tail(log_path)}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                self._request("GET", "/moto-api/", timeout=1)
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not answer in time:\n{_tail(log_path)}")
            time.sleep(0.05)

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


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dth.devtools.moto",
        description="Run moto server on 127.0.0.1 until SIGINT/SIGTERM.",
    )
    parser.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    parser.add_argument("--timeout", type=float, default=30.0, help="start-up timeout in seconds")
    args = parser.parse_args(argv)
    server = MotoServer(port=args.port)
    try:
        server.start(timeout=args.timeout)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        info = {
            "endpoint_url": server.endpoint_url,
            "access_key": server.access_key,
            "secret_key": server.secret_key,
            "region": "us-east-1",
        }
        print(json.dumps(info), flush=True)
        while server.running:
            if signal.sigtimedwait(signals, 1.0) is not None:
                return 0
        print("moto server exited", file=sys.stderr)
        return 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
