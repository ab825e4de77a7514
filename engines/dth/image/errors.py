"""What can go wrong talking to a registry, and whether trying again can help."""

from __future__ import annotations

from dth.errors import AccessError, DthError


class RegistryError(DthError):
    """A registry request that failed; `retryable` when a later attempt may succeed (network, 5xx, 429)."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class RegistryAuthError(RegistryError, AccessError):
    """The registry refused the credentials, wants some, or denies this identity access."""


class NotFoundError(RegistryError):
    """No such repository or tag."""
