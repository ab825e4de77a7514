"""The operator as a local process (`python -m dth_operator`), as tests and benchmarks run it: each process
logs to a file of its own, and all of a test's processes are stopped together at its end."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


class OperatorProcess(subprocess.Popen[str]):
    """A running operator and the file its output goes to."""

    log: Path


class OperatorProcesses:
    """The operators one test starts; `stop_all` ends them (SIGTERM, then SIGKILL after a grace period)."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self.started: list[OperatorProcess] = []

    def start(self, env: dict[str, str], arguments: Sequence[str]) -> OperatorProcess:
        log = self._log_dir / f"operator-{len(self.started)}.log"
        with log.open("w") as output:  # the child keeps its own copy of the descriptor
            process = OperatorProcess(
                [sys.executable, "-m", "dth_operator", *arguments],
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
            )
        process.log = log
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            stop(process)


def stop(process: subprocess.Popen[str], grace: float = 20) -> None:
    """SIGTERM, as Kubernetes stops a pod; SIGKILL if the operator has not ended after `grace` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
