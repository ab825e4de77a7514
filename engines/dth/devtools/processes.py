"""Process helpers shared by the local server launchers (radosgw, Kubernetes)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path


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
