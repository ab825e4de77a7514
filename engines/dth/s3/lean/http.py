"""HTTP/1.1 connections on http.client, kept alive in one small pool per thread: no locks, no urllib3.

Honours what botocore honours for the data path: TLS verification against AWS_CA_BUNDLE (or the session's
ca_bundle), proxies from the environment (HTTP_PROXY, HTTPS_PROXY, NO_PROXY), TCP keep-alive.
"""

from __future__ import annotations

import base64
import http.client
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
        connection.connect()
        assert connection.sock is not None
        connection.sock.settimeout(self._settings.read_timeout)
        connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return connection


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
