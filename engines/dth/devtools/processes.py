"""Process helpers shared by the local server launchers (radosgw, Kubernetes)."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self


def tail_lines(path: Path, lines: int, max_bytes: int = 256 * 1024) -> list[str]:
    """The last ``lines`` lines of a file, reading at most its last ``max_bytes`` bytes."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()[-lines:]


def parent_death_guard(enabled: bool) -> list[str]:
    """A command prefix that makes the kernel SIGKILL the command when its parent dies."""
    setpriv = shutil.which("setpriv") if enabled else None
    return [setpriv, "--pdeathsig", "KILL"] if setpriv else []


def kill_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # Each process leads its own session (start_new_session=True), so its pid is its group id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


class ServerProcesses:
    """The life cycle the local server launchers share: a work directory (temporary unless given), daemons
    started in their own sessions with their output in ``log/<name><suffix>``, a start that is tried again
    when a port picked as free was taken meanwhile, and a stop that ends the last started first.

    A launcher says what it needs (:meth:`_check_binaries`) and how one attempt starts (:meth:`_start_once`).
    """

    _workdir_prefix = "dth-"
    _log_suffix = ".log"
    _what = "the servers"  # for error messages: "<what> failed to start"
    _port_clash = "address already in use"  # what the daemons log when a port is taken (any case)
    _stop_grace = 10.0
    _log_tail_lines = 40

    def __init__(self, workdir: Path | None, *, die_with_parent: bool) -> None:
        self._requested_workdir = workdir
        self._die_with_parent = die_with_parent
        self._workdir: Path | None = None
        self._owns_workdir = False
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._outputs: list[IO[bytes]] = []
        self._atexit_registered = False
        self._began = 0.0
        self.startup_seconds: float | None = None
        """Wall time the last successful :meth:`start` took."""
        self.startup_phases: dict[str, float] = {}
        """Seconds since the start of :meth:`start` at which each start-up step ended."""

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise RuntimeError(f"{self._what}: not started")
        return self._workdir

    @property
    def log_dir(self) -> Path:
        return self.workdir / "log"

    @property
    def running(self) -> bool:
        return bool(self._procs) and all(proc.poll() is None for proc in self._procs.values())

    def start(self, timeout: float = 60) -> None:
        """Start and wait until ready; RuntimeError, with the tails of the logs, when that does not happen
        within ``timeout`` seconds or a process dies."""
        if self._procs:
            raise RuntimeError(f"{self._what}: already started")
        self._check_binaries()
        began = time.monotonic()
        self._began = began
        self.startup_phases = {}
        deadline = began + timeout
        self._prepare_workdir()
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        attempts = 3
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(deadline)
            except BaseException as exc:
                if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit
                    self.stop()
                    raise
                port_clash = self._logs_mention(self._port_clash)
                self._terminate_processes()
                if port_clash and attempt < attempts and time.monotonic() < deadline:
                    continue
                self.stop()
                if isinstance(exc, RuntimeError):
                    raise
                raise RuntimeError(f"{self._what} failed to start: {exc!r}") from exc
            break
        self.startup_seconds = time.monotonic() - began

    def stop(self, grace: float | None = None) -> None:
        """Stop the processes (the last started first; SIGKILL after ``grace`` s) and remove a temporary
        workdir."""
        self._terminate_processes(self._stop_grace if grace is None else grace)
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False
        self._release()
        if self._owns_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
            self._owns_workdir = False

    def __enter__(self) -> Self:
        if not self._procs:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def run_in_foreground(self, timeout: float, describe: Callable[[], dict[str, Any]]) -> int:
        """A launcher's command line: start, print what clients need as one JSON line, then serve until SIGINT
        or SIGTERM (exit code 0) or until a process dies (1)."""
        try:
            self.start(timeout=timeout)
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
        try:
            info = {**describe(), "workdir": str(self.workdir), "startup_seconds": round(self.startup_seconds or 0, 2)}
            print(json.dumps(info), flush=True)
            return self.wait_for_signal()
        finally:
            self.stop()

    def wait_for_signal(self) -> int:
        """Block until SIGINT or SIGTERM (exit code 0) or until a process dies (exit code 1): the command line
        launchers' foreground."""
        signals = {signal.SIGINT, signal.SIGTERM}
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        try:
            while True:
                if signal.sigtimedwait(signals, 1.0) is not None:
                    return 0
                if not self.running:
                    print(f"a process of {self._what} exited\n{self.log_tails()}", file=sys.stderr)
                    return 1
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def log_tails(self, lines: int | None = None) -> str:
        """The last lines of every log file, for error messages."""
        if self._workdir is None or not self.log_dir.is_dir():
            return "(no logs)"
        parts: list[str] = []
        for path in sorted(self.log_dir.iterdir()):
            if not path.is_file():
                continue
            text = tail_lines(path, lines or self._log_tail_lines)
            if not text:
                continue
            parts.append(f"----- {path.name} (last {len(text)} lines) -----")
            parts.extend(text)
        return "\n".join(parts) if parts else "(logs are empty)"

    # -- for the launchers ---------------------------------------------------------------------

    def _check_binaries(self) -> None:
        """Raise RuntimeError naming what is missing."""

    def _start_once(self, deadline: float) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        """Forget what a stopped run leaves behind (ports, extra folders)."""

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def _prepare_workdir(self) -> None:
        if self._requested_workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix=self._workdir_prefix))
            self._owns_workdir = True
        else:
            self._workdir = self._requested_workdir.resolve()
            self._workdir.mkdir(parents=True, exist_ok=True)
            self._owns_workdir = False

    def _phase(self, name: str) -> None:
        self.startup_phases[name] = round(time.monotonic() - self._began, 3)

    def _popen(self, name: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        output = (self.log_dir / f"{name}{self._log_suffix}").open("ab")
        self._outputs.append(output)
        return subprocess.Popen(
            [*parent_death_guard(self._die_with_parent), *argv],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=self._env(),
            start_new_session=True,
        )

    def _spawn(self, name: str, argv: Sequence[str]) -> None:
        self._procs[name] = self._popen(name, argv)

    def _logs_mention(self, text: str) -> bool:
        if self._workdir is None or not self.log_dir.is_dir():
            return False
        for path in self.log_dir.iterdir():
            with contextlib.suppress(OSError):
                if text.lower() in path.read_text(errors="replace").lower():
                    return True
        return False

    def _terminate_processes(self, grace: float | None = None) -> None:
        # The last started first: a daemon whose dependency is gone may wait for it instead of exiting.
        for proc in reversed(self._procs.values()):
            if proc.poll() is None:
                kill_group(proc, signal.SIGTERM)
            try:
                proc.wait(self._stop_grace if grace is None else grace)
            except subprocess.TimeoutExpired:
                kill_group(proc, signal.SIGKILL)
                proc.wait()
        self._procs.clear()
        for output in self._outputs:
            output.close()
        self._outputs.clear()
