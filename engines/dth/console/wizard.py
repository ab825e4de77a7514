"""The creation wizard (and edit and clone, which are the same form filled in): form -> checked spec ->
server-side dry run -> YAML preview -> create. Typed-in access keys become a Secret in the task's namespace,
created as the user; they wait for the confirmation in memory, never in the page, and are never logged."""

from __future__ import annotations

import time
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from dth.console.auth import CSRF_FIELD, check_csrf
from dth.console.forms import (
    DESCRIPTION_ANNOTATION,
    KEY_SIDES,
    TASK_MODELS,
    Problems,
    check,
    form_values,
    spec_from_form,
    task_form,
)
from dth.console.kube import (
    KubeConflictError,
    KubeError,
    KubeInvalidError,
    KubeRefusedError,
    secrets_path,
    tasks_path,
)
from dth.console.pages import namespaces_where
from dth.console.state import PENDING_SECONDS, Pending, console_of, owner_key, render, who
from dth.console.views import manifest_yaml
from dth.spec.model import API_GROUP, API_VERSION, KIND

DRY_RUN = {"dryRun": "All"}


def _last_values(form: FormData) -> dict[str, str]:
    """One value per name: the last one (a checkbox follows its hidden "false")."""
    values: dict[str, str] = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            values[key] = value
    return values


async def _render_form(
    request: Request,
    *,
    task_type: str,
    mode: str,
    values: dict[str, str],
    problems: Problems | None = None,
    top_error: str = "",
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "wizard.html",
        status_code=status_code,
        form=task_form(task_type),
        task_type=task_type,
        mode=mode,
        values=values,
        problems=problems or Problems(),
        top_error=top_error,
        namespaces=await namespaces_where(request, "create"),
        key_sides=KEY_SIDES[task_type],
    )


async def new_task(request: Request) -> Response:
    task_type = request.query_params.get("type", "S3")
    if task_type not in TASK_MODELS:
        task_type = "S3"
    values = {"metadata.namespace": request.query_params.get("namespace", "")}
    return await _render_form(request, task_type=task_type, mode="create", values=values)


async def _existing(request: Request) -> dict[str, Any]:
    namespace, name = request.path_params["namespace"], request.path_params["name"]
    task: dict[str, Any] = await console_of(request).kube.request(
        "GET", tasks_path(namespace, name), as_user=who(request), what="transfertasks", namespace=namespace
    )
    return task


def _values_of(task: dict[str, Any], name: str) -> dict[str, str]:
    spec = dict(task.get("spec") or {})
    spec.pop("type", None)
    meta = task.get("metadata") or {}
    values = form_values(spec)
    values.update(
        {
            "metadata.name": name,
            "metadata.namespace": str(meta.get("namespace", "")),
            "description": str((meta.get("annotations") or {}).get(DESCRIPTION_ANNOTATION, "")),
        }
    )
    return values


async def clone_task(request: Request) -> Response:
    task = await _existing(request)
    name = f"{task['metadata']['name']}-copy"
    task_type = str((task.get("spec") or {}).get("type", "S3"))
    return await _render_form(request, task_type=task_type, mode="create", values=_values_of(task, name))


async def edit_task(request: Request) -> Response:
    task = await _existing(request)
    task_type = str((task.get("spec") or {}).get("type", "S3"))
    values = _values_of(task, str(task["metadata"]["name"]))
    return await _render_form(request, task_type=task_type, mode="edit", values=values)


def _typed_keys(values: dict[str, str], task_type: str, name: str) -> dict[str, dict[str, str]]:
    """Secrets to create from typed-in keys, by side: {"source": {"access_key_id": ..., ...}}."""
    found = {}
    for side in KEY_SIDES[task_type]:
        key_id = values.get(f"keys.{side}.accessKeyId", "").strip()
        secret = values.get(f"keys.{side}.secretAccessKey", "").strip()
        if key_id or secret:
            found[side] = {"access_key_id": key_id, "secret_access_key": secret}
    return found


def secret_name(task: str, side: str) -> str:
    return f"{task}-{side}-keys"[:253]


def _secret_manifest(name: str, namespace: str, data: dict[str, str], task: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": {"dth.io/task": task[:63]}},
        "type": "Opaque",
        "stringData": data,
    }


async def _save_secret(
    request: Request, namespace: str, name: str, data: dict[str, str], task: str, *, dry_run: bool
) -> None:
    """Create the Secret of typed-in keys as the user; when it exists (an edit typing new keys), change it."""
    console = console_of(request)
    params = DRY_RUN if dry_run else None
    try:
        await console.kube.request(
            "POST",
            secrets_path(namespace),
            as_user=who(request),
            body=_secret_manifest(name, namespace, data, task),
            params=params,
            what="secrets",
            namespace=namespace,
        )
    except KubeConflictError:
        await console.kube.request(
            "PATCH",
            secrets_path(namespace, name),
            as_user=who(request),
            body={"stringData": data},
            params=params,
            content_type="application/merge-patch+json",
            what="secrets",
            namespace=namespace,
        )


def _merge_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch from old to new: keys left out of new become null (removed)."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            nested = _merge_diff(before, value)
            if nested:
                patch[key] = nested
        elif value != before:
            patch[key] = value
    return patch


async def preview(request: Request) -> Response:
    console = console_of(request)
    form = await request.form()
    check_csrf(request, form.get(CSRF_FIELD))
    values = _last_values(form)
    task_type = values.get("type", "S3")
    if task_type not in TASK_MODELS:
        task_type = "S3"
    mode = "edit" if values.get("mode") == "edit" else "create"
    name = values.get("metadata.name", "").strip()
    namespace = values.get("metadata.namespace", "").strip()
    description = values.get("description", "").strip()
    keys = _typed_keys(values, task_type, name)
    spec = spec_from_form(task_type, values)
    for side in keys:
        spec.setdefault(side, {})["credentials"] = {"secretName": secret_name(name, side)}
    form_shape = task_form(task_type)
    problems = check(task_type, spec, name, namespace, form_shape)
    for side, data in keys.items():
        if not data["access_key_id"] or not data["secret_access_key"]:
            problems.add(f"keys.{side}", "give both the access key ID and the secret access key, or neither")
    shown = {k: v for k, v in values.items() if not k.startswith("keys.")}  # typed keys are never sent back
    if problems:
        return await _render_form(
            request, task_type=task_type, mode=mode, values=shown, problems=problems, status_code=422
        )
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if description:
        metadata["annotations"] = {DESCRIPTION_ANNOTATION: description}
    manifest = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "metadata": metadata, "spec": spec}
    identity = who(request)
    try:
        for side, data in keys.items():
            await _save_secret(request, namespace, secret_name(name, side), data, name, dry_run=True)
        if mode == "create":
            await console.kube.request(
                "POST",
                tasks_path(namespace),
                as_user=identity,
                body=manifest,
                params=DRY_RUN,
                what="transfertasks",
                namespace=namespace,
            )
        else:
            await console.kube.request(
                "PATCH",
                tasks_path(namespace, name),
                as_user=identity,
                body=await _edit_patch(request, namespace, name, spec, description),
                params=DRY_RUN,
                content_type="application/merge-patch+json",
                what="transfertasks",
                namespace=namespace,
            )
    except (KubeRefusedError, KubeInvalidError) as error:
        return await _render_form(
            request, task_type=task_type, mode=mode, values=shown, top_error=str(error), status_code=error.status
        )
    except KubeError as error:
        return await _render_form(request, task_type=task_type, mode=mode, values=shown, top_error=str(error))
    token = console.hold(Pending(owner_key(request), mode, manifest, keys, time.monotonic() + PENDING_SECONDS))
    return render(request, "preview.html", manifest_text=manifest_yaml(manifest), token=token, mode=mode, values=shown)


async def _edit_patch(
    request: Request, namespace: str, name: str, spec: dict[str, Any], description: str
) -> dict[str, Any]:
    current = await console_of(request).kube.request(
        "GET", tasks_path(namespace, name), as_user=who(request), what="transfertasks", namespace=namespace
    )
    return {
        "metadata": {"annotations": {DESCRIPTION_ANNOTATION: description or None}},
        "spec": _merge_diff(dict(current.get("spec") or {}), spec),
    }


async def confirm(request: Request) -> Response:
    console = console_of(request)
    form = await request.form()
    check_csrf(request, form.get(CSRF_FIELD))
    pending = console.take(str(form.get("token", "")), owner_key(request))
    if pending is None:
        return render(
            request,
            "message.html",
            status_code=410,
            title="Not found",
            message="this preview has expired: fill the form in again",
        )
    meta = pending.manifest["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    identity = who(request)
    for side, data in pending.secrets.items():
        await _save_secret(request, namespace, secret_name(name, side), data, name, dry_run=False)
    if pending.mode == "create":
        await console.kube.request(
            "POST",
            tasks_path(namespace),
            as_user=identity,
            body=pending.manifest,
            what="transfertasks",
            namespace=namespace,
        )
    else:
        patch = await _edit_patch(
            request,
            namespace,
            name,
            pending.manifest["spec"],
            meta.get("annotations", {}).get(DESCRIPTION_ANNOTATION, ""),
        )
        await console.kube.request(
            "PATCH",
            tasks_path(namespace, name),
            as_user=identity,
            body=patch,
            content_type="application/merge-patch+json",
            what="transfertasks",
            namespace=namespace,
        )
    return RedirectResponse(f"/tasks/{namespace}/{name}", status_code=303)
