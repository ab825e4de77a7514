"""A real terminal for tests: a command run in a tmux pane, the screen read back as a person sees it.

A command can work in CI's pipes and still crash on a terminal (rich draws a live bar only when standard
error is a TTY). tmux gives the command a pseudo-terminal of a fixed size, takes keys (`send_keys("C-c")`),
and shows its screen with `capture-pane`. Each Terminal has a tmux server of its own (its own socket), so
tests never touch a user's sessions or each other's.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from dth.devtools.waiting import wait_for


def tmux_available() -> bool:
    return shutil.which("tmux") is not None


class Terminal:
    """`command` running in a `width` x `height` terminal. The pane stays after the command exits, so
    its last screen and exit status can be read."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        environment: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        width: int = 120,
        height: int = 40,
    ) -> None:
        self._workdir = Path(tempfile.mkdtemp(prefix="dth-terminal-"))
        self._socket = str(self._workdir / "tmux.sock")
        self._session = f"dth-{uuid.uuid4().hex[:8]}"
        # The command's environment goes through a file the shell reads, never through tmux's or the
        # shell's arguments: test credentials stay out of `ps`.
        env_file = self._workdir / "environment"
        env_file.write_text(
            "".join(f"export {name}={shlex.quote(value)}\n" for name, value in (environment or {}).items()),
            encoding="utf-8",
        )
        env_file.chmod(0o600)
        # The shell records the exit status itself: tmux's #{pane_dead_status} stays empty for a command
        # that ends quickly (seen with tmux 3.3a).
        self._status_file = self._workdir / "status"
        status_file = shlex.quote(str(self._status_file))
        script = f". {shlex.quote(str(env_file))}; {shlex.join(command)}; echo $? > {status_file}.tmp && mv {status_file}.tmp {status_file}"
        if cwd is not None:
            script = f"cd {shlex.quote(str(cwd))} && {script}"
        # Set before the command starts: a command that ends at once must still leave its pane behind.
        config = self._workdir / "tmux.conf"
        config.write_text("set -g remain-on-exit on\nset -g history-limit 5000\nset -g status off\n", encoding="utf-8")
        self._tmux(
            "-f",
            str(config),
            "new-session",
            "-d",
            "-s",
            self._session,
            "-x",
            str(width),
            "-y",
            str(height),
            "bash --norc --noprofile -c " + shlex.quote(script),
        )

    def _tmux(self, *arguments: str) -> str:
        result = subprocess.run(
            ["tmux", "-S", self._socket, *arguments],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "TERM": "xterm-256color"},
        )
        return result.stdout

    def screen(self) -> str:
        """What the terminal shows now, scrollback included, trailing blank lines dropped."""
        text = self._tmux("capture-pane", "-p", "-J", "-S", "-", "-t", self._session)
        return text.rstrip("\n")

    def send_keys(self, *keys: str) -> None:
        """tmux key names: "C-c" is Ctrl-C, "Enter"..."""
        self._tmux("send-keys", "-t", self._session, *keys)

    def exit_status(self) -> int | None:
        """The command's exit status once it has ended, else None."""
        try:
            return int(self._status_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def wait_for_screen(self, check: Callable[[str], bool], timeout: float, what: str) -> str:
        """The first screen for which `check` holds."""
        screen: str = wait_for(
            lambda: (lambda shown: shown if check(shown) else None)(self.screen()),
            timeout=timeout,
            interval=0.05,
            what=what,
            detail=lambda: f"the screen:\n{self.screen()}",
        )
        return screen

    def wait_for_exit(self, timeout: float) -> int:
        wait_for(
            lambda: self.exit_status() is not None,
            timeout=timeout,
            interval=0.1,
            what="the command to exit",
            detail=lambda: f"the screen:\n{self.screen()}",
        )
        status = self.exit_status()
        assert status is not None
        return status

    def frames_until_exit(self, timeout: float, interval: float = 0.05) -> list[str]:
        """Every distinct screen seen while the command runs, the last one included."""
        frames: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ended = self.exit_status() is not None
            screen = self.screen()
            if not frames or frames[-1] != screen:
                frames.append(screen)
            if ended:
                return frames
            time.sleep(interval)
        raise TimeoutError(f"the command did not exit in {timeout} s; last screen:\n{frames[-1] if frames else ''}")

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self._socket, "kill-server"], capture_output=True, check=False)
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
