"""The console's ASGI application: routes, the session, sign-in, and errors said in words."""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from dth.console import actions, i18n, pages, wizard
from dth.console.access import AccessReviews
from dth.console.auth import CsrfError, OidcClient, SignInError, identity_of
from dth.console.kube import Kube, KubeError, KubeNotFoundError, KubeRefusedError
from dth.console.live import TaskStore
from dth.console.settings import ConsoleSettings
from dth.console.state import STATIC, Console, console_of, render

log = logging.getLogger(__name__)
SESSION_COOKIE = "dth_console"
#: Paths served without a signed-in user.
OPEN_PATHS = ("/healthz", "/login", "/auth/callback", "/static/", "/lang/")


class RequireSignIn:
    """With OIDC on, every page but the open ones needs a signed-in user: pages redirect to the provider,
    anything else (a POST, the event stream) is answered 401."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        console: Console = request.app.state.console
        path = request.url.path
        if console.local or path.startswith(OPEN_PATHS) or identity_of(request) is not None:
            await self.app(scope, receive, send)
            return
        if request.method == "GET" and path != "/stream":
            response: Response = RedirectResponse(f"/login?next={request.url.path}", status_code=303)
        else:
            response = Response("sign in first", status_code=401, media_type="text/plain")
        await response(scope, receive, send)


async def login(request: Request) -> Response:
    console = console_of(request)
    if console.oidc is None:
        return RedirectResponse("/", status_code=303)
    following = request.query_params.get("next", "/")
    request.session["next"] = following if following.startswith("/") and not following.startswith("//") else "/"
    response: Response = await console.oidc.start(request)
    return response


async def callback(request: Request) -> Response:
    console = console_of(request)
    if console.oidc is None:
        return RedirectResponse("/", status_code=303)
    identity = await console.oidc.finish(request)
    following = str(request.session.pop("next", "/"))
    request.session.clear()  # a new session for the signed-in user (no fixation)
    request.session["user"] = identity.user
    request.session["groups"] = list(identity.groups)
    log.info("signed in", extra={"user": identity.user, "groups": list(identity.groups)})
    return RedirectResponse(following, status_code=303)


async def logout(request: Request) -> Response:
    form = await request.form()
    from dth.console.auth import CSRF_FIELD, check_csrf

    check_csrf(request, form.get(CSRF_FIELD))
    request.session.clear()
    return RedirectResponse("/", status_code=303)


async def choose_language(request: Request) -> Response:
    code = request.path_params["code"]
    following = request.query_params.get("next", "/")
    if not following.startswith("/") or following.startswith("//"):
        following = "/"
    response = RedirectResponse(following, status_code=303)
    if code in i18n.LANGUAGES:
        response.set_cookie(i18n.COOKIE, code, max_age=365 * 86400, samesite="lax", httponly=True)
    return response


# --- errors, said in words -----------------------------------------------------------------------------------
async def refused(request: Request, error: Exception) -> Response:
    return render(request, "message.html", status_code=403, title="Not allowed", message=str(error))


async def not_found(request: Request, error: Exception) -> Response:
    return render(request, "message.html", status_code=404, title="Not found", message=str(error))


async def csrf_refused(request: Request, error: Exception) -> Response:
    return render(request, "message.html", status_code=403, title="Not allowed", message=str(error))


async def sign_in_failed(request: Request, error: Exception) -> Response:
    return render(request, "message.html", status_code=401, title="Sign in", message=str(error))


async def kube_failed(request: Request, error: Exception) -> Response:
    return render(request, "message.html", status_code=502, title="Something went wrong", message=str(error))


async def unexpected(request: Request, error: Exception) -> Response:
    log.exception("unexpected error", extra={"path": request.url.path})
    return render(
        request,
        "message.html",
        status_code=500,
        title="Something went wrong",
        message=f"the console failed ({type(error).__name__}); the details are in its log",
    )


def create_app(settings: ConsoleSettings, kube: Kube, *, local: bool) -> Starlette:
    oidc = None if local else OidcClient(settings)
    console = Console(
        settings=settings,
        kube=kube,
        reviews=AccessReviews(kube, ttl=settings.sar_cache_seconds),
        store=TaskStore(kube, settings.namespaces),
        local=local,
        oidc=oidc,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        console.store.start()
        try:
            yield
        finally:
            await console.store.stop()
            await kube.close()

    session_secret = settings.session_secret.get_secret_value() if settings.session_secret else secrets.token_hex(32)
    task = "/tasks/{namespace}/{name}"
    routes = [
        Route("/healthz", pages.healthz),
        Route("/", pages.task_list),
        Route("/stream", pages.stream),
        Route("/login", login),
        Route("/auth/callback", callback),
        Route("/logout", logout, methods=["POST"]),
        Route("/lang/{code}", choose_language),
        Route("/new", wizard.new_task),
        Route("/preview", wizard.preview, methods=["POST"]),
        Route("/confirm", wizard.confirm, methods=["POST"]),
        Route(task, pages.task_detail),
        Route(task + "/edit", wizard.edit_task),
        Route(task + "/clone", wizard.clone_task),
        Route(task + "/suspend", actions.suspend, methods=["POST"]),
        Route(task + "/run-now", actions.run_now, methods=["POST"]),
        Route(task + "/delete", actions.delete, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    handlers: dict[Any, Any] = {
        KubeRefusedError: refused,
        KubeNotFoundError: not_found,
        CsrfError: csrf_refused,
        SignInError: sign_in_failed,
        KubeError: kube_failed,
        Exception: unexpected,
    }
    middleware = [
        Middleware(
            SessionMiddleware,
            secret_key=session_secret,
            session_cookie=SESSION_COOKIE,
            same_site="lax",
            https_only=settings.secure_cookies and not local,
            max_age=12 * 3600,
        ),
        Middleware(RequireSignIn),
    ]
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handlers, lifespan=lifespan)
    app.state.console = console
    return app
