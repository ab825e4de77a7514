"""When is an object already at the destination? One strategy per compare mode, as aws-cli's sync
strategies do it. A listing answers most questions; the rest need a HEAD of both objects."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar

from dth.s3.listing import ObjectInfo
from dth.spec.model import CompareMode

# Set on objects whose ETag cannot equal their source's (a different multipart layout), so that a
# later run can still prove them current without reading them.
SOURCE_ETAG_METADATA = "dth-source-etag"


class Verdict(Enum):
    SAME = "same"
    DIFFERENT = "different"
    INSPECT = "inspect"


@dataclass(frozen=True)
class ObjectDetails:
    """What a HEAD tells of an object beyond its listing."""

    size: int
    etag: str
    metadata: dict[str, str] = field(default_factory=dict)
    # Full-object checksums by algorithm (SHA256, CRC32C, ...), where the server returns them.
    checksums: dict[str, str] = field(default_factory=dict)
    # Encrypted with SSE-KMS: its ETag is no MD5 of its content, though it looks like one.
    kms: bool = False


def _plain_md5(etag: str) -> bool:
    return len(etag) == 32 and "-" not in etag


def md5s_differ(source: ObjectDetails, destination: ObjectDetails) -> bool:
    """Whether both ETags are true MD5s of the content (plain, neither side SSE-KMS) and differ: then no record
    of the source ETag can make the two objects the same."""
    return (
        not source.kms
        and not destination.kms
        and _plain_md5(source.etag)
        and _plain_md5(destination.etag)
        and source.etag != destination.etag
    )


class CompareStrategy(ABC):
    mode: ClassVar[CompareMode]

    @abstractmethod
    def compare(self, source: ObjectInfo, destination: ObjectInfo) -> Verdict:
        """Decide from the two listings alone where possible."""

    def inspect(self, source: ObjectDetails, destination: ObjectDetails) -> bool:
        """For INSPECT verdicts: whether the two objects hold the same content."""
        return False


class SizeOnly(CompareStrategy):
    mode = CompareMode.SIZE

    def compare(self, source: ObjectInfo, destination: ObjectInfo) -> Verdict:
        return Verdict.SAME if source.size == destination.size else Verdict.DIFFERENT


class SizeAndEtag(CompareStrategy):
    """Equal sizes and equal ETags; where the ETags differ, the destination's record of the source ETag it was
    copied from decides. Two ETags that look like MD5s prove nothing either: an SSE-KMS source's ETag is no
    MD5 (a listing cannot tell), and its copy at an unencrypted destination has its MD5. So an object that
    changed without changing its size costs a HEAD of both sides before it is copied."""

    mode = CompareMode.SIZE_ETAG

    def compare(self, source: ObjectInfo, destination: ObjectInfo) -> Verdict:
        if source.size != destination.size:
            return Verdict.DIFFERENT
        if source.etag == destination.etag:
            return Verdict.SAME
        return Verdict.INSPECT

    def inspect(self, source: ObjectDetails, destination: ObjectDetails) -> bool:
        return (
            source.size == destination.size
            and not md5s_differ(source, destination)
            and destination.metadata.get(SOURCE_ETAG_METADATA) == source.etag
        )


class Checksum(SizeAndEtag):
    """Proves equal content by full-object checksums where both sides have one of the same algorithm;
    falls back to the ETag rules where they have not. Costs a HEAD of each object."""

    mode = CompareMode.CHECKSUM

    def compare(self, source: ObjectInfo, destination: ObjectInfo) -> Verdict:
        if source.size != destination.size:
            return Verdict.DIFFERENT
        return Verdict.INSPECT

    def inspect(self, source: ObjectDetails, destination: ObjectDetails) -> bool:
        if source.size != destination.size:
            return False
        shared = sorted(set(source.checksums) & set(destination.checksums))
        if shared:
            return all(source.checksums[name] == destination.checksums[name] for name in shared)
        if source.etag == destination.etag:
            return True
        # Unequal ETags prove nothing where one is an SSE-KMS one, or a multipart one: the copy's record decides.
        return super().inspect(source, destination)


class CopyAlways(CompareStrategy):
    mode = CompareMode.NONE

    def compare(self, source: ObjectInfo, destination: ObjectInfo) -> Verdict:
        return Verdict.DIFFERENT


STRATEGIES: dict[CompareMode, type[CompareStrategy]] = {
    strategy.mode: strategy for strategy in (SizeOnly, SizeAndEtag, Checksum, CopyAlways)
}


def strategy_for(mode: CompareMode) -> CompareStrategy:
    return STRATEGIES[mode]()
