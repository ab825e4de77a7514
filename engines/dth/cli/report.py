"""What a run shows its user: a progress bar on a terminal, a one-line summary otherwise, JSON on request."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from dth.cli.live import Frame, LiveProgress
from dth.s3.diff import Change, ChangeKind
from dth.s3.sync import SyncResult
from dth.spec.model import TransferCounters

MAX_LISTED = 50


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def progress_display(stream: TextIO | None = None) -> LiveProgress:
    """The bar of an S3 sync: objects done of found, bytes copied and the rate since the start."""
    started = time.monotonic()

    def frame(counters: TransferCounters, scan_finished: bool) -> Frame:
        done = counters.copied + counters.skipped + counters.failed
        elapsed = max(time.monotonic() - started, 1e-6)
        return Frame(
            phase="copying" if scan_finished else "scanning+copying",
            completed=done,
            total=counters.found if scan_finished or counters.found else None,
            count=f"{done}/{counters.found} objects",
            detail=f"{human_bytes(counters.bytes_copied)} copied  {human_bytes(counters.bytes_copied / elapsed)}/s",
        )

    return LiveProgress("scanning", frame, stream)


def summary_line(result: SyncResult) -> str:
    c = result.counters
    elapsed = max(result.elapsed, 1e-6)
    if result.dry_run:
        scan = result.scan
        return (
            f"dry run: {scan.to_copy} to copy ({human_bytes(scan.to_copy_bytes)}), {scan.unchanged} unchanged, "
            f"{scan.unavailable} unavailable, {scan.to_delete} to delete, of {scan.found} found"
        )
    if result.interrupted:
        done = c.copied + c.skipped + c.failed
        return (
            f"interrupted: copied {c.copied} ({human_bytes(c.bytes_copied)}), skipped {c.skipped}, "
            f"failed {c.failed}, of {c.found} found so far in {elapsed:.1f} s; {c.found - done} not done, "
            "run the same command again to finish"
        )
    return (
        f"{'done' if result.accounted else 'INCOMPLETE'}: copied {c.copied} ({human_bytes(c.bytes_copied)}), "
        f"skipped {c.skipped}, deleted {c.deleted}, failed {c.failed}, of {c.found} found "
        f"in {elapsed:.1f} s ({(c.copied + c.skipped) / elapsed:.0f} objects/s, "
        f"{human_bytes(c.bytes_copied / elapsed)}/s)"
    )


def print_text(result: SyncResult, out: TextIO = sys.stdout) -> None:
    print(summary_line(result), file=out)
    if result.error:
        print(f"error: {result.error}", file=out)
    for record in result.skipped[:MAX_LISTED]:
        print(f"skipped: {record.key}: {record.reason}", file=out)
    for record in result.failed[:MAX_LISTED]:
        print(f"failed: {record.key}: {record.reason or record.last_error}", file=out)
    hidden = max(0, len(result.failed) - MAX_LISTED) + max(0, len(result.skipped) - MAX_LISTED)
    if hidden:
        print(f"... and {hidden} more (see --output json)", file=out)


def as_json(result: SyncResult) -> dict[str, Any]:
    return {
        "run": result.run_id,
        "ok": result.accounted if not result.dry_run else True,
        "interrupted": result.interrupted,
        "dryRun": result.dry_run,
        "elapsedSeconds": round(result.elapsed, 3),
        "counters": result.counters.model_dump(by_alias=True),
        "plan": {
            "found": result.scan.found,
            "toCopy": result.scan.to_copy,
            "unchanged": result.scan.unchanged,
            "unavailable": result.scan.unavailable,
            "toDelete": result.scan.to_delete,
        },
        "error": result.error,
        "failed": [{"key": r.key, "reason": r.reason or r.last_error, "attempts": r.attempts} for r in result.failed],
        "skipped": [{"key": r.key, "reason": r.reason} for r in result.skipped],
    }


def print_json(result: SyncResult, out: TextIO = sys.stdout) -> None:
    print(json.dumps(as_json(result), ensure_ascii=False), file=out)


def print_change(change: Change, out: TextIO = sys.stdout) -> None:
    """A dry run's plan, one action per line."""
    if change.kind is ChangeKind.COPY:
        assert change.source is not None
        print(f"copy {change.key} ({human_bytes(change.source.size)})", file=out)
    elif change.kind is ChangeKind.DELETE:
        print(f"delete {change.key}", file=out)
    elif change.kind is ChangeKind.UNAVAILABLE:
        print(f"skip {change.key}: {change.reason}", file=out)
