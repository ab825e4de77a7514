"""One watch of the TransferTasks per console process, kept as an in-memory copy and fanned out to every
open page over server-sent events: browsers never poll, and a list of 1,000 tasks renders from memory.

The watch runs as the console itself (it may list and watch TransferTasks everywhere); each subscriber
only receives the tasks of namespaces the page's user may list, decided by the caller's filter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dth.console.kube import Kube, KubeError, tasks_path

log = logging.getLogger(__name__)

Key = tuple[str, str]  # namespace, name
#: How many recent samples of a task's copied bytes and objects are kept, for its rate.
_SAMPLES = 12


@dataclass
class Sample:
    at: float
    objects: int
    bytes: int


@dataclass
class Change:
    kind: str  # ADDED, MODIFIED or DELETED
    task: dict[str, Any]

    @property
    def key(self) -> Key:
        meta = self.task.get("metadata", {})
        return str(meta.get("namespace", "")), str(meta.get("name", ""))


@dataclass(eq=False)  # each page its own subscriber: kept in a set by identity
class Subscriber:
    accepts: Callable[[Key], bool]
    queue: asyncio.Queue[Change] = field(default_factory=lambda: asyncio.Queue(maxsize=1000))


def _done(task: dict[str, Any]) -> tuple[int, int]:
    objects = (task.get("status") or {}).get("objects") or {}
    return (
        int(objects.get("copied", 0)) + int(objects.get("skipped", 0)),
        int(objects.get("bytesCopied", 0)) + int(objects.get("bytesSkipped", 0)),
    )


class TaskStore:
    """The tasks the watch has seen, their recent progress samples, and the pages listening."""

    def __init__(self, kube: Kube, namespaces: tuple[str, ...] = (), clock: Callable[[], float] = time.time) -> None:
        self._kube = kube
        self._namespaces = namespaces
        self._clock = clock
        self.tasks: dict[Key, dict[str, Any]] = {}
        self.samples: dict[Key, list[Sample]] = {}
        self._subscribers: set[Subscriber] = set()
        self._ready = asyncio.Event()
        self._runners: list[asyncio.Task[None]] = []
        self.error: str | None = None

    # --- the watch -------------------------------------------------------------------------------------
    def start(self) -> None:
        scopes: list[str | None] = list(self._namespaces) or [None]
        self._pending_lists = len(scopes)
        self._runners = [asyncio.create_task(self._run(scope)) for scope in scopes]

    async def stop(self) -> None:
        for runner in self._runners:
            runner.cancel()
        for runner in self._runners:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner

    async def ready(self, timeout: float = 10.0) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)

    async def _run(self, namespace: str | None) -> None:
        delay = 1.0
        first = True
        while True:
            try:
                listed = await self._kube.request("GET", tasks_path(namespace), what="transfertasks")
                seen = {self._key(item) for item in listed.get("items", [])}
                for key in [k for k in self.tasks if (namespace is None or k[0] == namespace) and k not in seen]:
                    self._apply(Change("DELETED", self.tasks[key]))
                for item in listed.get("items", []):
                    self._apply(Change("MODIFIED" if self._key(item) in self.tasks else "ADDED", item))
                if first:
                    first = False
                    self._pending_lists -= 1
                    if self._pending_lists <= 0:
                        self._ready.set()
                self.error = None
                delay = 1.0
                version = str(listed.get("metadata", {}).get("resourceVersion", ""))
                async for event in self._kube.watch(tasks_path(namespace), resource_version=version):
                    if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                        self._apply(Change(str(event["type"]), event["object"]))
                    elif event.get("type") == "ERROR":
                        break  # a stale resourceVersion (410 Gone): list again
            except asyncio.CancelledError:
                raise
            except KubeError as error:
                self.error = str(error)
                log.warning("watch of transfertasks failed", extra={"error": str(error), "namespace": namespace})
                self._ready.set()  # pages show the error instead of waiting
            except Exception as error:  # a dropped connection mid-stream: list and watch again
                log.warning("watch of transfertasks ended", extra={"error": type(error).__name__})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    @staticmethod
    def _key(task: dict[str, Any]) -> Key:
        meta = task.get("metadata", {})
        return str(meta.get("namespace", "")), str(meta.get("name", ""))

    def _apply(self, change: Change) -> None:
        key = change.key
        if change.kind == "DELETED":
            self.tasks.pop(key, None)
            self.samples.pop(key, None)
        else:
            self.tasks[key] = change.task
            self._sample(key, change.task)
        self.publish(change)

    def _sample(self, key: Key, task: dict[str, Any]) -> None:
        objects, size = _done(task)
        samples = self.samples.setdefault(key, [])
        if samples and samples[-1].objects == objects and samples[-1].bytes == size:
            return
        if samples and (objects < samples[-1].objects or size < samples[-1].bytes):
            samples.clear()  # a new run started from zero
        samples.append(Sample(self._clock(), objects, size))
        del samples[:-_SAMPLES]

    # --- rates ---------------------------------------------------------------------------------------------
    def rate(self, key: Key) -> float | None:
        """Bytes per second over the recent samples, or None when there are not two of them."""
        samples = self.samples.get(key) or []
        if len(samples) < 2 or samples[-1].at <= samples[0].at:
            return None
        return (samples[-1].bytes - samples[0].bytes) / (samples[-1].at - samples[0].at)

    # --- fan-out ---------------------------------------------------------------------------------------
    def subscribe(self, accepts: Callable[[Key], bool]) -> Subscriber:
        subscriber = Subscriber(accepts)
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def publish(self, change: Change) -> None:
        for subscriber in list(self._subscribers):
            if not subscriber.accepts(change.key):
                continue
            try:
                subscriber.queue.put_nowait(change)
            except asyncio.QueueFull:  # a page that stopped reading: it reconnects and gets the state again
                self._subscribers.discard(subscriber)
