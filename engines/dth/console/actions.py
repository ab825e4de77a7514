"""The detail page's buttons: suspend and resume (spec.suspend), run now (the dth.io/run-now annotation the
operator honours once), and delete, retaining the stack (the dth.io/deletion-policy annotation the operator's
finalizer reads) or deleting it. Every one is a change made as the signed-in user."""

from __future__ import annotations

import datetime

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from dth.console.auth import CSRF_FIELD, check_csrf
from dth.console.kube import tasks_path
from dth.console.state import console_of, who

RUN_NOW_ANNOTATION = "dth.io/run-now"
DELETION_POLICY_ANNOTATION = "dth.io/deletion-policy"
MERGE = "application/merge-patch+json"


async def _patch(request: Request, body: dict[str, object]) -> None:
    namespace, name = request.path_params["namespace"], request.path_params["name"]
    await console_of(request).kube.request(
        "PATCH",
        tasks_path(namespace, name),
        as_user=who(request),
        body=body,
        content_type=MERGE,
        what="transfertasks",
        namespace=namespace,
    )


def _back(request: Request) -> Response:
    namespace, name = request.path_params["namespace"], request.path_params["name"]
    return RedirectResponse(f"/tasks/{namespace}/{name}", status_code=303)


async def suspend(request: Request) -> Response:
    form = await request.form()
    check_csrf(request, form.get(CSRF_FIELD))
    await _patch(request, {"spec": {"suspend": form.get("suspend") == "true"}})
    return _back(request)


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


async def run_now(request: Request) -> Response:
    form = await request.form()
    check_csrf(request, form.get(CSRF_FIELD))
    await _patch(request, {"metadata": {"annotations": {RUN_NOW_ANNOTATION: now_rfc3339()}}})
    return _back(request)


async def delete(request: Request) -> Response:
    form = await request.form()
    check_csrf(request, form.get(CSRF_FIELD))
    namespace, name = request.path_params["namespace"], request.path_params["name"]
    retain = form.get("stack") == "retain"
    # The operator's finalizer reads the policy when it deletes the stack: set it (either way) first.
    await _patch(request, {"metadata": {"annotations": {DELETION_POLICY_ANNOTATION: "retain" if retain else None}}})
    await console_of(request).kube.request(
        "DELETE", tasks_path(namespace, name), as_user=who(request), what="transfertasks", namespace=namespace
    )
    return RedirectResponse("/", status_code=303)
