"""Sign-in with OpenID Connect (Authorization Code with PKCE, through authlib), the session, and CSRF.

The session is Starlette's signed cookie (HttpOnly, SameSite=Lax, Secure when SECURE_COOKIES). It holds
the user's name and groups, taken from the ID token's configurable claims, and a CSRF token that every
form that changes something carries back.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from starlette.requests import Request

from dth.console.kube import Identity
from dth.console.settings import ConsoleSettings

CSRF_FIELD = "csrf"


class CsrfError(Exception):
    """A change without the session's CSRF token."""


class SignInError(Exception):
    """The provider's answer did not sign anyone in (denied, tampered, or a claim missing)."""


def csrf_token(request: Request) -> str:
    token = request.session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session[CSRF_FIELD] = token
    return token


def check_csrf(request: Request, submitted: Any) -> None:
    expected = request.session.get(CSRF_FIELD)
    if not isinstance(expected, str) or not isinstance(submitted, str) or not hmac.compare_digest(expected, submitted):
        raise CsrfError("this form has expired or did not come from the console: reload the page and try again")


def identity_of(request: Request) -> Identity | None:
    user = request.session.get("user")
    if not isinstance(user, str) or not user:
        return None
    groups = request.session.get("groups") or []
    return Identity(user, tuple(str(g) for g in groups))


def identity_from_claims(claims: dict[str, Any], settings: ConsoleSettings) -> Identity:
    user = claims.get(settings.username_claim)
    if not isinstance(user, str) or not user:
        raise SignInError(f"the ID token has no {settings.username_claim!r} claim to name the user")
    raw_groups = claims.get(settings.groups_claim) or []
    if isinstance(raw_groups, str):
        raw_groups = [raw_groups]
    groups = tuple(f"{settings.groups_prefix}{group}" for group in raw_groups if isinstance(group, str))
    return Identity(user, groups)


class OidcClient:
    """authlib's Starlette client, registered from the issuer's discovery document."""

    def __init__(self, settings: ConsoleSettings) -> None:
        from authlib.integrations.starlette_client import OAuth

        self._settings = settings
        oauth = OAuth()
        secret = settings.oidc_client_secret.get_secret_value() if settings.oidc_client_secret else None
        oauth.register(
            "oidc",
            client_id=settings.oidc_client_id,
            client_secret=secret,
            server_metadata_url=f"{settings.oidc_issuer}/.well-known/openid-configuration",
            client_kwargs={"scope": "openid email profile", "code_challenge_method": "S256"},
        )
        self._client: Any = oauth.create_client("oidc")

    def redirect_uri(self, request: Request) -> str:
        base = self._settings.public_url or str(request.base_url).rstrip("/")
        return f"{base}/auth/callback"

    async def start(self, request: Request) -> Any:
        return await self._client.authorize_redirect(request, self.redirect_uri(request))

    async def finish(self, request: Request) -> Identity:
        from authlib.integrations.base_client.errors import OAuthError

        if request.query_params.get("error"):
            raise SignInError(f"the identity provider said: {request.query_params.get('error')}")
        try:
            token = await self._client.authorize_access_token(request)
        except OAuthError as error:
            raise SignInError(f"sign-in did not complete ({error.error})") from None
        claims = dict(token.get("userinfo") or {})
        return identity_from_claims(claims, self._settings)
