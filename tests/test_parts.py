"""Part planning for multipart copies, and multipart ETag arithmetic."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dth.s3.parts import PartRange, multipart_etag, parts_count, plan_parts, ranges_of
from dth.spec.model import MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, GiB, MiB

TiB = 1024 * GiB


def assert_exact_cover(ranges: list[PartRange], size: int, part_size: int) -> None:
    """Consecutive, numbered from 1, every byte in exactly one range, only the last one short."""
    assert [r.number for r in ranges] == list(range(1, len(ranges) + 1))
    expected_start = 0
    for part in ranges:
        assert part.start == expected_start
        assert part.end >= part.start
        expected_start = part.end + 1
    assert expected_start == size
    assert all(r.size == part_size for r in ranges[:-1])
    if ranges:
        assert 1 <= ranges[-1].size <= part_size
    assert sum(r.size for r in ranges) == size
    assert len(ranges) == -(-size // part_size)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=10**9).flatmap(
        lambda part_size: st.tuples(st.integers(min_value=0, max_value=part_size * 2000), st.just(part_size))
    )
)
def test_ranges_cover_every_byte_once(size_and_part_size: tuple[int, int]) -> None:
    size, part_size = size_and_part_size
    assert_exact_cover(ranges_of(size, part_size), size, part_size)


def test_ranges_small_cases() -> None:
    assert ranges_of(0, 5) == []
    assert ranges_of(10, 5) == [PartRange(1, 0, 4), PartRange(2, 5, 9)]
    assert ranges_of(11, 5) == [PartRange(1, 0, 4), PartRange(2, 5, 9), PartRange(3, 10, 10)]
    assert ranges_of(3, 5) == [PartRange(1, 0, 2)]
    assert ranges_of(11, 5)[2].http_range == "bytes=10-10"
    assert ranges_of(11, 5)[0].http_range == "bytes=0-4"
    assert ranges_of(11, 5)[0].size == 5


chunk_sizes = st.one_of(
    st.sampled_from([MIN_PART_SIZE, 8 * MiB, 16 * MiB, 64 * MiB, 5 * MiB + 1, 7 * MiB + 12345]),
    st.integers(min_value=MIN_PART_SIZE, max_value=MAX_PART_SIZE),
)


@st.composite
def sizes_and_chunks(draw: st.DrawFn) -> tuple[int, int]:
    """Up to S3's 5 TiB object limit, around and beyond the 10,000-part boundary as often as below it."""
    chunk_size = draw(chunk_sizes)
    boundary = min(chunk_size * MAX_PARTS, 5 * TiB)
    size = draw(
        st.one_of(
            st.integers(min_value=0, max_value=boundary),
            st.integers(min_value=boundary - 3 * MiB, max_value=min(boundary + 3 * MiB, 5 * TiB)),
            st.integers(min_value=boundary, max_value=5 * TiB),
        )
    )
    return size, chunk_size


@settings(max_examples=200, deadline=None)
@given(sizes_and_chunks())
def test_plan_parts_stays_within_s3_limits(size_and_chunk: tuple[int, int]) -> None:
    size, chunk_size = size_and_chunk
    ranges = plan_parts(size, chunk_size)
    assert len(ranges) <= MAX_PARTS
    if not ranges:
        assert size == 0
        return
    part_size = ranges[0].size
    # ranges_of is checked byte by byte above; here the ends and the count suffice.
    assert ranges[0].start == 0
    assert ranges[-1].end == size - 1
    assert ranges[-1].number == len(ranges) == -(-size // part_size)
    assert MIN_PART_SIZE <= part_size <= MAX_PART_SIZE or len(ranges) == 1
    if size <= chunk_size * MAX_PARTS:
        assert part_size == min(chunk_size, size)
    else:
        # Grown in whole MiB, to the smallest such size that fits in 10,000 parts.
        assert part_size % MiB == 0
        assert part_size > chunk_size
        assert part_size * MAX_PARTS >= size
        assert (part_size - MiB) * MAX_PARTS < size


@pytest.mark.parametrize("chunk_size", [MIN_PART_SIZE, 8 * MiB])
def test_plan_parts_boundary(chunk_size: int) -> None:
    at_limit = plan_parts(chunk_size * MAX_PARTS, chunk_size)
    assert len(at_limit) == MAX_PARTS
    assert at_limit[0].size == chunk_size
    over = plan_parts(chunk_size * MAX_PARTS + 1, chunk_size)
    assert over[0].size == chunk_size + MiB
    assert len(over) == -(-(chunk_size * MAX_PARTS + 1) // (chunk_size + MiB))


def test_plan_parts_for_largest_object() -> None:
    ranges = plan_parts(5 * TiB, 8 * MiB)
    # 5 TiB / 10,000 = 524.288 MiB, grown to 525 MiB.
    assert ranges[0].size == 525 * MiB
    assert len(ranges) == 9987
    assert ranges[-1].end == 5 * TiB - 1


def test_plan_parts_refuses_objects_too_large_for_s3() -> None:
    with pytest.raises(ValueError, match="larger than S3 allows"):
        plan_parts(MAX_PART_SIZE * MAX_PARTS + 1, 8 * MiB)


# --- ETags --------------------------------------------------------------------------------------


def test_multipart_etag_matches_hand_computation() -> None:
    parts = [b"a" * (5 * MiB), b"b" * (5 * MiB), b"tail"]
    part_md5s = [hashlib.md5(p, usedforsecurity=False) for p in parts]
    by_hand = hashlib.md5(b"".join(m.digest() for m in part_md5s), usedforsecurity=False).hexdigest() + "-3"
    assert multipart_etag([m.hexdigest() for m in part_md5s]) == by_hand
    # Not the MD5 of the whole content, and not of the hex digests.
    assert not by_hand.startswith(hashlib.md5(b"".join(parts), usedforsecurity=False).hexdigest())
    hex_joined = "".join(m.hexdigest() for m in part_md5s).encode()
    assert not by_hand.startswith(hashlib.md5(hex_joined, usedforsecurity=False).hexdigest())


def test_multipart_etag_known_value() -> None:
    # md5("hello") and md5("world"), combined as S3 does.
    etag = multipart_etag(["5d41402abc4b2a76b9719d911017c592", "7d793037a0760186574b0282f2f435e7"])
    expected = hashlib.md5(
        bytes.fromhex("5d41402abc4b2a76b9719d911017c592" + "7d793037a0760186574b0282f2f435e7"),
        usedforsecurity=False,
    ).hexdigest()
    assert etag == f"{expected}-2"


def test_single_part_etag_is_not_the_plain_md5() -> None:
    md5 = hashlib.md5(b"x", usedforsecurity=False)
    etag = multipart_etag([md5.hexdigest()])
    assert etag.endswith("-1")
    assert etag != md5.hexdigest()
    assert etag == hashlib.md5(md5.digest(), usedforsecurity=False).hexdigest() + "-1"


@pytest.mark.parametrize(
    ("etag", "count"),
    [
        ("d41d8cd98f00b204e9800998ecf8427e", None),
        ("d41d8cd98f00b204e9800998ecf8427e-3", 3),
        ("d41d8cd98f00b204e9800998ecf8427e-10000", 10000),
        ("d41d8cd98f00b204e9800998ecf8427e-", None),
        ("d41d8cd98f00b204e9800998ecf8427e-x", None),
        ("abc-def-12", 12),
        ("", None),
    ],
)
def test_parts_count(etag: str, count: int | None) -> None:
    assert parts_count(etag) == count


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=16, max_size=16), min_size=1, max_size=50))
def test_parts_count_of_multipart_etag(digests: list[bytes]) -> None:
    etag = multipart_etag([d.hex() for d in digests])
    assert parts_count(etag) == len(digests)
    assert len(etag.split("-")[0]) == 32


def test_parts_count_of_malformed_etag_is_none() -> None:
    assert parts_count("d41d8cd98f00b204e9800998ecf8427e-²") is None
