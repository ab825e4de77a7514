"""Part planning for multipart copies, and the multipart ETag arithmetic used to verify them."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from dth.spec.model import MAX_PART_SIZE, MAX_PARTS, MiB


@dataclass(frozen=True, slots=True)
class PartRange:
    number: int  # 1-based, as S3 numbers parts
    start: int
    end: int  # inclusive, as HTTP ranges are

    @property
    def size(self) -> int:
        return self.end - self.start + 1

    @property
    def http_range(self) -> str:
        return f"bytes={self.start}-{self.end}"


def ranges_of(size: int, part_size: int) -> list[PartRange]:
    """Consecutive ranges of `part_size` bytes covering `size` bytes; the last one may be shorter."""
    if size <= 0:
        return []
    return [
        PartRange(number, start, min(start + part_size, size) - 1)
        for number, start in enumerate(range(0, size, part_size), start=1)
    ]


def plan_parts(size: int, chunk_size: int) -> list[PartRange]:
    """Parts of `chunk_size`, grown in whole MiB where the object would need more than 10,000 parts."""
    part_size = chunk_size
    if size > part_size * MAX_PARTS:
        part_size = -(-size // MAX_PARTS)
        part_size = -(-part_size // MiB) * MiB
    if part_size > MAX_PART_SIZE:
        raise ValueError(f"an object of {size} bytes is larger than S3 allows")
    return ranges_of(size, part_size)


# Part sizes that upload tools use by default (aws-cli and s3transfer 8 MiB, rclone 5 MiB, ...).
COMMON_PART_SIZES = tuple(n * MiB for n in (8, 16, 5, 64, 15, 10, 32, 100, 128, 50, 25, 256, 512))


def guess_part_size(size: int, parts: int) -> int | None:
    """The part size a `parts`-part upload of `size` bytes most likely used, for servers that cannot
    tell it (no HEAD by part number): a common tool default if one fits, else the smallest whole MiB."""
    if parts < 1 or size < parts:
        return None
    smallest = -(-size // parts)
    largest = size if parts == 1 else (size - 1) // (parts - 1)
    for candidate in COMMON_PART_SIZES:
        if smallest <= candidate <= largest:
            return candidate
    whole_mib = -(-smallest // MiB) * MiB
    return whole_mib if whole_mib <= largest else smallest


def parts_count(etag: str) -> int | None:
    """The number of parts a multipart ETag (`<hex>-N`) tells of; None for a plain ETag."""
    _, dash, count = etag.rpartition("-")
    return int(count) if dash and count.isascii() and count.isdigit() else None


def multipart_etag(part_md5_hex: Sequence[str]) -> str:
    """The ETag S3 gives a multipart object: the MD5 of the parts' binary MD5s, then `-N`."""
    digest = hashlib.md5(b"".join(bytes.fromhex(part) for part in part_md5_hex), usedforsecurity=False)
    return f"{digest.hexdigest()}-{len(part_md5_hex)}"
