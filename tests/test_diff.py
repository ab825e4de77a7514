"""The streaming merge-join diff against a set-based model of the same decisions."""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from fnmatch import fnmatchcase

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dth.s3.compare import Checksum, CompareStrategy, CopyAlways, SizeAndEtag, SizeOnly, Verdict
from dth.s3.diff import ARCHIVED_STORAGE_CLASSES, Change, ChangeKind, ListingOrderError, diff_listings
from dth.s3.filters import KeyFilter
from dth.s3.listing import ObjectInfo

MiB = 1024 * 1024

# --- keys as S3 allows them, sorted as S3 lists them ------------------------------------------

SPECIAL_CHARACTERS = [
    " ",
    "+",
    "%",
    "?",
    "#",
    "/",
    "&",
    "=",
    "~",
    "*",
    "[",
    ".",
    "-",
    "_",
    "a",
    "b",
    "A",
    "0",
    "\u00a0",  # no-break space
    "é",
    "ß",
    "中",
    "文",
    "\uffff",  # the last BMP code point: sorts before every astral one in UTF-8, after them in UTF-16
    "😀",
    "\U0010ffff",
]
# Lone surrogates cannot be encoded as UTF-8 and cannot appear in an S3 key.
key_characters = st.one_of(
    st.sampled_from(SPECIAL_CHARACTERS),
    st.characters(exclude_categories=("Cs",)),
)
short_keys = st.text(key_characters, min_size=1, max_size=12)
long_keys = st.builds(
    lambda head, length, tail: head + "k" * length + tail,
    short_keys,
    st.integers(min_value=200, max_value=1000),
    short_keys,
)
keys = st.one_of(short_keys, short_keys, short_keys, long_keys)


def s3_order(objects: Sequence[ObjectInfo]) -> list[ObjectInfo]:
    """S3 lists keys in UTF-8 byte order."""
    return sorted(objects, key=lambda item: item.key.encode("utf-8"))


@settings(max_examples=200, deadline=None)
@given(st.lists(keys, max_size=20))
def test_code_point_order_is_utf8_byte_order(names: list[str]) -> None:
    assert sorted(names) == sorted(names, key=lambda k: k.encode("utf-8"))


def test_code_point_order_differs_from_utf16_order() -> None:
    """The diff compares Python strings: right for S3 (UTF-8), where UTF-16 order would be wrong."""
    names = ["\uffff", "😀", "a"]
    assert sorted(names) == ["a", "\uffff", "😀"]
    assert sorted(names, key=lambda k: k.encode("utf-8")) == ["a", "\uffff", "😀"]
    assert sorted(names, key=lambda k: k.encode("utf-16-be")) == ["a", "😀", "\uffff"]


# --- listings -----------------------------------------------------------------------------------


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


# Few sizes and ETags, so that common keys often agree and often do not.
SIZES = [0, 1, 5 * MiB]
ETAGS = [md5_hex("a"), md5_hex("b"), md5_hex("c") + "-2", md5_hex("d") + "-3"]
STORAGE_CLASSES = ["STANDARD", "STANDARD", "STANDARD", "STANDARD_IA", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE"]


def objects_for(key: str) -> st.SearchStrategy[ObjectInfo]:
    return st.builds(
        ObjectInfo,
        key=st.just(key),
        size=st.sampled_from(SIZES),
        etag=st.sampled_from(ETAGS),
        storage_class=st.sampled_from(STORAGE_CLASSES),
    )


@st.composite
def listing_pairs(draw: st.DrawFn) -> tuple[list[ObjectInfo], list[ObjectInfo]]:
    names = draw(st.lists(keys, unique=True, max_size=30))
    source: list[ObjectInfo] = []
    destination: list[ObjectInfo] = []
    for name in names:
        where = draw(st.sampled_from(["source", "destination", "both", "both"]))
        if where in ("source", "both"):
            source.append(draw(objects_for(name)))
        if where == "destination":
            destination.append(draw(objects_for(name)))
        elif where == "both":
            if draw(st.booleans()):  # the same object, as a previous run left it
                destination.append(ObjectInfo(name, source[-1].size, source[-1].etag))
            else:
                destination.append(draw(objects_for(name)))
    return s3_order(source), s3_order(destination)


PATTERNS = ["*", "*/*", "a*", "*a*", "*%*", "*+*", "* *", "*#*", "*?*", "*中*", "*[ab]*", "??*", "*/", "*.*"]
patterns = st.lists(st.sampled_from(PATTERNS), max_size=2)
strategies = st.sampled_from([SizeOnly(), SizeAndEtag(), Checksum(), CopyAlways()])

# --- the model ----------------------------------------------------------------------------------

_PLAIN_MD5 = re.compile(r"[0-9a-f]{32}")


def expected_verdict(strategy: CompareStrategy, source: ObjectInfo, destination: ObjectInfo) -> Verdict:
    if isinstance(strategy, CopyAlways) or source.size != destination.size:
        return Verdict.DIFFERENT
    if isinstance(strategy, SizeOnly):
        return Verdict.SAME
    if isinstance(strategy, Checksum):
        return Verdict.INSPECT
    if source.etag == destination.etag:
        return Verdict.SAME
    if _PLAIN_MD5.fullmatch(source.etag) and _PLAIN_MD5.fullmatch(destination.etag):
        return Verdict.DIFFERENT
    return Verdict.INSPECT


def model_selected(include: Sequence[str], exclude: Sequence[str]) -> Callable[[str], bool]:
    def selected(key: str) -> bool:
        included = not include or any(fnmatchcase(key, p) for p in include)
        return included and not any(fnmatchcase(key, p) for p in exclude)

    return selected


def expected_changes(
    source: Sequence[ObjectInfo],
    destination: Sequence[ObjectInfo],
    strategy: CompareStrategy,
    selected: Callable[[str], bool],
    delete_extraneous: bool,
) -> list[tuple[ChangeKind, str, ObjectInfo | None, ObjectInfo | None]]:
    sources = {o.key: o for o in source if selected(o.key)}
    destinations = {o.key: o for o in destination if selected(o.key)}
    changes: list[tuple[ChangeKind, str, ObjectInfo | None, ObjectInfo | None]] = []
    for key in sorted(sources.keys() | destinations.keys()):
        src, dst = sources.get(key), destinations.get(key)
        if src is None:
            if delete_extraneous:
                changes.append((ChangeKind.DELETE, key, None, dst))
            continue
        verdict = Verdict.DIFFERENT if dst is None else expected_verdict(strategy, src, dst)
        if verdict is Verdict.SAME:
            kind = ChangeKind.UNCHANGED
        elif verdict is Verdict.INSPECT:
            kind = ChangeKind.INSPECT
        elif src.storage_class in ("GLACIER", "DEEP_ARCHIVE"):
            kind = ChangeKind.UNAVAILABLE
        else:
            kind = ChangeKind.COPY
        changes.append((kind, key, src, dst))
    return changes


def as_tuples(changes: Sequence[Change]) -> list[tuple[ChangeKind, str, ObjectInfo | None, ObjectInfo | None]]:
    return [(c.kind, c.key, c.source, c.destination) for c in changes]


@settings(max_examples=200, deadline=None)
@given(listing_pairs(), strategies, st.booleans(), patterns, patterns)
def test_merge_join_equals_set_diff(
    listings: tuple[list[ObjectInfo], list[ObjectInfo]],
    strategy: CompareStrategy,
    delete_extraneous: bool,
    include: list[str],
    exclude: list[str],
) -> None:
    source, destination = listings
    changes = list(
        diff_listings(
            iter(source),
            iter(destination),
            strategy,
            selected=KeyFilter(include, exclude),
            delete_extraneous=delete_extraneous,
        )
    )
    selected = model_selected(include, exclude)
    assert as_tuples(changes) == expected_changes(source, destination, strategy, selected, delete_extraneous)
    for change in changes:
        if change.kind is ChangeKind.UNAVAILABLE:
            assert change.source is not None
            assert change.source.storage_class in change.reason
        else:
            assert change.reason == ""
    # Every selected source object is accounted for exactly once; no excluded key appears at all.
    source_keys = [c.key for c in changes if c.kind is not ChangeKind.DELETE]
    assert source_keys == [o.key for o in source if selected(o.key)]
    assert all(selected(c.key) for c in changes)
    if not delete_extraneous:
        assert not any(c.kind is ChangeKind.DELETE for c in changes)


@settings(max_examples=50, deadline=None)
@given(listing_pairs(), strategies)
def test_same_listing_on_both_sides_copies_nothing_except_archived_or_forced(
    listings: tuple[list[ObjectInfo], list[ObjectInfo]], strategy: CompareStrategy
) -> None:
    source, _ = listings
    changes = list(diff_listings(source, source, strategy, delete_extraneous=True))
    assert [c.key for c in changes] == [o.key for o in source]
    expected_kind = {
        SizeOnly: ChangeKind.UNCHANGED,
        SizeAndEtag: ChangeKind.UNCHANGED,
        Checksum: ChangeKind.INSPECT,
    }.get(type(strategy))
    for change in changes:
        assert change.source is not None
        if expected_kind is not None:
            assert change.kind is expected_kind
        elif change.source.storage_class in ARCHIVED_STORAGE_CLASSES:
            assert change.kind is ChangeKind.UNAVAILABLE
        else:
            assert change.kind is ChangeKind.COPY


# --- archived sources ---------------------------------------------------------------------------


@pytest.mark.parametrize("storage_class", ["GLACIER", "DEEP_ARCHIVE"])
def test_archived_source_is_unavailable_with_reason(storage_class: str) -> None:
    new = ObjectInfo("new", 10, md5_hex("n"), storage_class)
    changed = ObjectInfo("changed", 10, md5_hex("c1"), storage_class)
    old_changed = ObjectInfo("changed", 11, md5_hex("c0"))
    changes = list(diff_listings(s3_order([new, changed]), [old_changed], SizeAndEtag()))
    assert [(c.kind, c.key) for c in changes] == [
        (ChangeKind.UNAVAILABLE, "changed"),
        (ChangeKind.UNAVAILABLE, "new"),
    ]
    assert changes[0].destination == old_changed
    assert changes[1].destination is None
    for change in changes:
        assert storage_class in change.reason
        assert "restore" in change.reason


@pytest.mark.parametrize("storage_class", ["GLACIER_IR", "STANDARD_IA", "INTELLIGENT_TIERING", "ONEZONE_IA"])
def test_instantly_readable_classes_are_copied(storage_class: str) -> None:
    changes = list(diff_listings([ObjectInfo("k", 1, md5_hex("k"), storage_class)], [], SizeOnly()))
    assert [(c.kind, c.reason) for c in changes] == [(ChangeKind.COPY, "")]


def test_archived_source_already_at_destination_is_unchanged() -> None:
    source = ObjectInfo("k", 5, md5_hex("k"), "DEEP_ARCHIVE")
    changes = list(diff_listings([source], [ObjectInfo("k", 5, md5_hex("k"))], SizeAndEtag()))
    assert [c.kind for c in changes] == [ChangeKind.UNCHANGED]


def test_archived_sources_are_never_dropped_even_with_copy_always() -> None:
    source = [ObjectInfo(f"k{i}", i, md5_hex(str(i)), "GLACIER") for i in range(5)]
    changes = list(diff_listings(source, source, CopyAlways(), delete_extraneous=True))
    assert [(c.kind, c.key) for c in changes] == [(ChangeKind.UNAVAILABLE, f"k{i}") for i in range(5)]


# --- listing order ------------------------------------------------------------------------------


def test_out_of_order_source_raises() -> None:
    source = [ObjectInfo("b", 1, ""), ObjectInfo("a", 1, "")]
    with pytest.raises(ListingOrderError, match="source listing is not in key order"):
        list(diff_listings(source, [], SizeOnly()))


def test_out_of_order_destination_raises_even_without_mirroring() -> None:
    destination = [ObjectInfo("a", 1, ""), ObjectInfo("c", 1, ""), ObjectInfo("b", 1, "")]
    with pytest.raises(ListingOrderError, match="destination listing is not in key order"):
        list(diff_listings([], destination, SizeOnly(), delete_extraneous=False))


def test_duplicate_key_raises() -> None:
    source = [ObjectInfo("a", 1, ""), ObjectInfo("a", 2, "")]
    with pytest.raises(ListingOrderError):
        list(diff_listings(source, [], SizeOnly()))


def test_utf16_ordered_listing_raises() -> None:
    """A service listing in UTF-16 order (astral characters before U+FFFF) is refused."""
    source = [ObjectInfo("😀", 1, ""), ObjectInfo("\uffff", 1, "")]
    with pytest.raises(ListingOrderError):
        list(diff_listings(source, [], SizeOnly()))


def test_out_of_order_excluded_keys_still_raise() -> None:
    source = [ObjectInfo("logs/b", 1, ""), ObjectInfo("logs/a", 1, "")]
    with pytest.raises(ListingOrderError):
        list(diff_listings(source, [], SizeOnly(), selected=KeyFilter(exclude=["logs/*"])))


@settings(max_examples=200, deadline=None)
@given(st.lists(keys, unique=True, min_size=2, max_size=8).flatmap(st.permutations), st.booleans())
def test_any_unsorted_listing_raises(names: list[str], on_source: bool) -> None:
    if names == sorted(names):
        names = names[::-1]
    listing = [ObjectInfo(name, 1, "") for name in names]
    source, destination = (listing, []) if on_source else ([], listing)
    with pytest.raises(ListingOrderError):
        list(diff_listings(source, destination, SizeOnly(), delete_extraneous=True))


# --- filters and mirroring ----------------------------------------------------------------------


def test_excluded_destination_keys_are_never_deleted() -> None:
    destination = s3_order(
        [
            ObjectInfo("a.txt", 1, ""),
            ObjectInfo("keep/x.txt", 1, ""),
            ObjectInfo("logs/1.log", 1, ""),
            ObjectInfo("photo.jpg", 1, ""),
        ]
    )
    selected = KeyFilter(include=["*.txt", "*.log"], exclude=["keep/*"])
    changes = list(diff_listings([], destination, SizeOnly(), selected=selected, delete_extraneous=True))
    assert [(c.kind, c.key) for c in changes] == [(ChangeKind.DELETE, "a.txt"), (ChangeKind.DELETE, "logs/1.log")]


def test_destination_only_keys_are_kept_without_mirroring() -> None:
    destination = [ObjectInfo("a", 1, ""), ObjectInfo("b", 1, "")]
    source = [ObjectInfo("b", 1, "")]
    kept = list(diff_listings(source, destination, SizeOnly()))
    mirrored = list(diff_listings(source, destination, SizeOnly(), delete_extraneous=True))
    assert [(c.kind, c.key) for c in kept] == [(ChangeKind.UNCHANGED, "b")]
    assert [(c.kind, c.key) for c in mirrored] == [(ChangeKind.DELETE, "a"), (ChangeKind.UNCHANGED, "b")]


def test_key_filter_star_crosses_slashes_and_exclude_wins() -> None:
    selected = KeyFilter(include=["*.jpg"], exclude=["tmp/*"])
    assert selected("a/b/c.jpg")
    assert not selected("tmp/a/b.jpg")
    assert not selected("a/b/c.png")
    assert KeyFilter()("anything at all")
    assert KeyFilter().selects_everything
    assert not KeyFilter(exclude=["x"]).selects_everything
    assert KeyFilter(include=["*.JPG"])("a.JPG")
    assert not KeyFilter(include=["*.JPG"])("a.jpg")  # case matters, as in S3 keys


def test_diff_streams_an_endless_listing() -> None:
    """A merge-join needs only the head of each listing: it must not read a listing to its end."""

    def endless() -> Iterator[ObjectInfo]:
        for number in itertools.count():
            yield ObjectInfo(f"{number:012d}", number, md5_hex(str(number)))

    destination = [ObjectInfo("000000000001", 1, md5_hex("1"))]
    changes = list(itertools.islice(diff_listings(endless(), destination, SizeAndEtag()), 3))
    assert [(c.kind, c.key) for c in changes] == [
        (ChangeKind.COPY, "000000000000"),
        (ChangeKind.UNCHANGED, "000000000001"),
        (ChangeKind.COPY, "000000000002"),
    ]
