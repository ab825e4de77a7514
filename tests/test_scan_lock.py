"""The scan lock's renewals: one that raises is retried while the lock surely still holds, then the scan is
stopped and the failure logged (the contract tests of test_store.py cover a lock taken over by another)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dth.state.scanlock import ScanLock, ScanLockLostError
from dth.state.store import SqliteStatusStore


class UnreachableAfterwards(SqliteStatusStore):
    """A store whose lock renewals raise once `unreachable` is set (the table throttled, the network gone)."""

    unreachable = False

    def acquire_scan_lock(self, task: str, owner: str, ttl_seconds: float) -> bool:
        if self.unreachable:
            raise ConnectionError("could not connect to the endpoint URL")
        return super().acquire_scan_lock(task, owner, ttl_seconds)


def test_renewals_that_raise_until_the_lock_may_have_expired_stop_the_scan_and_are_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = UnreachableAfterwards(tmp_path / "status.db")
    lock = ScanLock(store, "task", "finder-a", ttl_seconds=0.6)
    assert lock.acquire()
    with caplog.at_level(logging.WARNING, logger="dth.state.scanlock"), lock.renewing():
        store.unreachable = True
        assert lock.wait_lost(timeout=30)
        with pytest.raises(ScanLockLostError, match=r"could not be renewed.*could not connect"):
            lock.check()
    messages = [record.getMessage() for record in caplog.records]
    assert "scan lock renewal failed, retrying" in messages
    assert "scan lock lost: stopping the scan" in messages
    store.close()
