"""HTTP/1.1 connections on http.client, kept alive in one small pool per thread: no locks, no urllib3.

Honours what botocore honours for the data path: TLS verification against AWS_CA_BUNDLE (or the session's
ca_bundle), proxies from the environment (HTTP_PROXY, HTTPS_PROXY, NO_PROXY), TCP keep-alive.
"""

from __future__ import annotations

import base64
import http.client
import re
import socket
import ssl
import threading
import urllib.request
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

_Key = tuple[str, str, int]


@dataclass(frozen=True)
class HttpSettings:
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    # True: the default trust store; a path: that bundle; False: no verification.
    verify: bool | str = True


class StaleConnection(ConnectionResetError):  # noqa: N818 - a signal to retry on a fresh connection
    """A kept-alive connection the server had closed, found before any response byte arrived."""


class ConnectionPools:
    """One list of idle connections per thread and endpoint."""

    def __init__(self, settings: HttpSettings) -> None:
        self._settings = settings
        self._local = threading.local()
        self._ssl: ssl.SSLContext | None = None
        self._ssl_lock = threading.Lock()
        # Read once per endpoint: scanning os.environ for proxies cost more than signing a request.
        self._proxies: dict[tuple[str, str], str | None] = {}

    def _ssl_context(self) -> ssl.SSLContext:
        with self._ssl_lock:
            if self._ssl is None:
                verify = self._settings.verify
                if verify is False:
                    context = ssl._create_unverified_context()
                else:
                    context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
                self._ssl = context
            return self._ssl

    def _idle(self, key: _Key) -> list[http.client.HTTPConnection]:
        pools: dict[_Key, list[http.client.HTTPConnection]] | None = getattr(self._local, "pools", None)
        if pools is None:
            pools = self._local.pools = {}
        idle = pools.get(key)
        if idle is None:
            idle = pools[key] = []
        return idle

    def acquire(self, scheme: str, host: str, port: int) -> tuple[http.client.HTTPConnection, bool, str | None]:
        """A connection, whether it was used before, and the proxy's absolute-URL prefix for plain HTTP
        through a proxy (None when the request line carries only the path)."""
        key = (scheme, host, port)
        idle = self._idle(key)
        try:
            proxy = self._proxies[scheme, host]
        except KeyError:
            proxy = self._proxies[scheme, host] = _proxy_for(scheme, host)
        prefix = f"http://{host}:{port}" if proxy and scheme == "http" else None
        if idle:
            return idle.pop(), True, prefix
        return self._connect(scheme, host, port, proxy), False, prefix

    def discard_idle(self, scheme: str, host: str, port: int) -> None:
        """Close the thread's idle connections to an endpoint: after one was found closed, the others
        (idle as long or longer) most likely are too."""
        idle = self._idle((scheme, host, port))
        while idle:
            idle.pop().close()

    def release(self, scheme: str, host: str, port: int, connection: http.client.HTTPConnection) -> None:
        self._idle((scheme, host, port)).append(connection)

    def _connect(self, scheme: str, host: str, port: int, proxy: str | None) -> http.client.HTTPConnection:
        timeout = self._settings.connect_timeout
        connection: http.client.HTTPConnection
        proxy_headers: dict[str, str] = {}
        if proxy:
            parts = urlsplit(proxy if "//" in proxy else f"http://{proxy}")
            if parts.username is not None:
                credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
                proxy_headers["Proxy-Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
            proxy_host, proxy_port = parts.hostname or "", parts.port or 8080
            if scheme == "https":
                connection = http.client.HTTPSConnection(
                    proxy_host, proxy_port, timeout=timeout, context=self._ssl_context()
                )
                connection.set_tunnel(host, port, headers=proxy_headers)
            else:
                connection = _ProxiedHTTPConnection(proxy_host, proxy_port, timeout=timeout)
                connection.proxy_headers = proxy_headers
        elif scheme == "https":
            connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl_context())
        else:
            connection = http.client.HTTPConnection(host, port, timeout=timeout)
        connection.response_class = FastHeadersResponse
        connection.connect()
        assert connection.sock is not None
        connection.sock.settimeout(self._settings.read_timeout)
        connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return connection


class HeaderFields:
    """A response's header fields with what http.client's HTTPResponse and the lean client read of its
    HTTPMessage (get, get_all, items, keys, `in`), parsed as the email package's compat32 policy parses them, but
    without it: http.client's parse_headers cost more CPU than signing the request."""

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._fields = fields

    def get(self, name: str, default: str | None = None) -> str | None:
        wanted = name.lower()
        for field_name, value in self._fields:
            if field_name.lower() == wanted:
                return value
        return default

    def get_all(self, name: str, default: list[str] | None = None) -> list[str] | None:
        wanted = name.lower()
        found = [value for field_name, value in self._fields if field_name.lower() == wanted]
        return found or default

    def items(self) -> list[tuple[str, str]]:
        return list(self._fields)

    def keys(self) -> list[str]:
        return [name for name, _ in self._fields]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None


_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]*")  # the email package's header name: printable ASCII, no colon


def parse_header_lines(lines: list[bytes]) -> HeaderFields:
    """Header lines (as http.client reads them, the blank line last) into fields: `Name: value`, continuation
    lines kept as the email package keeps them, and nothing after a line that is no field, as it does."""
    fields: list[tuple[str, str]] = []
    for raw in lines:
        line = raw.decode("iso-8859-1")
        if line in ("\r\n", "\n", ""):
            break
        if line[0] in " \t" and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + line)
            continue
        name, colon, value = line.partition(":")
        if not colon or not _FIELD_NAME.fullmatch(name):
            break  # the email package takes the rest for the body: no more fields
        fields.append((name, value.lstrip(" \t")))
    return HeaderFields([(name, value.rstrip("\r\n")) for name, value in fields])


class FastHeadersResponse(http.client.HTTPResponse):
    """http.client's response with its header fields read by parse_header_lines."""

    def begin(self) -> None:
        if self.headers is not None:
            return
        while True:
            version, status, reason = self._read_status()
            if status != http.client.CONTINUE:
                break
            http.client._read_headers(self.fp)
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = parse_header_lines(http.client._read_headers(self.fp))
        encoding = self.headers.get("transfer-encoding")
        self.chunked = bool(encoding and encoding.lower() == "chunked")
        if self.chunked:
            self.chunk_left = None
        self.will_close = self._check_close()
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:
                    self.length = None
        if (
            status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED)
            or 100 <= status < 200
            or self._method == "HEAD"
        ):
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True


class _ProxiedHTTPConnection(http.client.HTTPConnection):
    """Plain HTTP through a forward proxy: absolute URLs on the request line, proxy credentials per request."""

    proxy_headers: dict[str, str]


def _proxy_for(scheme: str, host: str) -> str | None:
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(scheme)
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if not proxy or bypass(host, proxies):
        return None
    return proxy


def send(
    connection: http.client.HTTPConnection,
    method: str,
    target: str,
    headers: dict[str, str],
    body: bytes | bytearray | memoryview | None,
    reused: bool,
) -> http.client.HTTPResponse:
    """Send one request and read the status line and headers."""
    try:
        connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        if isinstance(connection, _ProxiedHTTPConnection):
            for name, value in connection.proxy_headers.items():
                connection.putheader(name, value)
        connection.endheaders(body)
        return connection.getresponse()
    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as error:
        connection.close()
        if reused:
            raise StaleConnection from error
        raise
    except BaseException:
        connection.close()
        raise
