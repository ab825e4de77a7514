"""Static keys from the environment, read as botocore's EnvProvider reads them, without importing botocore.

botocore's session and credential chain cost a third of a second of start-up; when AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY are set (and no profile is asked for), the chain would stop at its first provider, the
environment, anyway. Keys that expire (AWS_CREDENTIAL_EXPIRATION) and every other source (profiles, roles,
SSO, instance and container metadata) stay with botocore's chain, which refreshes them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

ACCESS_KEY = "AWS_ACCESS_KEY_ID"
SECRET_KEY = "AWS_SECRET_ACCESS_KEY"
TOKENS = ("AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN")  # botocore's order: the first one not empty
EXPIRY = "AWS_CREDENTIAL_EXPIRATION"


@dataclass(frozen=True)
class FrozenKeys:
    """botocore.credentials.ReadOnlyCredentials' fields; the secret halves never in a repr."""

    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)


class StaticCredentials:
    """Keys that never change, with the part of botocore's Credentials interface the data path reads."""

    method = "env"

    def __init__(self, keys: FrozenKeys) -> None:
        self._keys = keys

    @property
    def access_key(self) -> str:
        return self._keys.access_key

    def get_frozen_credentials(self) -> FrozenKeys:
        return self._keys

    def __repr__(self) -> str:
        return f"StaticCredentials(access_key={self._keys.access_key!r})"


def static_keys_from_environment(environ: Mapping[str, str] | None = None) -> StaticCredentials | None:
    """The environment's key pair where botocore's EnvProvider would give static keys; None where it gives
    none, or keys that expire, or would raise (a key without its secret): those cases stay with botocore."""
    environ = os.environ if environ is None else environ
    access_key, secret_key = environ.get(ACCESS_KEY, ""), environ.get(SECRET_KEY, "")
    if not access_key or not secret_key or EXPIRY in environ:
        return None
    token = next((environ[name] for name in TOKENS if environ.get(name)), None)
    return StaticCredentials(FrozenKeys(access_key, secret_key, token))
