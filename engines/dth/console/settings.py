"""The console's settings, read from the environment (prefix DTH_CONSOLE_).

Secrets (the OIDC client secret and the session secret) come from the environment or from a file named by
`DTH_CONSOLE_<NAME>_FILE` (a mounted Secret), never from the command line, and are never logged: they are
`SecretStr`, whose repr hides them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

PREFIX = "DTH_CONSOLE_"
_SECRETS = ("OIDC_CLIENT_SECRET", "SESSION_SECRET")


class ConsoleSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    oidc_issuer: str | None = Field(None, description="the OpenID Connect issuer URL (its discovery document)")
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    session_secret: SecretStr | None = Field(None, description="signs the session cookie; random when unset")
    public_url: str | None = Field(
        None, description="external base URL; the redirect URI is <PUBLIC_URL>/auth/callback"
    )
    username_claim: str = "email"
    groups_claim: str = "groups"
    groups_prefix: str = ""
    prometheus_url: str | None = None
    namespaces: tuple[str, ...] = Field((), description="namespaces to offer; empty means every namespace")
    secure_cookies: bool = True
    service_kubeconfig: Path | None = Field(
        None,
        description="the console's own identity as a kubeconfig instead of the pod's ServiceAccount, for running "
        "the in-cluster mode outside a cluster (tests, development)",
    )
    sar_cache_seconds: float = Field(30.0, description="how long an access review answer is reused")

    @field_validator("namespaces", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("public_url", "oidc_issuer", "prometheus_url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else None

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> ConsoleSettings:
        env = os.environ if environ is None else environ
        values: dict[str, str] = {}
        for name in cls.model_fields:
            key = PREFIX + name.upper()
            if env.get(key):
                values[name] = env[key]
            elif key.removeprefix(PREFIX) in _SECRETS and env.get(key + "_FILE"):
                values[name] = Path(env[key + "_FILE"]).read_text(encoding="utf-8").strip()
        return cls.model_validate(values)
