"""The lean client reads a response's header fields without the email package, as http.client reads them: the
same fields, values and framing (length, chunked, keep-alive) for the answers S3 and its look-alikes send. A
narrow unit test over canned answers: every answer of the S3 suites also goes through it."""

from __future__ import annotations

import http.client
import io

import pytest

from dth.s3.lean.http import FastHeadersResponse

ANSWERS = [
    b'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: "abc"\r\nx-amz-meta-Odd:  two  spaces \r\n'
    b"x-amz-meta-empty:\r\nConnection: Keep-Alive\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/xml\r\n\r\n3\r\n<a>\r\n0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nx-amz-request-id: 1\r\n\r\n",
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\nSet-Cookie: a\r\nSet-Cookie: b\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nX-Folded: first\r\n  second\r\n\r\nbody",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nx-amz-meta-caf\xe9: \xe9t\xe9\r\nETag: lost\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nx-amz-meta-v: \xe9t\xe9\r\nno colon\r\nETag: lost\r\n\r\nok",
]


class _Socket:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(io.BytesIO(self._data))


@pytest.mark.parametrize("answer", ANSWERS, ids=range(len(ANSWERS)))
def test_header_fields_are_read_as_http_client_reads_them(answer: bytes) -> None:
    expected = http.client.HTTPResponse(_Socket(answer))  # type: ignore[arg-type]
    expected.begin()
    got = FastHeadersResponse(_Socket(answer))  # type: ignore[arg-type]
    got.begin()
    assert got.getheaders() == expected.getheaders()
    assert (got.status, got.reason, got.version) == (expected.status, expected.reason, expected.version)
    assert (got.length, got.chunked, got.will_close) == (expected.length, expected.chunked, expected.will_close)
    assert got.getheader("set-cookie") == expected.getheader("set-cookie")
    assert got.getheader("missing", "none") == expected.getheader("missing", "none")
    assert got.read() == expected.read()
