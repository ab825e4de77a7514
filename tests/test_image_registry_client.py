"""The registry client's Bearer-token flow (Docker Hub, Quay, GHCR, GCR all use it), against a small
registry written here: docker-registry itself only offers token auth with a JWT-signing token service."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from dth.image.errors import RegistryAuthError
from dth.image.registry import OCI_MANIFEST, Login, RegistryClient

MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode()
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
USER, PASSWORD = "robot", "hunter2-token-pass"


class _Registry(BaseHTTPRequestHandler):
    tokens_issued: list[str]
    scopes: list[str]

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
        realm = f"http://{self.headers['Host']}/token"
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


@pytest.fixture
def token_registry() -> Iterator[tuple[str, type[_Registry]]]:
    handler = type("Handler", (_Registry,), {"tokens_issued": [], "scopes": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


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
