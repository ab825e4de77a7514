"""Compare strategies: what each decides from two listings, and from two HEADs where it cannot."""

from __future__ import annotations

import hashlib

import pytest

from dth.s3.compare import (
    SOURCE_ETAG_METADATA,
    STRATEGIES,
    Checksum,
    CompareStrategy,
    CopyAlways,
    ObjectDetails,
    SizeAndEtag,
    SizeOnly,
    Verdict,
    strategy_for,
)
from dth.s3.listing import ObjectInfo, normalize_etag
from dth.spec.load import parse_task_spec
from dth.spec.model import CompareMode

PLAIN_A = hashlib.md5(b"a", usedforsecurity=False).hexdigest()
PLAIN_B = hashlib.md5(b"b", usedforsecurity=False).hexdigest()
MULTI_A = hashlib.md5(b"parts a", usedforsecurity=False).hexdigest() + "-3"
MULTI_B = hashlib.md5(b"parts b", usedforsecurity=False).hexdigest() + "-5"


def info(etag: str, size: int = 100) -> ObjectInfo:
    return ObjectInfo("key", size, etag)


def details(etag: str, size: int = 100, metadata: dict[str, str] | None = None, **checksums: str) -> ObjectDetails:
    return ObjectDetails(size, etag, metadata or {}, checksums)


# --- compare from listings ----------------------------------------------------------------------

# (case, source ETag, destination ETag, same size?); the verdicts for each strategy follow.
CASES = [
    pytest.param("plain-equal", PLAIN_A, PLAIN_A, True, id="plain-equal"),
    pytest.param("plain-differ", PLAIN_A, PLAIN_B, True, id="plain-differ"),
    pytest.param("multipart-equal", MULTI_A, MULTI_A, True, id="multipart-equal"),
    pytest.param("multipart-differ", MULTI_A, MULTI_B, True, id="multipart-differ"),
    pytest.param("multipart-vs-plain", MULTI_A, PLAIN_A, True, id="multipart-vs-plain"),
    pytest.param("plain-vs-multipart", PLAIN_A, MULTI_A, True, id="plain-vs-multipart"),
    pytest.param("plain-vs-empty", PLAIN_A, "", True, id="plain-vs-empty"),
    pytest.param("plain-equal-other-size", PLAIN_A, PLAIN_A, False, id="plain-equal-other-size"),
    pytest.param("multipart-vs-plain-other-size", MULTI_A, PLAIN_A, False, id="multipart-vs-plain-other-size"),
]

EXPECTED = {
    SizeOnly: {
        "plain-equal": Verdict.SAME,
        "plain-differ": Verdict.SAME,
        "multipart-equal": Verdict.SAME,
        "multipart-differ": Verdict.SAME,
        "multipart-vs-plain": Verdict.SAME,
        "plain-vs-multipart": Verdict.SAME,
        "plain-vs-empty": Verdict.SAME,
        "plain-equal-other-size": Verdict.DIFFERENT,
        "multipart-vs-plain-other-size": Verdict.DIFFERENT,
    },
    SizeAndEtag: {
        "plain-equal": Verdict.SAME,
        "plain-differ": Verdict.INSPECT,  # an SSE-KMS source's ETag is no MD5: only the copy's record can tell
        "multipart-equal": Verdict.SAME,
        "multipart-differ": Verdict.INSPECT,
        "multipart-vs-plain": Verdict.INSPECT,
        "plain-vs-multipart": Verdict.INSPECT,
        "plain-vs-empty": Verdict.INSPECT,
        "plain-equal-other-size": Verdict.DIFFERENT,
        "multipart-vs-plain-other-size": Verdict.DIFFERENT,
    },
    Checksum: {
        "plain-equal": Verdict.INSPECT,
        "plain-differ": Verdict.INSPECT,
        "multipart-equal": Verdict.INSPECT,
        "multipart-differ": Verdict.INSPECT,
        "multipart-vs-plain": Verdict.INSPECT,
        "plain-vs-multipart": Verdict.INSPECT,
        "plain-vs-empty": Verdict.INSPECT,
        "plain-equal-other-size": Verdict.DIFFERENT,
        "multipart-vs-plain-other-size": Verdict.DIFFERENT,
    },
    CopyAlways: dict.fromkeys(
        [
            "plain-equal",
            "plain-differ",
            "multipart-equal",
            "multipart-differ",
            "multipart-vs-plain",
            "plain-vs-multipart",
            "plain-vs-empty",
            "plain-equal-other-size",
            "multipart-vs-plain-other-size",
        ],
        Verdict.DIFFERENT,
    ),
}


@pytest.mark.parametrize("strategy_type", [SizeOnly, SizeAndEtag, Checksum, CopyAlways])
@pytest.mark.parametrize(("case", "source_etag", "dest_etag", "same_size"), CASES)
def test_compare_decisions(
    strategy_type: type[CompareStrategy], case: str, source_etag: str, dest_etag: str, same_size: bool
) -> None:
    verdict = strategy_type().compare(info(source_etag), info(dest_etag, 100 if same_size else 101))
    assert verdict is EXPECTED[strategy_type][case]


def test_strategy_for_each_mode() -> None:
    assert set(STRATEGIES) == set(CompareMode)
    assert type(strategy_for(CompareMode.SIZE)) is SizeOnly
    assert type(strategy_for(CompareMode.SIZE_ETAG)) is SizeAndEtag
    assert type(strategy_for(CompareMode.CHECKSUM)) is Checksum
    assert type(strategy_for(CompareMode.NONE)) is CopyAlways
    for mode, strategy_type in STRATEGIES.items():
        assert strategy_type.mode is mode


# --- inspect from HEADs -------------------------------------------------------------------------


def test_size_and_etag_inspect_uses_recorded_source_etag() -> None:
    strategy = SizeAndEtag()
    source = details(MULTI_A)
    assert strategy.inspect(source, details(PLAIN_B, metadata={SOURCE_ETAG_METADATA: MULTI_A}))
    assert not strategy.inspect(source, details(PLAIN_B))
    assert not strategy.inspect(source, details(PLAIN_B, metadata={SOURCE_ETAG_METADATA: MULTI_B}))
    # The record is of the source's ETag, not of some other metadata key.
    assert not strategy.inspect(source, details(PLAIN_B, metadata={"source-etag": MULTI_A}))
    # A recorded ETag does not outweigh a size that differs.
    assert not strategy.inspect(source, details(PLAIN_B, size=99, metadata={SOURCE_ETAG_METADATA: MULTI_A}))


def test_size_only_and_copy_always_inspect_never_prove_equal() -> None:
    same = details(PLAIN_A, metadata={SOURCE_ETAG_METADATA: PLAIN_A}, SHA256="x")
    assert SizeOnly().inspect(same, same) is False
    assert CopyAlways().inspect(same, same) is False


def test_checksum_inspect_prefers_shared_checksums() -> None:
    strategy = Checksum()
    # Equal checksums prove equal content whatever the ETags say.
    assert strategy.inspect(details(MULTI_A, SHA256="s1"), details(PLAIN_B, SHA256="s1"))
    # A differing checksum disproves it, even with equal ETags and a matching record.
    assert not strategy.inspect(
        details(PLAIN_A, SHA256="s1"), details(PLAIN_A, metadata={SOURCE_ETAG_METADATA: PLAIN_A}, SHA256="s2")
    )
    # Every shared algorithm must agree.
    assert not strategy.inspect(details(PLAIN_A, SHA256="s1", CRC32C="c1"), details(PLAIN_A, SHA256="s1", CRC32C="c2"))
    assert strategy.inspect(details(PLAIN_A, SHA256="s1", CRC32C="c1"), details(PLAIN_B, SHA256="s1", CRC32="z"))
    # Checksums do not outweigh a size that differs.
    assert not strategy.inspect(details(PLAIN_A, SHA256="s1"), details(PLAIN_A, size=1, SHA256="s1"))


def test_checksum_inspect_falls_back_to_etags_without_shared_algorithm() -> None:
    strategy = Checksum()
    assert strategy.inspect(details(PLAIN_A, SHA256="s1"), details(PLAIN_A, CRC32C="c1"))
    assert strategy.inspect(details(MULTI_A), details(MULTI_A))
    assert not strategy.inspect(details(PLAIN_A), details(PLAIN_B))
    # Both plain MD5s: a record cannot override what the MD5s say ...
    assert not strategy.inspect(details(PLAIN_A), details(PLAIN_B, metadata={SOURCE_ETAG_METADATA: PLAIN_A}))
    # ... unless one of them is no MD5, though it looks like one (SSE-KMS).
    kms_source = ObjectDetails(100, PLAIN_A, kms=True)
    assert strategy.inspect(kms_source, details(PLAIN_B, metadata={SOURCE_ETAG_METADATA: PLAIN_A}))
    assert not strategy.inspect(kms_source, details(PLAIN_B))
    assert SizeAndEtag().inspect(kms_source, details(PLAIN_B, metadata={SOURCE_ETAG_METADATA: PLAIN_A}))
    assert not SizeAndEtag().inspect(details(PLAIN_A), details(PLAIN_B, metadata={SOURCE_ETAG_METADATA: PLAIN_A}))
    # Different layouts: the record decides.
    assert strategy.inspect(details(MULTI_A), details(PLAIN_B, metadata={SOURCE_ETAG_METADATA: MULTI_A}))
    assert not strategy.inspect(details(MULTI_A), details(PLAIN_B))
    assert not strategy.inspect(details(MULTI_A), details(MULTI_B, metadata={SOURCE_ETAG_METADATA: MULTI_B}))


# --- listing helpers ----------------------------------------------------------------------------


def test_normalize_etag_and_multipart_flag() -> None:
    assert normalize_etag(f'"{PLAIN_A}"') == PLAIN_A
    assert normalize_etag(f'  "{MULTI_A}" ') == MULTI_A
    assert normalize_etag(PLAIN_A) == PLAIN_A
    assert normalize_etag(None) == ""
    assert normalize_etag("") == ""
    assert info(MULTI_A).is_multipart
    assert not info(PLAIN_A).is_multipart


# --- the decision pipeline as the finder runs it ------------------------------------------------


def settles_as_same(
    strategy: CompareStrategy,
    source: ObjectInfo,
    destination: ObjectInfo,
    source_head: ObjectDetails,
    destination_head: ObjectDetails,
) -> bool:
    """The finder: the listing verdict, and for INSPECT a HEAD of both objects."""
    verdict = strategy.compare(source, destination)
    if verdict is Verdict.INSPECT:
        return strategy.inspect(source_head, destination_head)
    return verdict is Verdict.SAME


def test_multipart_source_copied_with_other_layout_is_current_on_next_run() -> None:
    strategy = SizeAndEtag()
    source, destination = info(MULTI_A), info(MULTI_B)
    marked = details(MULTI_B, metadata={SOURCE_ETAG_METADATA: MULTI_A})
    assert settles_as_same(strategy, source, destination, details(MULTI_A), marked)
    assert not settles_as_same(strategy, source, destination, details(MULTI_A), details(MULTI_B))


def test_size_etag_recognises_objects_copied_to_a_kms_destination() -> None:
    spec = parse_task_spec(
        {
            "type": "S3",
            "source": {"bucket": "src-bucket", "region": "us-east-1"},
            "destination": {"bucket": "dst-bucket", "region": "us-east-1", "sse": "AWS_KMS"},
            "options": {"compare": "size-etag"},
        }
    )
    strategy = strategy_for(spec.options.compare)
    kms_etag = hashlib.md5(b"not the content", usedforsecurity=False).hexdigest()  # what AWS returns
    source, destination = info(PLAIN_A), info(kms_etag)
    # HEAD says what the listing cannot: the destination is encrypted with SSE-KMS.
    destination_head = ObjectDetails(100, kms_etag, {SOURCE_ETAG_METADATA: PLAIN_A}, kms=True)
    assert settles_as_same(strategy, source, destination, details(PLAIN_A), destination_head)
