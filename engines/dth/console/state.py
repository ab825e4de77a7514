"""What every request handler shares: settings, the API client, access reviews, the task store, templates."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from dth.console import i18n
from dth.console.access import AccessReviews
from dth.console.auth import OidcClient, csrf_token, identity_of
from dth.console.kube import Identity, Kube
from dth.console.live import TaskStore
from dth.console.settings import ConsoleSettings
from dth.console.views import age, human_bytes

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
PENDING_SECONDS = 900.0


@dataclass
class Pending:
    """A checked creation (or edit) waiting for its confirmation. Typed-in keys wait here, in memory, so that
    the preview page never carries them."""

    owner: str
    mode: str  # create or edit
    manifest: dict[str, Any]
    secrets: dict[str, dict[str, str]]
    expires: float


@dataclass
class Console:
    settings: ConsoleSettings
    kube: Kube
    reviews: AccessReviews
    store: TaskStore
    local: bool
    oidc: OidcClient | None = None
    pending: dict[str, Pending] = field(default_factory=dict)
    listed_namespaces: tuple[float, tuple[str, ...]] = (0.0, ())
    templates: Environment = field(
        default_factory=lambda: Environment(
            loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(default=True), enable_async=False
        )
    )

    def __post_init__(self) -> None:
        self.templates.filters["bytes"] = human_bytes
        self.templates.filters["age"] = age

    def hold(self, pending: Pending) -> str:
        now = time.monotonic()
        for token in [t for t, p in self.pending.items() if p.expires < now]:
            del self.pending[token]
        token = secrets.token_urlsafe(24)
        self.pending[token] = pending
        return token

    def take(self, token: str, owner: str) -> Pending | None:
        pending = self.pending.get(token)
        if pending is None or pending.owner != owner or pending.expires < time.monotonic():
            return None
        del self.pending[token]
        return pending


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def who(request: Request) -> Identity | None:
    """The user the console acts for; None in local mode (the kubeconfig's identity)."""
    return None if console_of(request).local else identity_of(request)


def owner_key(request: Request) -> str:
    identity = who(request)
    return identity.user if identity else "local"


def language(request: Request) -> str:
    return i18n.negotiate(request.headers.get("accept-language", ""), request.cookies.get(i18n.COOKIE))


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    console = console_of(request)
    lang = language(request)
    identity = who(request)
    page = console.templates.get_template(template).render(
        request=request,
        t=i18n.translator(lang),
        lang=lang,
        languages=i18n.LANGUAGES,
        user=identity.user if identity else None,
        local=console.local,
        csrf=csrf_token(request),
        **context,
    )
    return HTMLResponse(page, status_code=status_code)
