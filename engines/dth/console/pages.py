"""The pages that read: the task list (with its live stream) and a task's detail page."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse

from dth.console import i18n
from dth.console.charts import HEIGHT, WIDTH, Series, polyline, prometheus_series
from dth.console.kube import KubeError, events_path, tasks_path
from dth.console.live import Change, Key
from dth.console.state import Console, console_of, language, render, who
from dth.console.views import PHASES, TYPES, Row, clean_manifest, manifest_yaml, row_for

HEARTBEAT_SECONDS = 15.0


async def known_namespaces(console: Console) -> list[str]:
    """The namespaces to consider: the configured ones, else every namespace the console can list (when its
    role allows) and every namespace that holds a task."""
    if console.settings.namespaces:
        return list(console.settings.namespaces)
    at, listed = console.listed_namespaces
    if time.monotonic() - at > console.settings.sar_cache_seconds:
        try:
            answer = await console.kube.request("GET", "/api/v1/namespaces", what="namespaces")
            listed = tuple(str(item["metadata"]["name"]) for item in answer.get("items", []))
        except KubeError:
            listed = ()
        console.listed_namespaces = (time.monotonic(), listed)
    return sorted(set(listed) | {key[0] for key in console.store.tasks})


async def namespaces_where(request: Request, verb: str) -> list[str]:
    console = console_of(request)
    identity = who(request)
    candidates = await known_namespaces(console)
    answers = await asyncio.gather(*(console.reviews.allowed(identity, verb, ns) for ns in candidates))
    return [ns for ns, allowed in zip(candidates, answers, strict=True) if allowed]


def _rows(console: Console, namespaces: set[str], query: dict[str, str]) -> list[Row]:
    rows = []
    for key, task in console.store.tasks.items():
        if key[0] not in namespaces:
            continue
        row = row_for(task, console.store.rate(key))
        if query.get("phase") and row.phase != query["phase"]:
            continue
        if query.get("type") and row.type != query["type"]:
            continue
        rows.append(row)
    rows.sort(key=lambda r: (r.namespace, r.name))
    return rows


async def task_list(request: Request) -> Response:
    console = console_of(request)
    await console.store.ready()
    query = {k: v for k, v in request.query_params.items() if k in ("namespace", "phase", "type") and v}
    readable = await namespaces_where(request, "list")
    shown = {query["namespace"]} & set(readable) if query.get("namespace") else set(readable)
    creatable = await namespaces_where(request, "create")
    return render(
        request,
        "list.html",
        rows=_rows(console, shown, query),
        namespaces=readable,
        phases=PHASES,
        types=TYPES,
        query=query,
        can_create=bool(creatable),
        watch_error=console.store.error,
    )


def _event_payload(console: Console, change: Change, request: Request) -> str:
    task = change.task
    key = change.key
    row = row_for(task, console.store.rate(key))
    lang = language(request)
    html = str(console.templates.get_template("row.html").module.task_row(row, i18n.translator(lang)))  # type: ignore[attr-defined]
    data: dict[str, Any] = {
        "kind": change.kind,
        "key": row.key,
        "phase": row.phase,
        "found": row.found,
        "done": row.done,
        "failed": row.failed,
        "bytesFound": row.bytes_found,
        "bytesDone": row.bytes_done,
        "bytesText": row.bytes_text,
        "percent": row.percent,
        "rate": row.rate,
        "eta": row.eta,
        "lastRun": row.last_run,
        "message": row.message,
        "suspended": bool((task.get("spec") or {}).get("suspend")),
        "at": time.time(),
        "row": html,
    }
    return f"event: task\ndata: {json.dumps(data)}\n\n"


async def stream(request: Request) -> Response:
    """Server-sent events: every change of a task the user may list (or of one task, with namespace and
    name), from the process's one watch."""
    console = console_of(request)
    allowed = set(await namespaces_where(request, "list"))
    only_namespace = request.query_params.get("namespace")
    only_name = request.query_params.get("name")

    def accepts(key: Key) -> bool:
        if only_namespace and key[0] != only_namespace:
            return False
        if only_name and key[1] != only_name:
            return False
        return key[0] in allowed

    subscriber = console.store.subscribe(accepts)

    async def events() -> AsyncIterator[str]:
        try:
            yield "retry: 2000\n\n"
            while True:
                try:
                    change = await asyncio.wait_for(subscriber.queue.get(), HEARTBEAT_SECONDS)
                except TimeoutError:
                    yield ": still here\n\n"
                    continue
                yield _event_payload(console, change, request)
        finally:
            console.store.unsubscribe(subscriber)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


async def task_detail(request: Request) -> Response:
    console = console_of(request)
    namespace, name = request.path_params["namespace"], request.path_params["name"]
    task = await console.kube.request(
        "GET", tasks_path(namespace, name), as_user=who(request), what="transfertasks", namespace=namespace
    )
    events = await _events(console, namespace, name)
    chart: list[tuple[str, str]] = []
    chart_error = ""
    if console.settings.prometheus_url:
        try:
            series: list[Series] = await prometheus_series(console.settings.prometheus_url, namespace, name)
            chart = [(s.name, polyline(s.points)) for s in series]
        except Exception as error:  # a chart must never break the page
            chart_error = f"Prometheus did not answer ({type(error).__name__})"
    status = task.get("status") or {}
    can_change = await console.reviews.allowed(who(request), "patch", namespace)
    can_delete = await console.reviews.allowed(who(request), "delete", namespace)
    can_create = await console.reviews.allowed(who(request), "create", namespace)
    return render(
        request,
        "detail.html",
        task=task,
        row=row_for(task, console.store.rate((namespace, name))),
        status=status,
        spec_yaml=manifest_yaml(task.get("spec") or {}),
        manifest_text=manifest_yaml(clean_manifest(task)),
        events=events,
        chart=chart,
        chart_error=chart_error,
        chart_size=(WIDTH, HEIGHT),
        prometheus=bool(console.settings.prometheus_url),
        scheduled=(task.get("spec") or {}).get("schedule", "once") != "once",
        suspended=bool((task.get("spec") or {}).get("suspend")),
        can_change=can_change,
        can_delete=can_delete,
        can_create=can_create,
    )


async def _events(console: Console, namespace: str, name: str) -> list[dict[str, Any]]:
    selector = f"involvedObject.name={name},involvedObject.kind=TransferTask"
    try:
        answer = await console.kube.request(
            "GET", events_path(namespace), params={"fieldSelector": selector}, what="events", namespace=namespace
        )
    except KubeError:
        return []
    items = list(answer.get("items", []))
    items.sort(
        key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or e["metadata"].get("creationTimestamp"))
    )
    return items


async def healthz(_: Request) -> Response:
    return HTMLResponse("ok")
