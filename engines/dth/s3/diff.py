"""The diff of two listings as a streaming merge-join: memory stays flat however many objects."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import Enum

from dth.errors import DthError
from dth.s3.compare import CompareStrategy, Verdict
from dth.s3.listing import ObjectInfo

# Objects that must be restored before they can be read.
ARCHIVED_STORAGE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})


class ChangeKind(Enum):
    COPY = "copy"
    DELETE = "delete"
    UNCHANGED = "unchanged"
    INSPECT = "inspect"  # the listings cannot tell; a HEAD of both objects decides
    UNAVAILABLE = "unavailable"  # cannot be read (archived); reported, never silently dropped


@dataclass(frozen=True, slots=True)
class Change:
    kind: ChangeKind
    key: str
    source: ObjectInfo | None
    destination: ObjectInfo | None
    reason: str = ""


class ListingOrderError(DthError):
    pass


def _ordered(objects: Iterable[ObjectInfo], side: str) -> Iterator[ObjectInfo]:
    """Refuse a listing out of key order: a merge-join over it would copy or delete the wrong objects."""
    previous: str | None = None
    for item in objects:
        if previous is not None and item.key <= previous:
            raise ListingOrderError(
                f"the {side} listing is not in key order ({previous!r} then {item.key!r}); "
                "the service does not list as S3 does"
            )
        previous = item.key
        yield item


def unavailable_reason(source: ObjectInfo) -> str | None:
    if source.storage_class in ARCHIVED_STORAGE_CLASSES:
        return f"storage class {source.storage_class}: restore the object before it can be copied"
    return None


def root_marker_reason(source_prefix: str, destination_prefix: str) -> str | None:
    """Why the object at the source prefix itself (relative key "": the folder marker `app/` of the prefix
    `app/`) cannot be copied, or None when it can: it becomes the destination prefix's own marker, and a
    destination without a prefix has none (S3 keys cannot be empty)."""
    if destination_prefix:
        return None
    return (
        f"the folder marker {source_prefix!r} is the source prefix itself, and the destination has no prefix "
        "whose marker it could become"
    )


def copy_or_unavailable(source: ObjectInfo, destination: ObjectInfo | None) -> Change:
    reason = unavailable_reason(source)
    if reason:
        return Change(ChangeKind.UNAVAILABLE, source.key, source, destination, reason)
    return Change(ChangeKind.COPY, source.key, source, destination)


def diff_listings(
    source: Iterable[ObjectInfo],
    destination: Iterable[ObjectInfo],
    strategy: CompareStrategy,
    *,
    selected: Callable[[str], bool] = lambda key: True,
    delete_extraneous: bool = False,
) -> Iterator[Change]:
    """Walk both sorted listings once, in step. Destination keys outside the selection are never
    deleted; destination-only keys are reported for deletion only in mirror mode."""
    sources = (item for item in _ordered(source, "source") if selected(item.key))
    destinations = (item for item in _ordered(destination, "destination") if selected(item.key))
    src = next(sources, None)
    dst = next(destinations, None)
    while src is not None or dst is not None:
        if dst is None or (src is not None and src.key < dst.key):
            assert src is not None
            yield copy_or_unavailable(src, None)
            src = next(sources, None)
        elif src is None or dst.key < src.key:
            if delete_extraneous:
                yield Change(ChangeKind.DELETE, dst.key, None, dst)
            dst = next(destinations, None)
        else:
            verdict = strategy.compare(src, dst)
            if verdict is Verdict.SAME:
                yield Change(ChangeKind.UNCHANGED, src.key, src, dst)
            elif verdict is Verdict.INSPECT:
                yield Change(ChangeKind.INSPECT, src.key, src, dst)
            else:
                yield copy_or_unavailable(src, dst)
            src = next(sources, None)
            dst = next(destinations, None)
