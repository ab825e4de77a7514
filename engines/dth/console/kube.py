"""The console's calls to the Kubernetes API, over httpx (async), as the console itself or as a signed-in user.

In-cluster the console authenticates as its pod's ServiceAccount and acts for a user with impersonation
(`Impersonate-User`, one `Impersonate-Group` per group): the API server's RBAC then decides exactly as it
would for that person. In local mode (`dth console --kubeconfig`) there is no one to impersonate: the
kubeconfig's identity is the user. A refusal becomes a `KubeRefusedError` whose text says what was not allowed,
in words, never the server's raw answer or a stack trace.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from dth.spec.model import API_GROUP, API_VERSION, PLURAL

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TASKS_API = f"/apis/{API_GROUP}/{API_VERSION}"
#: Seconds to wait for an answer; a watch waits longer (the server ends it after `timeoutSeconds`).
REQUEST_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


@dataclass(frozen=True)
class Identity:
    """Who the console acts for: a user name and groups, from the ID token's claims."""

    user: str
    groups: tuple[str, ...] = ()


class KubeError(Exception):
    """The API server answered with an error (or not at all); `str()` is a sentence for a person."""

    def __init__(self, message: str, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class KubeRefusedError(KubeError):
    """RBAC said no (403)."""


class KubeNotFoundError(KubeError):
    """404."""


class KubeInvalidError(KubeError):
    """422 or 400: the server (schema, admission webhook) refused the object; the message is the server's."""


class KubeConflictError(KubeError):
    """409: the object exists, or changed since it was read."""


@dataclass
class _Credentials:
    server: str
    verify: ssl.SSLContext | bool
    token: str | None = None
    token_file: Path | None = None
    cert: tuple[str, str] | None = None
    _token_read_at: float = field(default=0.0)

    def bearer(self) -> str | None:
        # A projected ServiceAccount token is rotated by the kubelet: re-read it every minute.
        if self.token_file is not None and time.monotonic() - self._token_read_at > 60:
            self.token = self.token_file.read_text(encoding="utf-8").strip()
            self._token_read_at = time.monotonic()
        return self.token


def _from_kubeconfig(path: Path) -> _Credentials:
    from kubernetes import client, config  # the client library only parses the kubeconfig

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=configuration)
    verify: ssl.SSLContext | bool = True
    if not configuration.verify_ssl:
        verify = False
    elif configuration.ssl_ca_cert:
        verify = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if isinstance(verify, ssl.SSLContext) and configuration.cert_file and configuration.key_file:
        verify.load_cert_chain(configuration.cert_file, configuration.key_file)
    # The client library names the key "authorization" or "BearerToken", depending on its version.
    keys = configuration.api_key or {}
    authorization = str(keys.get("authorization") or keys.get("BearerToken") or "")
    token = authorization.removeprefix("Bearer ").strip() or None
    return _Credentials(server=configuration.host.rstrip("/"), verify=verify, token=token)


def _in_cluster() -> _Credentials:
    import os

    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise KubeError("not running in a cluster (no KUBERNETES_SERVICE_HOST): pass --kubeconfig for local mode")
    if ":" in host:
        host = f"[{host}]"
    verify = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT_DIR / "ca.crt"))
    return _Credentials(server=f"https://{host}:{port}", verify=verify, token_file=SERVICE_ACCOUNT_DIR / "token")


def _verb_for(method: str) -> str:
    return {"GET": "read", "POST": "create", "PUT": "update", "PATCH": "change", "DELETE": "delete"}.get(method, method)


class Kube:
    """One connection pool to the API server for the whole process."""

    def __init__(self, credentials: _Credentials, *, impersonate: bool) -> None:
        self._credentials = credentials
        self.impersonate = impersonate
        self._http = httpx.AsyncClient(base_url=credentials.server, verify=credentials.verify, timeout=REQUEST_TIMEOUT)

    @classmethod
    def from_kubeconfig(cls, path: Path, *, impersonate: bool) -> Kube:
        return cls(_from_kubeconfig(path), impersonate=impersonate)

    @classmethod
    def in_cluster(cls) -> Kube:
        return cls(_in_cluster(), impersonate=True)

    async def close(self) -> None:
        await self._http.aclose()

    def _headers(self, as_user: Identity | None) -> list[tuple[str, str]]:
        headers = [("Accept", "application/json")]
        token = self._credentials.bearer()
        if token:
            headers.append(("Authorization", f"Bearer {token}"))
        if as_user is not None and self.impersonate:
            headers.append(("Impersonate-User", as_user.user))
            headers.extend(("Impersonate-Group", group) for group in as_user.groups)
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        as_user: Identity | None = None,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
        what: str = "",
        namespace: str = "",
    ) -> Any:
        """One call; `what` (a resource's plural) and `namespace` word a refusal: "you may not create
        transfertasks in namespace team-b"."""
        headers = self._headers(as_user)
        content = None
        if body is not None:
            headers.append(("Content-Type", content_type))
            content = json.dumps(body).encode()
        try:
            response = await self._http.request(method, path, headers=headers, content=content, params=params)
        except httpx.HTTPError as error:
            raise KubeError(f"the Kubernetes API server did not answer ({type(error).__name__})") from None
        if response.status_code < 400:
            return response.json() if response.content else None
        raise _error(response, method, what, namespace)

    async def watch(self, path: str, *, resource_version: str, timeout_seconds: int = 300) -> AsyncIterator[Any]:
        """The watch events of a collection, as the console itself (one watch serves every browser)."""
        params = {"watch": "1", "resourceVersion": resource_version, "timeoutSeconds": str(timeout_seconds)}
        async with self._http.stream(
            "GET",
            path,
            headers=self._headers(None),
            params=params,
            timeout=httpx.Timeout(timeout_seconds + 30.0, connect=10.0),
        ) as response:
            if response.status_code >= 400:
                await response.aread()
                raise _error(response, "GET", path.rsplit("/", 1)[-1], "")
            async for line in response.aiter_lines():
                if line.strip():
                    yield json.loads(line)


def _error(response: httpx.Response, method: str, what: str, namespace: str) -> KubeError:
    try:
        status = response.json()
    except ValueError:
        status = {}
    message = str(status.get("message") or response.reason_phrase)
    reason = str(status.get("reason") or "")
    code = response.status_code
    if code == 403:
        where = f" in namespace {namespace}" if namespace else ""
        return KubeRefusedError(f"you may not {_verb_for(method)} {what or 'this'}{where}", code, reason)
    if code == 404:
        return KubeNotFoundError(message, code, reason)
    if code == 409:
        return KubeConflictError(message, code, reason)
    if code in (400, 422):
        return KubeInvalidError(message, code, reason)
    return KubeError(f"the Kubernetes API server answered {code}: {message}", code, reason)


def tasks_path(namespace: str | None = None, name: str | None = None) -> str:
    path = TASKS_API + (f"/namespaces/{namespace}" if namespace else "") + f"/{PLURAL}"
    return path + (f"/{name}" if name else "")


def secrets_path(namespace: str, name: str | None = None) -> str:
    return f"/api/v1/namespaces/{namespace}/secrets" + (f"/{name}" if name else "")


def events_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/events"
