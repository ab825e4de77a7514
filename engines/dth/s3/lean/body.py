"""GetObject's Body on the lean client: botocore.response.StreamingBody's interface and checks, without its
imports (botocore.response loads urllib3 and botocore's parsers, a fifth of a second that every thread's first
GetObject waited for under the import lock)."""

from __future__ import annotations

from collections.abc import Iterator
from io import IOBase
from typing import Any

import botocore.exceptions


class StreamingBody(IOBase):
    """A response body that checks, once read to its end, that it had Content-Length bytes. As botocore's,
    `with body as raw` hands out the raw stream and closes it at the end."""

    _DEFAULT_CHUNK_SIZE = 1024

    def __init__(self, raw_stream: Any, content_length: int | None) -> None:
        self._raw_stream = raw_stream
        self._content_length = content_length
        self._amount_read = 0

    def __del__(self) -> None:  # IOBase closes on garbage collection; botocore's does not, nor does this
        pass

    def readable(self) -> bool:
        return True

    def read(self, amt: int | None = None) -> bytes:
        chunk: bytes = self._raw_stream.read(amt)
        self._amount_read += len(chunk)
        if amt is None or (not chunk and amt > 0):
            self._verify_content_length()
        return chunk

    def readinto(self, b: Any) -> int:
        amount: int = self._raw_stream.readinto(b)
        self._amount_read += amount
        if amount == 0 and len(b) > 0:
            self._verify_content_length()
        return amount

    def __iter__(self) -> Iterator[bytes]:
        return self.iter_chunks(self._DEFAULT_CHUNK_SIZE)

    def __next__(self) -> bytes:
        chunk = self.read(self._DEFAULT_CHUNK_SIZE)
        if chunk:
            return chunk
        raise StopIteration

    def __enter__(self) -> Any:
        return self._raw_stream

    def __exit__(self, *_: object) -> None:
        self._raw_stream.close()

    def iter_chunks(self, chunk_size: int = _DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        while True:
            chunk = self.read(chunk_size)
            if chunk == b"":
                break
            yield chunk

    def iter_lines(self, chunk_size: int = _DEFAULT_CHUNK_SIZE, keepends: bool = False) -> Iterator[bytes]:
        pending = b""
        for chunk in self.iter_chunks(chunk_size):
            lines = (pending + chunk).splitlines(True)
            for line in lines[:-1]:
                yield line.splitlines(keepends)[0]
            pending = lines[-1]
        if pending:
            yield pending.splitlines(keepends)[0]

    def close(self) -> None:
        self._raw_stream.close()

    def _verify_content_length(self) -> None:
        if self._content_length is not None and self._amount_read != int(self._content_length):
            raise botocore.exceptions.IncompleteReadError(
                actual_bytes=self._amount_read, expected_bytes=int(self._content_length)
            )
