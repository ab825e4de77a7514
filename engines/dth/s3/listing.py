"""Listing a bucket in key order, split into parallel listings of its common prefixes.

The diff is a merge-join of two sorted listings, so the listing must come out in exactly the order
S3 lists keys (UTF-8 byte order, which is code-point order for Python strings). A delimited listing
reports each common prefix at the place of its first key, and every key under it sorts before the
next entry: listing each prefix separately and concatenating in that order keeps the total order.
"""

from __future__ import annotations

import heapq
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import botocore.exceptions

from dth.errors import AccessError, DthError
from dth.s3.sides import S3Side

DELIMITER = "/"
# Pages buffered per prefix listed ahead: bounds memory whatever the bucket's shape.
PAGES_AHEAD = 4


class ObjectInfo(NamedTuple):
    """An object as a listing shows it, with its key relative to the listed prefix. A tuple: a no-op re-sync
    makes one per object of both sides, and a frozen dataclass took four times as long to build."""

    key: str
    size: int
    etag: str
    storage_class: str = "STANDARD"
    last_modified: str | None = None  # as the service wrote it (not parsed: see dth.s3.sides)

    @property
    def is_multipart(self) -> bool:
        return "-" in self.etag


def normalize_etag(etag: str | None) -> str:
    """ETags arrive quoted, unquoted (Ceph's CopyObject) or empty; compare them bare."""
    return (etag or "").strip().strip('"')


def _object_from_listing(entry: dict[str, Any], prefix_length: int) -> ObjectInfo:
    return ObjectInfo(
        key=entry["Key"][prefix_length:],
        size=int(entry.get("Size", 0)),
        etag=normalize_etag(entry.get("ETag")),
        storage_class=entry.get("StorageClass") or "STANDARD",
        last_modified=entry.get("LastModified"),
    )


class TruncatedListingError(DthError):
    """A listing page that says more keys follow but gives no way to fetch them."""


def _pages(side: S3Side, prefix: str, delimiter: str | None) -> Iterator[dict[str, Any]]:
    paginator = side.client.get_paginator("list_objects_v2")
    arguments: dict[str, Any] = {"Bucket": side.bucket, "Prefix": prefix, **side.request_payer}
    if delimiter:
        arguments["Delimiter"] = delimiter
    for page in paginator.paginate(**arguments):
        # botocore's paginator ends quietly on a page without a token, whatever IsTruncated says: the keys
        # after it would be taken for absent (not copied, or deleted in mirror mode) and the run for a success.
        if page.get("IsTruncated") and not page.get("NextContinuationToken"):
            raise TruncatedListingError(
                f"{side.role} listing failed: the server returned a truncated listing of "
                f"s3://{side.bucket}/{prefix} (IsTruncated is true) without a continuation token"
            )
        yield page


def list_flat(side: S3Side, prefix: str | None = None) -> Iterator[list[ObjectInfo]]:
    """Pages of objects under `prefix` (the side's own prefix by default), keys relative to the side's."""
    root_length = len(side.prefix)
    for page in _pages(side, side.prefix if prefix is None else prefix, None):
        yield [_object_from_listing(entry, root_length) for entry in page.get("Contents", [])]


@dataclass(frozen=True)
class _PrefixSegment:
    prefix: str


_Segment = ObjectInfo | _PrefixSegment


def _segments(side: S3Side, prefix: str, depth: int) -> Iterator[_Segment]:
    """The listing as a sequence, in key order, of objects and of prefixes still to list."""
    if depth <= 0:
        yield _PrefixSegment(prefix)
        return
    root_length = len(side.prefix)
    for page in _pages(side, prefix, DELIMITER):
        objects: Iterator[tuple[str, _Segment]] = (
            (entry["Key"], _object_from_listing(entry, root_length)) for entry in page.get("Contents", [])
        )
        prefixes: Iterator[tuple[str, _Segment]] = (
            (entry["Prefix"], _PrefixSegment(entry["Prefix"])) for entry in page.get("CommonPrefixes", [])
        )
        for _, segment in heapq.merge(objects, prefixes, key=lambda pair: pair[0]):
            if isinstance(segment, _PrefixSegment):
                yield from _segments(side, segment.prefix, depth - 1)
            else:
                yield segment


class _CancelledError(Exception):
    pass


class _PrefetchedListing:
    """A prefix listed by a pool thread into a small bounded buffer, consumed later in order."""

    _END = object()

    def __init__(self, pages: Callable[[], Iterable[list[ObjectInfo]]], stop: threading.Event) -> None:
        self._buffer: queue.Queue[object] = queue.Queue(maxsize=PAGES_AHEAD)
        self._pages = pages
        self._stop = stop

    def _put(self, item: object) -> None:
        while True:
            if self._stop.is_set():
                raise _CancelledError
            try:
                self._buffer.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def produce(self) -> None:
        try:
            for page in self._pages():
                self._put(page)
            self._put(self._END)
        except _CancelledError:
            return
        except BaseException as error:  # handed to the consumer, which re-raises it in order
            try:
                self._put(error)
            except _CancelledError:
                return

    def objects(self) -> Iterator[ObjectInfo]:
        while True:
            item = self._buffer.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, list)
            yield from item


def list_objects(side: S3Side, *, depth: int = 1, threads: int = 8, prefix: str | None = None) -> Iterator[ObjectInfo]:
    """Every object under the side's prefix (or `prefix` within it), in key order.

    Up to `threads` common prefixes (at `depth` delimiters below the prefix) are listed at once, ahead
    of the consumer; an error in any listing is raised here, in order, never taken for the end of data.
    """
    try:
        yield from _list_objects(side, depth, threads, prefix)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
        raise AccessError(side.explain(error, "listing")) from None


def _list_objects(side: S3Side, depth: int, threads: int, prefix: str | None) -> Iterator[ObjectInfo]:
    start = side.prefix if prefix is None else prefix
    if depth <= 0 or threads <= 1:
        for page in list_flat(side, start):
            yield from page
        return
    stop = threading.Event()
    pending: deque[ObjectInfo | _PrefetchedListing] = deque()
    segments = _segments(side, start, depth)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"list-{side.role}") as pool:
        try:
            running = 0
            exhausted = False
            while True:
                # Keep the pool busy with the next prefixes while the head of the line is consumed.
                while not exhausted and running < threads and len(pending) < threads * 64:
                    segment = next(segments, None)
                    if segment is None:
                        exhausted = True
                        break
                    if isinstance(segment, _PrefixSegment):
                        listing = _PrefetchedListing(partial(list_flat, side, segment.prefix), stop)
                        pool.submit(listing.produce)
                        pending.append(listing)
                        running += 1
                    else:
                        pending.append(segment)
                if not pending:
                    return
                head = pending.popleft()
                if isinstance(head, ObjectInfo):
                    yield head
                else:
                    running -= 1
                    yield from head.objects()
        finally:
            stop.set()
