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


def _plain_md5(etag: str) -> bool:
    return len(etag) == 32 and "-" not in etag


class CompareStrategy(ABC):
    mode: ClassVar[CompareMode]

    def __init__(self, destination_etags_are_md5: bool = True) -> None:
        # With SSE-KMS a destination's ETags look like MD5s but are not: unequal ones prove nothing.
        self.destination_etags_are_md5 = destination_etags_are_md5

    def _etags_prove_different(self, source_etag: str, destination_etag: str) -> bool:
        return self.destination_etags_are_md5 and _plain_md5(source_etag) and _plain_md5(destination_etag)

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
    """Equal sizes and equal ETags; where the ETags cannot be compared (one is a multipart ETag, the
    other is not), the destination's record of the source ETag it was copied from decides."""

    mode = CompareMode.SIZE_ETAG

    def compare(self, source: ObjectInfo, destination: ObjectInfo) -> Verdict:
        if source.size != destination.size:
            return Verdict.DIFFERENT
        if source.etag == destination.etag:
            return Verdict.SAME
        if self._etags_prove_different(source.etag, destination.etag):
            return Verdict.DIFFERENT
        return Verdict.INSPECT

    def inspect(self, source: ObjectDetails, destination: ObjectDetails) -> bool:
        return source.size == destination.size and destination.metadata.get(SOURCE_ETAG_METADATA) == source.etag


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
        if self._etags_prove_different(source.etag, destination.etag):
            return False
        return super().inspect(source, destination)


class CopyAlways(CompareStrategy):
    mode = CompareMode.NONE

    def compare(self, source: ObjectInfo, destination: ObjectInfo) -> Verdict:
        return Verdict.DIFFERENT


STRATEGIES: dict[CompareMode, type[CompareStrategy]] = {
    strategy.mode: strategy for strategy in (SizeOnly, SizeAndEtag, Checksum, CopyAlways)
}


def strategy_for(mode: CompareMode, *, destination_etags_are_md5: bool = True) -> CompareStrategy:
    return STRATEGIES[mode](destination_etags_are_md5)
