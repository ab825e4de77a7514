"""The live progress bar of a run on a terminal, for S3 and image syncs alike.

A display exists to be looked at, never to decide a run's outcome: every failure inside it (a column
that cannot render, a terminal that goes away, a bug in rich or here) turns the bar off with one
warning, and the copy goes on. The callers hand over finished strings, so no column formats a number
that may be missing (rich cannot format the `None` total of a scan still under way).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.progress import Progress, ProgressColumn, TaskID

    from dth.spec.model import TransferCounters

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Frame:
    """What the bar shows at one moment. `total` None: not known yet (the bar pulses)."""

    phase: str
    completed: int
    total: int | None
    count: str  # "120/3000 objects"
    detail: str = ""  # "12.0 MiB copied  4.1 MiB/s"


class LiveProgress:
    """A rich progress bar on `stream` (standard error by default) that cannot fail the run."""

    def __init__(
        self, first_phase: str, frame_of: Callable[[TransferCounters, bool], Frame], stream: TextIO | None = None
    ) -> None:
        self._first_phase = first_phase
        self._frame_of = frame_of
        self._stream = stream if stream is not None else sys.stderr
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._lock = threading.Lock()
        self.failed = False  # the display broke and was turned off; the run went on

    def __enter__(self) -> LiveProgress:
        self._guarded(self._start)
        return self

    def __exit__(self, *_: object) -> None:
        # Stopped even after a failure: rich's refresh thread and the terminal's state must be released.
        progress, self._progress = self._progress, None
        if progress is not None:
            try:
                progress.stop()
            except Exception as error:  # a display must never stop a copy
                self.give_up(error)

    def update(self, counters: TransferCounters, phase_done: bool) -> None:
        """The runs' progress callback (called from their progress thread): whatever goes wrong in
        drawing the counters stays here."""
        self._guarded(lambda: self._show(self._frame_of(counters, phase_done)))

    def give_up(self, error: BaseException) -> None:
        """Turn the bar off for the rest of the run (it renders nothing from now on), saying why once."""
        with self._lock:
            if self.failed:
                return
            self.failed = True
        log.warning("progress display turned off: %s: %s", type(error).__name__, error)

    def _guarded(self, step: Callable[[], None]) -> None:
        if self.failed:
            return
        try:
            step()
        except Exception as error:  # a display must never stop a copy
            self.give_up(error)

    def _start(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

        self._progress = _guarded_progress(
            self,
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[count]}"),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            transient=False,
            console=Console(file=self._stream),
        )
        self._task = self._progress.add_task(self._first_phase, total=None, count="", detail="")
        self._progress.start()

    def _show(self, frame: Frame) -> None:
        if self._progress is None or self._task is None:
            return
        self._progress.update(
            self._task,
            description=frame.phase,
            completed=frame.completed,
            total=frame.total,
            count=frame.count,
            detail=frame.detail,
        )


def _guarded_progress(owner: LiveProgress, *columns: ProgressColumn, **options: Any) -> Progress:
    """rich is imported only when a bar is shown: commands in pipes never pay for it."""
    from rich.progress import Progress
    from rich.text import Text

    class GuardedProgress(Progress):
        """rich renders on its own refresh thread, where a failure would kill the thread and print a
        traceback over the screen: here a failed render draws nothing and turns the display off."""

        def get_renderables(self) -> Iterable[RenderableType]:
            if not owner.failed:
                try:
                    return [self.make_tasks_table(self.tasks)]
                except Exception as error:  # see the class's docstring
                    owner.give_up(error)
            return [Text("")]

    return GuardedProgress(*columns, **options)
