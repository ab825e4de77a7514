"""The registry client's Bearer-token flow (Docker Hub, Quay, GHCR, GCR all use it), against a small
registry written here: docker-registry itself only offers token auth with a JWT-signing token service."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from dth.image.errors import RegistryAuthError
from dth.image.registry import OCI_MANIFEST, Login, RegistryClient, may_send_credentials

MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode()
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
USER, PASSWORD = "robot", "hunter2-token-pass"


class _Registry(BaseHTTPRequestHandler):
    tokens_issued: list[str]
    scopes: list[str]
    authorizations: list[str]  # the Authorization header of every token request ("" without one)
    realm: str | None = None  # the token realm challenges name; None: this server's /token
    redirect_token_to: str | None = None  # where /token redirects to, if anywhere

    def log_message(self, *_: object) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _challenge(self, scope: str) -> None:
        realm = self.realm or f"http://{self.headers['Host']}/token"
        self._send(401, b"{}", {"WWW-Authenticate": f'Bearer realm="{realm}",service="test",scope="{scope}"'})

    def do_GET(self) -> None:
        self._route()

    def do_HEAD(self) -> None:
        self._route()

    def _route(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/token":
            query = parse_qs(url.query)
            auth = self.headers.get("Authorization", "")
            self.authorizations.append(auth)
            if self.redirect_token_to:
                self._send(302, b"", {"Location": f"{self.redirect_token_to}?{url.query}"})
                return
            if auth:
                user, _, password = base64.b64decode(auth.removeprefix("Basic ")).decode().partition(":")
                if (user, password) != (USER, PASSWORD):
                    self._send(401, b'{"details": "incorrect username or password"}')
                    return
            who = "user" if auth else "anonymous"
            scope = query.get("scope", [""])[0]
            self.scopes.append(scope)
            token = f"{who}:{scope}"
            self.tokens_issued.append(token)
            self._send(200, json.dumps({"token": token, "expires_in": 300}).encode())
            return
        auth = self.headers.get("Authorization", "")
        if url.path == "/v2/":
            if not auth.startswith("Bearer "):
                self._challenge("")
                return
            self._send(200, b"{}")
            return
        if url.path.startswith("/v2/private/") and auth != "Bearer user:repository:private:pull":
            self._challenge("repository:private:pull")
            return
        if url.path.startswith("/v2/") and not auth.startswith("Bearer "):
            repository = url.path[len("/v2/") :].split("/manifests/")[0].split("/tags/")[0]
            self._challenge(f"repository:{repository}:pull")
            return
        if url.path.endswith("/manifests/1.0"):
            self._send(200, MANIFEST, {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": DIGEST})
        elif url.path.endswith("/tags/list"):
            self._send(200, json.dumps({"name": "x", "tags": ["1.0", "2.0"]}).encode())
        else:
            self._send(404, b'{"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}')


@contextmanager
def serving() -> Iterator[tuple[str, type[_Registry]]]:
    """A registry stand-in on a free port: its host:port and its handler class (settings and what it saw)."""
    handler = type("Handler", (_Registry,), {"tokens_issued": [], "scopes": [], "authorizations": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def token_registry() -> Iterator[tuple[str, type[_Registry]]]:
    with serving() as running:
        yield running


@pytest.fixture
def other_host() -> Iterator[tuple[str, type[_Registry]]]:
    """Another server (another port: another origin), whose /token records what it is sent."""
    with serving() as running:
        yield running


def test_anonymous_bearer_tokens_per_repository(token_registry: tuple[str, type[_Registry]]) -> None:
    host, handler = token_registry
    client = RegistryClient(host, insecure=True, name="registry")
    client.ping()
    found = client.head_manifest("public/app", "1.0")
    assert found is not None and found.digest == DIGEST
    assert client.head_manifest("public/app", "9.9") is None
    assert client.list_tags("public/app") == ["1.0", "2.0"]
    assert "repository:public/app:pull" in handler.scopes
    issued = len(handler.tokens_issued)
    client.head_manifest("public/app", "1.0")  # the token is reused while it lasts
    assert len(handler.tokens_issued) == issued
    with pytest.raises(RegistryAuthError, match="requires credentials"):
        client.head_manifest("private", "1.0")


def test_credentials_go_to_the_token_service(token_registry: tuple[str, type[_Registry]]) -> None:
    host, handler = token_registry
    client = RegistryClient(host, insecure=True, login=lambda: Login(USER, PASSWORD), name="registry")
    client.ping()
    found = client.head_manifest("private", "1.0")
    assert found is not None and found.digest == DIGEST
    assert "user:repository:private:pull" in handler.tokens_issued


def test_wrong_credentials_are_named_without_the_password(token_registry: tuple[str, type[_Registry]]) -> None:
    host, _ = token_registry
    client = RegistryClient(host, insecure=True, login=lambda: Login(USER, "wrong-pass-987"), name="source registry")
    with pytest.raises(RegistryAuthError) as caught:
        client.ping()
    assert str(caught.value) == "source registry's token service rejected the credentials (HTTP 401)"
    assert "wrong-pass-987" not in str(caught.value)


def test_unreachable_registry_is_retryable() -> None:
    from dth.devtools.ports import free_port
    from dth.image.errors import RegistryError

    client = RegistryClient(f"127.0.0.1:{free_port()}", insecure=True, name="registry")
    with pytest.raises(RegistryError, match="is unreachable") as caught:
        client.ping()
    assert caught.value.retryable


def test_credentials_are_not_sent_to_a_plain_http_realm_on_another_host(
    token_registry: tuple[str, type[_Registry]], other_host: tuple[str, type[_Registry]]
) -> None:
    host, handler = token_registry
    elsewhere, recorder = other_host
    handler.realm = f"http://{elsewhere}/token"
    client = RegistryClient(host, insecure=True, login=lambda: Login(USER, PASSWORD), name="source registry")
    with pytest.raises(RegistryAuthError, match="credentials are not sent") as caught:
        client.head_manifest("private", "1.0")
    assert PASSWORD not in str(caught.value)
    assert not any(recorder.authorizations), "the credentials reached another host over plain HTTP"


def test_credentials_are_not_carried_across_a_token_service_redirect(
    token_registry: tuple[str, type[_Registry]], other_host: tuple[str, type[_Registry]]
) -> None:
    host, handler = token_registry
    elsewhere, recorder = other_host
    handler.redirect_token_to = f"http://{elsewhere}/token"
    client = RegistryClient(host, insecure=True, login=lambda: Login(USER, PASSWORD), name="source registry")
    with pytest.raises(RegistryAuthError):  # the redirected request is anonymous: no token for a private image
        client.head_manifest("private", "1.0")
    assert handler.authorizations and all(a.startswith("Basic ") for a in handler.authorizations)
    assert recorder.authorizations, "the redirect was not followed"
    assert not any(recorder.authorizations), "the credentials followed the redirect"


@pytest.mark.parametrize(
    ("realm", "registry", "insecure", "allowed"),
    [
        ("https://auth.docker.io/token", "registry-1.docker.io", False, True),  # HTTPS: any token service
        ("https://reg.example:5000/token", "reg.example:5000", True, True),
        ("http://reg.example:5000/token", "reg.example:5000", True, True),  # the user allowed plain HTTP here
        ("http://REG.example:5000/token", "reg.example:5000", True, True),
        ("http://reg.example/token", "reg.example", True, True),
        ("http://reg.example:5000/token", "reg.example:5000", False, False),  # not allowed plain HTTP
        ("http://auth.example/token", "reg.example", True, False),  # plain HTTP to another host
        ("http://reg.example:5001/token", "reg.example:5000", True, False),  # ... or another port
        ("http://reg.example:80/token", "reg.example:8080", True, False),
        ("ftp://reg.example/token", "reg.example", True, False),
    ],
)
def test_which_token_realms_may_receive_credentials(realm: str, registry: str, insecure: bool, allowed: bool) -> None:
    assert may_send_credentials(realm, registry, insecure=insecure) is allowed
