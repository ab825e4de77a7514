"""A small client of the registry HTTP API (/v2/, the OCI distribution spec) on the standard library:
manifest digests by HEAD, manifests, tag lists and the catalog, with Basic or Bearer-token auth.

One keep-alive connection per thread. Credentials only ever travel in Authorization headers; they are never
logged and never part of an error message.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import logging
import re
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dth.image.errors import NotFoundError, RegistryAuthError, RegistryError
from dth.image.refs import api_host, api_repository

log = logging.getLogger(__name__)

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
PAGE_SIZE = 1000
TOKEN_LIFETIME_DEFAULT = 60.0  # seconds, when a token endpoint says nothing (the spec's default)


@dataclass(frozen=True)
class Login:
    username: str
    password: str = field(repr=False)

    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


LoginSource = Callable[[], Login | None]


@dataclass(frozen=True)
class ManifestInfo:
    digest: str
    media_type: str

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="https://auth",service="reg",scope="a,b"` -> ("bearer", {realm: ..., ...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        key.lower(): quoted.replace('\\"', '"') if quoted else bare
        for key, quoted, bare in re.findall(r'([A-Za-z][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))', rest)
    }
    return scheme.lower(), params


def next_link(header: str | None) -> str | None:
    """The target of a `Link: <...>; rel="next"` header (pagination of tags and the catalog)."""
    if not header:
        return None
    for part in header.split(","):
        match = re.match(r'\s*<([^>]+)>\s*;\s*rel="?next"?', part)
        if match:
            return match.group(1)
    return None


def _origin(scheme: str, netloc: str) -> tuple[str, int | None]:
    """(host, port) of an authority, the port defaulted by the scheme."""
    parts = urllib.parse.urlsplit(f"//{netloc}")
    try:
        port = parts.port
    except ValueError:
        return "", None
    return (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


def may_send_credentials(realm: str, registry_host: str, *, insecure: bool) -> bool:
    """Whether a token realm may receive the registry's Basic credentials: any HTTPS token service (Docker
    Hub's is another host), plain HTTP only to the registry's own host and port, and only when the user
    allowed plain HTTP for that registry. A registry must not be able to send the password anywhere."""
    parts = urllib.parse.urlsplit(realm)
    if parts.scheme == "https":
        return True
    if parts.scheme != "http" or not insecure:
        return False
    return _origin("http", parts.netloc) == _origin("http", registry_host)


class _NoCredentialsOnRedirect(urllib.request.HTTPRedirectHandler):
    """Follows a token service's redirects without any Authorization header (urllib copies the request's
    headers to the redirected request, whatever its host)."""

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        redirected = super().redirect_request(req, fp, code, msg, headers, newurl)
        if redirected is not None:
            for name in [name for name in redirected.headers if name.lower() == "authorization"]:
                del redirected.headers[name]
            for name in [name for name in redirected.unredirected_hdrs if name.lower() == "authorization"]:
                del redirected.unredirected_hdrs[name]
        return redirected


class RegistryClient:
    """The /v2/ API of one registry, for one identity."""

    def __init__(
        self,
        host: str,
        *,
        login: LoginSource | None = None,
        insecure: bool = False,
        timeout: float = 30.0,
        name: str = "registry",
    ) -> None:
        self.host = host
        self.name = name  # "source registry 127.0.0.1:5000", for messages
        self._connect_host = api_host(host)
        self._login = login or (lambda: None)
        self._insecure = insecure
        self._timeout = timeout
        self._scheme: str | None = None if insecure else "https"
        self._lock = threading.Lock()
        self._local = threading.local()
        self._auth_scheme: str | None = None  # "basic" or "bearer" once a challenge said so
        self._challenge: dict[str, str] = {}
        self._tokens: dict[str, tuple[str, float]] = {}
        self._context: ssl.SSLContext | None = None
        self._connections: list[http.client.HTTPConnection] = []
        self._connections_lock = threading.Lock()

    # -- API -------------------------------------------------------------------------------------

    def ping(self) -> None:
        """Check that the registry answers and accepts the credentials (raises RegistryError otherwise)."""
        response = self._request("GET", "/v2/", scope="")
        if response.status != 200:
            raise self._error(response, "GET /v2/")

    def head_manifest(self, repository: str, reference: str) -> ManifestInfo | None:
        """The digest and media type of repository:reference, or None when there is no such manifest."""
        path = f"/v2/{self._repo(repository)}/manifests/{reference}"
        response = self._request("HEAD", path, scope=self._pull_scope(repository), accept=MANIFEST_ACCEPT)
        if response.status == 404:
            return None
        if response.status != 200:
            raise self._error(response, f"{repository}:{reference}")
        digest = response.header("docker-content-digest")
        media_type = (response.header("content-type") or "").split(";")[0].strip()
        if not digest or not media_type:  # not every registry says on HEAD: read the manifest
            found = self.get_manifest(repository, reference)
            return found[0] if found else None
        return ManifestInfo(digest, media_type)

    def get_manifest(self, repository: str, reference: str) -> tuple[ManifestInfo, bytes] | None:
        path = f"/v2/{self._repo(repository)}/manifests/{reference}"
        response = self._request("GET", path, scope=self._pull_scope(repository), accept=MANIFEST_ACCEPT)
        if response.status == 404:
            return None
        if response.status != 200:
            raise self._error(response, f"{repository}:{reference}")
        computed = "sha256:" + hashlib.sha256(response.body).hexdigest()
        digest = response.header("docker-content-digest") or computed
        if digest.startswith("sha256:") and digest != computed:
            raise RegistryError(f"{self.name}: {repository}:{reference} does not match its digest {digest}")
        media_type = (response.header("content-type") or "").split(";")[0].strip()
        if not media_type or media_type in ("application/json", "text/plain"):
            media_type = str(_json(response.body).get("mediaType", ""))
        return ManifestInfo(digest, media_type), response.body

    def list_tags(self, repository: str) -> list[str]:
        """Every tag of a repository (NotFoundError when there is no such repository)."""
        tags: list[str] = []
        path: str | None = f"/v2/{self._repo(repository)}/tags/list?n={PAGE_SIZE}"
        while path:
            response = self._request("GET", path, scope=self._pull_scope(repository))
            if response.status == 404:
                raise NotFoundError(f"{self.name} has no repository {repository}", status=404)
            if response.status != 200:
                raise self._error(response, f"the tags of {repository}")
            tags.extend(str(t) for t in _json(response.body).get("tags") or [])
            path = self._same_host_path(next_link(response.header("link")))
        return sorted(set(tags))

    def catalog(self) -> list[str]:
        """Every repository the registry lists in /v2/_catalog."""
        repositories: list[str] = []
        path: str | None = f"/v2/_catalog?n={PAGE_SIZE}"
        while path:
            response = self._request("GET", path, scope="registry:catalog:*")
            if response.status in (401, 403, 404, 405):
                raise RegistryError(
                    f"{self.name} does not let this identity list its catalog (HTTP {response.status}): "
                    "name the images instead of all",
                    status=response.status,
                )
            if response.status != 200:
                raise self._error(response, "the catalog")
            repositories.extend(str(r) for r in _json(response.body).get("repositories") or [])
            path = self._same_host_path(next_link(response.header("link")))
        return sorted(set(repositories))

    def close(self) -> None:
        """Close every thread's connection."""
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()

    # -- transport -------------------------------------------------------------------------------

    def _repo(self, repository: str) -> str:
        return api_repository(self.host, repository)

    def _pull_scope(self, repository: str) -> str:
        return f"repository:{self._repo(repository)}:pull"

    def _same_host_path(self, link: str | None) -> str | None:
        if not link:
            return None
        parts = urllib.parse.urlsplit(link)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def _resolve_scheme(self) -> str:
        with self._lock:
            if self._scheme is None:
                # As skopeo with tls-verify=false: HTTPS without checks first, plain HTTP if that fails.
                try:
                    self._raw("https", "GET", "/v2/", {})
                    self._scheme = "https"
                except (ssl.SSLError, ConnectionResetError, http.client.BadStatusLine, http.client.RemoteDisconnected):
                    self._scheme = "http"
                except OSError as error:
                    raise self._unreachable(error) from None
                log.debug("registry %s speaks %s", self.host, self._scheme)
            return self._scheme

    def _ssl_context(self) -> ssl.SSLContext:
        """One context per client (loading the CA bundle costs tens of milliseconds); none loaded when
        certificates are not checked anyway."""
        if self._context is None:
            if self._insecure:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            else:
                context = ssl.create_default_context()
            self._context = context
        return self._context

    def _new_connection(self, scheme: str) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection
        if scheme == "https":
            connection = http.client.HTTPSConnection(
                self._connect_host, timeout=self._timeout, context=self._ssl_context()
            )
        else:
            connection = http.client.HTTPConnection(self._connect_host, timeout=self._timeout)
        with self._connections_lock:
            self._connections.append(connection)
        return connection

    def _raw(self, scheme: str, method: str, path: str, headers: dict[str, str]) -> Response:
        """One request on this thread's keep-alive connection (a fresh one after a stale keep-alive)."""
        for fresh in (False, True):
            connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
            if fresh or connection is None or getattr(self._local, "scheme", None) != scheme:
                if connection is not None:
                    connection.close()
                connection = self._new_connection(scheme)
                self._local.connection, self._local.scheme = connection, scheme
                fresh = True
            try:
                connection.request(method, path, headers={"User-Agent": "dth-image", **headers})
                response = connection.getresponse()
                body = response.read()
                return Response(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
            except (
                http.client.RemoteDisconnected,
                BrokenPipeError,
                ConnectionResetError,
                http.client.CannotSendRequest,
            ):
                connection.close()
                self._local.connection = None
                if fresh:
                    raise
            except BaseException:
                connection.close()
                self._local.connection = None
                raise
        raise AssertionError("unreachable")

    def _send(self, method: str, path: str, headers: dict[str, str]) -> Response:
        scheme = self._resolve_scheme()
        try:
            return self._raw(scheme, method, path, headers)
        except (OSError, http.client.HTTPException) as error:
            raise self._unreachable(error) from None

    def _unreachable(self, error: BaseException) -> RegistryError:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        return RegistryError(f"{self.name} is unreachable: {reason}", retryable=True)

    # -- auth ------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, scope: str, accept: str | None = None) -> Response:
        headers = {"Accept": accept} if accept else {}
        authorization = self._authorization(scope)
        response = self._send(method, path, {**headers, **authorization})
        if response.status != 401:
            return response
        challenge = response.header("www-authenticate") or ""
        scheme, params = parse_challenge(challenge)
        if scheme not in ("basic", "bearer"):
            raise RegistryAuthError(f"{self.name} asks for unsupported authentication {challenge[:80]!r}", status=401)
        with self._lock:
            self._auth_scheme, self._challenge = scheme, params
        if authorization.get("Authorization", "").lower().startswith(scheme) and scheme == "basic":
            raise RegistryAuthError(f"{self.name} rejected the credentials (HTTP 401 unauthorized)", status=401)
        if scheme == "basic" and self._login() is None:
            raise RegistryAuthError(f"{self.name} requires credentials (HTTP 401 unauthorized)", status=401)
        # A bearer challenge may name the scope it wants (insufficient_scope): ask for that one.
        wanted = params.get("scope") or scope
        authorization = self._authorization(wanted, force=True)
        response = self._send(method, path, {**headers, **authorization})
        if response.status == 401:
            has_login = self._login() is not None
            raise RegistryAuthError(
                f"{self.name} rejected the credentials (HTTP 401 unauthorized)"
                if has_login
                else f"{self.name} requires credentials (HTTP 401 unauthorized)",
                status=401,
            )
        return response

    def _authorization(self, scope: str, *, force: bool = False) -> dict[str, str]:
        if self._auth_scheme == "basic":
            login = self._login()
            return {"Authorization": login.basic()} if login else {}
        if self._auth_scheme == "bearer":
            with self._lock:
                cached = self._tokens.get(scope)
            if cached and cached[1] > time.monotonic() and not force:
                return {"Authorization": f"Bearer {cached[0]}"}
            # The realm is known: ask for this scope's token now rather than after another 401.
            return {"Authorization": f"Bearer {self._token(scope)}"}
        return {}

    def _token(self, scope: str) -> str:
        realm = self._challenge.get("realm")
        if not realm or not realm.startswith(("https://", "http://")):
            raise RegistryAuthError(f"{self.name} sent a bearer challenge without a usable realm", status=401)
        query = {k: v for k, v in (("service", self._challenge.get("service", "")), ("scope", scope)) if v}
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        request = urllib.request.Request(url, headers={"User-Agent": "dth-image"})
        login = self._login()
        if login is not None:
            if not may_send_credentials(realm, self._connect_host, insecure=self._insecure):
                where = urllib.parse.urlsplit(realm)
                raise RegistryAuthError(
                    f"{self.name} names the token service {where.scheme}://{where.netloc}: credentials are not sent "
                    "to a token service over plain HTTP unless it is the registry's own host (with insecure allowed)",
                    status=401,
                )
            # Not sent on to wherever the token service redirects (the handler below drops it too).
            request.add_unredirected_header("Authorization", login.basic())
        handlers: list[urllib.request.BaseHandler] = [_NoCredentialsOnRedirect()]
        if url.startswith("https://"):
            handlers.append(urllib.request.HTTPSHandler(context=self._ssl_context()))
        try:
            with urllib.request.build_opener(*handlers).open(request, timeout=self._timeout) as reply:
                data = _json(reply.read())
        except urllib.error.HTTPError as error:
            if error.code in (401, 403):
                raise RegistryAuthError(
                    f"{self.name}'s token service rejected the credentials (HTTP {error.code})", status=error.code
                ) from None
            raise RegistryError(
                f"{self.name}'s token service failed (HTTP {error.code})",
                status=error.code,
                retryable=error.code >= 500 or error.code == 429,
            ) from None
        except (OSError, urllib.error.URLError) as error:
            raise RegistryError(f"{self.name}'s token service is unreachable: {error}", retryable=True) from None
        token = data.get("token") or data.get("access_token")
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{self.name}'s token service returned no token")
        lifetime = float(data.get("expires_in") or TOKEN_LIFETIME_DEFAULT)
        with self._lock:
            self._tokens[scope] = (token, time.monotonic() + max(10.0, lifetime - 10))
        return token

    def _error(self, response: Response, what: str) -> RegistryError:
        detail = _error_detail(response.body)
        message = f"{self.name}: {what}: HTTP {response.status}" + (f" {detail}" if detail else "")
        if response.status in (401, 403):
            return RegistryAuthError(message, status=response.status)
        if response.status == 404:
            return NotFoundError(message, status=404)
        retryable = response.status >= 500 or response.status in (408, 429)
        return RegistryError(message, status=response.status, retryable=retryable)


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _error_detail(body: bytes) -> str:
    """The registry's own error codes, e.g. `MANIFEST_UNKNOWN: manifest unknown`."""
    errors = _json(body).get("errors")
    if not isinstance(errors, list):
        return ""
    parts = [f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors if isinstance(e, dict)]
    return "; ".join(p for p in parts if p)[:300]
