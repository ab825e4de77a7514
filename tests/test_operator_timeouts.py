"""The operator's own Kubernetes API calls (outside kopf, which has its own timeouts) end when the API server
never answers: status writes and Secret reads time out instead of stalling a handler for good."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import kopf
import kubernetes
import pytest

from dth_operator import kube, secrets, status_writes


@pytest.fixture
def silent_api_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A listening socket that accepts connections (the kernel's backlog does) and never answers a byte; the
    kubernetes client's default configuration points at it, with a short timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    host = f"http://127.0.0.1:{listener.getsockname()[1]}"
    configuration = kubernetes.client.Configuration()
    configuration.host = host
    configuration.retries = 0
    previous = kubernetes.client.Configuration.get_default_copy()
    kubernetes.client.Configuration.set_default(configuration)
    monkeypatch.setattr(status_writes, "_kubernetes", kubernetes.client.CustomObjectsApi())
    monkeypatch.setattr(kube, "REQUEST_TIMEOUT", (2.0, 2.0))
    try:
        yield host
    finally:
        kubernetes.client.Configuration.set_default(previous)
        listener.close()


def ends(call: Callable[[], Any]) -> BaseException | None:
    """Run the call in a thread; the exception it ended with. The bound is far above the 2 s timeout: a call
    still running then has none."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the call never ended: no timeout"
    return outcome[0]


def test_status_writes_end_when_the_api_server_never_answers(silent_api_server: str) -> None:
    error = ends(lambda: status_writes.write_status("ns", "task", {"phase": "Running"}))
    assert isinstance(error, kopf.TemporaryError)
    assert "did not answer" in str(error)


def test_secret_reads_end_when_the_api_server_never_answers(silent_api_server: str) -> None:
    error = ends(lambda: secrets._kubernetes_secret("ns", "keys", secrets.REQUIRED_KEYS))
    assert isinstance(error, kopf.TemporaryError)
    assert "did not answer" in str(error)
