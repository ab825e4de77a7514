"""The live bar can never fail the run it shows: a broken frame, a broken render on rich's own refresh
thread, a terminal that goes away. Each turns the bar off with one warning; the copy goes on."""

from __future__ import annotations

import io
import logging
import threading
from pathlib import Path

import pytest

from dth.cli.live import Frame, LiveProgress
from dth.cli.report import progress_display
from dth.devtools.sites import S3Site
from dth.devtools.waiting import wait_for
from dth.s3.sync import StandaloneSync
from dth.spec.load import parse_task_spec
from dth.spec.model import S3TaskSpec, TransferCounters


class TerminalStream(io.StringIO):
    """What rich takes for a terminal: it draws its live bar only where `isatty()` is true."""

    def isatty(self) -> bool:
        return True


def broken_frame(_: TransferCounters, __: bool) -> Frame:
    raise ValueError("a frame that cannot be drawn")


def test_the_scanning_phase_draws_without_a_total() -> None:
    """The crash every terminal saw: rich could not format the `None` total of the scan."""
    stream = TerminalStream()
    with progress_display(stream) as display:
        display.update(TransferCounters(), False)
        display.update(TransferCounters(found=40, copied=3), False)
        display.update(TransferCounters(found=40, copied=40, bytes_copied=4096), True)
    assert not display.failed
    assert "40/40 objects" in stream.getvalue()


def test_a_frame_that_raises_turns_the_bar_off_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), LiveProgress("scanning", broken_frame, TerminalStream()) as display:
        for _ in range(3):
            display.update(TransferCounters(found=1), True)  # never raises
    assert display.failed
    assert [r.getMessage() for r in caplog.records].count(
        "progress display turned off: ValueError: a frame that cannot be drawn"
    ) == 1


def test_a_render_that_raises_on_richs_thread_turns_the_bar_off(caplog: pytest.LogCaptureFixture) -> None:
    failures: list[BaseException] = []
    previous_hook = threading.excepthook
    threading.excepthook = lambda args: failures.append(args.exc_value)  # type: ignore[assignment]
    try:
        with caplog.at_level(logging.WARNING), LiveProgress("scanning", _frame_with_bad_count, TerminalStream()) as d:
            d.update(TransferCounters(found=2), True)
            wait_for(lambda: d.failed, timeout=10, what="the refresh thread to meet the broken render")
    finally:
        threading.excepthook = previous_hook
    assert failures == [], "rich's refresh thread died with an exception"
    assert any("progress display turned off" in r.getMessage() for r in caplog.records)


def _frame_with_bad_count(_: TransferCounters, __: bool) -> Frame:
    # Text rich's markup cannot parse: updating the bar accepts it, drawing it (on rich's thread) fails.
    return Frame("copying", 1, 10, "[/unbalanced] 1/10 objects")


def test_a_broken_display_never_stops_a_real_copy(rgw_site: S3Site, unique_name: str, tmp_path: Path) -> None:
    client = rgw_site.client()
    source, destination = f"{unique_name}-src", f"{unique_name}-dst"
    for bucket in (source, destination):
        client.create_bucket(Bucket=bucket)
    for number in range(50):
        client.put_object(Bucket=source, Key=f"k/{number}", Body=b"x" * number)
    spec = parse_task_spec(
        {
            "type": "S3",
            "source": {"type": "S3_Compatible", "endpoint": rgw_site.url, "bucket": source},
            "destination": {"type": "S3_Compatible", "endpoint": rgw_site.url, "bucket": destination},
        }
    )
    assert isinstance(spec, S3TaskSpec)
    display = LiveProgress("scanning", broken_frame, TerminalStream())
    sync = StandaloneSync(
        spec, task_name="broken-display", state_path=tmp_path / "state.sqlite", on_progress=display.update
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", rgw_site.access_key)
        env.setenv("AWS_SECRET_ACCESS_KEY", rgw_site.secret_key)
        with display:
            result = sync.run()
    assert display.failed
    assert result.accounted and result.counters.copied == 50
