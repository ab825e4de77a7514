"""kubectl on a local API server in one namespace, for tests that drive TransferTasks and read what the
operator wrote back: their status, their annotations, their Events."""

from __future__ import annotations

import json
import subprocess
from typing import Any, NamedTuple

import yaml

from dth.devtools.kubernetes import LocalKubernetes


class TaskEvent(NamedTuple):
    """An Event about a TransferTask, as `kubectl get events` gives it."""

    type: str
    reason: str
    message: str


class TaskNamespace:
    """One namespace of a LocalKubernetes: TransferTasks applied, read and annotated there."""

    def __init__(self, kubernetes: LocalKubernetes, name: str) -> None:
        self.kubernetes = kubernetes
        self.name = name

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.kubernetes.kubectl("-n", self.name, *args, input=input, check=check)

    def apply(self, manifest: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest), check=check)

    def task(self, name: str) -> dict[str, Any] | None:
        """The TransferTask, or None when there is none of that name (gone, or not yet made)."""
        done = self.kubectl("get", "transfertask", name, "-o", "json", check=False)
        return dict(json.loads(done.stdout)) if done.returncode == 0 else None

    def existing(self, name: str) -> dict[str, Any]:
        """The TransferTask, which must be there."""
        task = self.task(name)
        if task is None:
            raise AssertionError(f"no TransferTask {name} in {self.name}")
        return task

    def status(self, name: str) -> dict[str, Any]:
        return dict((self.task(name) or {}).get("status") or {})

    def phase(self, name: str) -> str | None:
        return self.status(name).get("phase")

    def annotate(self, name: str, key: str, value: str | None) -> None:
        """Sets the annotation, or removes it when value is None."""
        self.kubectl("annotate", "--overwrite", "tt", name, f"{key}-" if value is None else f"{key}={value}")

    def events(self, name: str) -> list[TaskEvent]:
        listed = json.loads(self.kubectl("get", "events", "-o", "json").stdout)["items"]
        return [
            TaskEvent(e.get("type", ""), e.get("reason", ""), e.get("message", ""))
            for e in listed
            if e["involvedObject"].get("name") == name and e["involvedObject"].get("kind") == "TransferTask"
        ]
