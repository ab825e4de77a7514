"""What the pages show of a TransferTask: rows of the list, sizes, rates and times, in plain words."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

import yaml

from dth.console.forms import DESCRIPTION_ANNOTATION

PHASES = ("Pending", "Invalid", "Provisioning", "Running", "Suspended", "Succeeded", "Failed", "Deleting")
TYPES = ("S3", "Image")


def human_bytes(count: float) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"


def human_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def _side(side: dict[str, Any], task_type: str) -> str:
    if task_type == "Image":
        return str(side.get("registry") or f"ECR {side.get('accountId', '?')} {side.get('region', '')}".strip())
    where = f"s3://{side.get('bucket', '?')}/{side.get('prefix', '')}"
    kind = side.get("type") or "Amazon_S3"
    return where if kind == "Amazon_S3" else f"{where} ({kind})"


@dataclass(frozen=True)
class Row:
    namespace: str
    name: str
    type: str
    phase: str
    route: str
    description: str
    found: int
    done: int
    failed: int
    bytes_found: int
    bytes_done: int
    percent: int
    rate: str
    eta: str
    last_run: str
    message: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def bytes_text(self) -> str:
        return f"{human_bytes(self.bytes_done)} / {human_bytes(self.bytes_found)}"


def row_for(task: dict[str, Any], rate: float | None) -> Row:
    meta = task.get("metadata") or {}
    spec = task.get("spec") or {}
    status = task.get("status") or {}
    objects = status.get("objects") or {}
    task_type = str(spec.get("type", "?"))
    found = int(objects.get("found", 0))
    done = int(objects.get("copied", 0)) + int(objects.get("skipped", 0))
    bytes_found = int(objects.get("bytesFound", 0))
    bytes_done = int(objects.get("bytesCopied", 0)) + int(objects.get("bytesSkipped", 0))
    percent = int(100 * done / found) if found else (100 if status.get("phase") == "Succeeded" else 0)
    phase = str(status.get("phase") or "Pending")
    eta = ""
    if rate and rate > 0 and phase == "Running" and bytes_found > bytes_done:
        eta = human_duration((bytes_found - bytes_done) / rate)
    return Row(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        type=task_type,
        phase=phase,
        route=f"{_side(spec.get('source') or {}, task_type)} → {_side(spec.get('destination') or {}, task_type)}",
        description=str((meta.get("annotations") or {}).get(DESCRIPTION_ANNOTATION, "")),
        found=found,
        done=done,
        failed=int(objects.get("failed", 0)),
        bytes_found=bytes_found,
        bytes_done=bytes_done,
        percent=max(0, min(100, percent)),
        rate=f"{human_bytes(rate)}/s" if rate else "",
        eta=eta,
        last_run=str(status.get("lastRun") or ""),
        message=str(status.get("message") or ""),
    )


def manifest_yaml(manifest: dict[str, Any]) -> str:
    return yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True)


def clean_manifest(task: dict[str, Any]) -> dict[str, Any]:
    """The task as a person would write it: without status and the server's own metadata."""
    meta = task.get("metadata") or {}
    kept_meta: dict[str, Any] = {"name": meta.get("name"), "namespace": meta.get("namespace")}
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if k != "kubectl.kubernetes.io/last-applied-configuration"
    }
    if annotations:
        kept_meta["annotations"] = annotations
    if meta.get("labels"):
        kept_meta["labels"] = meta["labels"]
    return {
        "apiVersion": task.get("apiVersion"),
        "kind": task.get("kind"),
        "metadata": kept_meta,
        "spec": task.get("spec") or {},
    }


def age(timestamp: str) -> str:
    try:
        then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return timestamp
    return human_duration((datetime.datetime.now(datetime.UTC) - then).total_seconds()) + " ago"
