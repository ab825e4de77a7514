"""An HTTP proxy for tests that stands in front of a real S3 server and injects faults: S3 error
responses (500 InternalError, 503 SlowDown), connection resets, slow responses and rewritten response
bodies (a server that answers wrongly), for requests that match a rule, a given number of times or always.

The Host header is passed through unchanged, so SigV4 signatures made for the proxy's address stay
valid at the server behind it.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self
from urllib.parse import unquote, urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "expect", "te"}


@dataclass
class Fault:
    """What to do to matching requests: an S3 error `status`/`code`, a connection `reset`, a `delay`
    before forwarding, or a `rewrite` (old, new) of the server's response body. `times` None means every
    matching request."""

    method: str | None = None
    path_contains: str | None = None  # matched against the decoded path (bucket/key)
    query_contains: str | None = None
    body_contains: str | None = None  # for form-encoded APIs (CloudFormation: "Action=CreateStack")
    status: int = 500
    code: str = "InternalError"
    protocol: str = "s3"  # the error document's shape: "s3", or "query" (CloudFormation, SQS's XML, IAM...)
    reset: bool = False
    delay: float = 0.0
    rewrite: tuple[str, str] | None = None
    times: int | None = None
    hits: int = field(default=0, init=False)

    def matches(self, method: str, path: str, query: str, body: bytes = b"") -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method and self.method != method:
            return False
        if self.path_contains and self.path_contains not in path:
            return False
        if self.body_contains and self.body_contains.encode() not in body:
            return False
        return not (self.query_contains and self.query_contains not in query)


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the proxy received it (kept only by a proxy started with `record=True`)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


class FaultProxy:
    def __init__(self, upstream: str, host: str = "127.0.0.1", *, record: bool = False) -> None:
        target = urlsplit(upstream)
        self.upstream_host = target.hostname or "127.0.0.1"
        self.upstream_port = target.port or 80
        self.faults: list[Fault] = []
        self.requests = 0
        # Off by default: the proxied uploads of other tests would all be held in memory.
        self.record = record
        self.recorded: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def _fault_for(self, method: str, path: str, query: str, body: bytes, headers: dict[str, str]) -> Fault | None:
        with self._lock:
            self.requests += 1
            if self.record:
                self.recorded.append(RecordedRequest(method, path, query, headers, body))
            for fault in self.faults:
                if fault.matches(method, path, query, body):
                    fault.hits += 1
                    return fault
        return None

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the tests assert on outcomes, not on access logs."""

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                fault = proxy._fault_for(
                    self.command,
                    unquote(split.path),
                    split.query,
                    body,
                    {k.lower(): v for k, v in self.headers.items()},
                )
                if fault and fault.reset:
                    # RST instead of FIN: the client sees "connection reset by peer".
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                if fault and not fault.delay and fault.rewrite is None:
                    self._error(fault)
                    return
                if fault:
                    time.sleep(fault.delay)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=120)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    payload = response.read()
                finally:
                    upstream.close()
                if fault and fault.rewrite is not None:
                    old, new = fault.rewrite
                    payload = payload.replace(old.encode(), new.encode())
                self.send_response(response.status, response.reason)
                # A HEAD's Content-Length is the object's, not the (empty) payload's.
                for name, value in response.getheaders():
                    if name.lower() not in _HOP_BY_HOP and (name.lower() != "content-length" or self.command == "HEAD"):
                        self.send_header(name, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def _error(self, fault: Fault) -> None:
                error = f"<Code>{fault.code}</Code><Message>injected by the test proxy</Message>"
                if fault.protocol == "query":
                    document = f"<ErrorResponse><Error><Type>Sender</Type>{error}</Error><RequestId>0</RequestId></ErrorResponse>"
                else:
                    document = f"<Error>{error}</Error>"
                payload = f'<?xml version="1.0" encoding="UTF-8"?>{document}'.encode()
                self.send_response(fault.status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay  # noqa: N815 - http.server's names

        return Handler
