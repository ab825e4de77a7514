"""Semantic-version ranges over image tags, in the node-semver notation most registries' users know.

A range is one or more comparator sets joined by `||`; a set is comparators separated by spaces or commas,
all of which must hold: `>=1.2.0 <2`, `^1.4`, `~2.3.1`, `1.x`, `=3.0.0`, `*`. Tags are read loosely: an
optional leading `v`, one to three numeric parts (`1.27` is 1.27.0), then `-prerelease` and `+build`.
Tags that are not versions (`latest`, `stable`) never match. As in node-semver, a pre-release (`2.0.0-rc.1`,
and so any tag with a suffix such as `1.27-alpine`) only matches a set that names a pre-release of the same
major.minor.patch.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_NUMERIC = re.compile(r"^(0|[1-9]\d*)$")
_VERSION = re.compile(
    r"^[vV]?(?P<major>0|[1-9]\d*)(?:\.(?P<minor>0|[1-9]\d*)(?:\.(?P<patch>0|[1-9]\d*))?)?"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)
_PARTIAL = re.compile(
    r"^[vV]?(?P<major>\d+|[xX*])(?:\.(?P<minor>\d+|[xX*])(?:\.(?P<patch>\d+|[xX*]))?)?"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-.]+)?$"
)
_COMPARATOR = re.compile(r"^(?P<op>>=|<=|>|<|=|\^|~>?)?\s*(?P<version>\S+)$")

PreRelease = tuple[int | str, ...]


@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    pre: PreRelease = ()

    def key(self) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
        # A release sorts after its pre-releases; numeric identifiers sort before alphanumeric ones.
        pre = tuple((0, p) if isinstance(p, int) else (1, p) for p in self.pre)
        return (self.major, self.minor, self.patch, 0 if self.pre else 1, pre)

    def __lt__(self, other: Version) -> bool:
        return self.key() < other.key()

    def __le__(self, other: Version) -> bool:
        return self.key() <= other.key()

    def __gt__(self, other: Version) -> bool:
        return self.key() > other.key()

    def __ge__(self, other: Version) -> bool:
        return self.key() >= other.key()

    @property
    def release(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)


def _pre(text: str | None) -> PreRelease:
    if not text:
        return ()
    return tuple(int(part) if _NUMERIC.match(part) else part for part in text.split("."))


def parse_version(tag: str) -> Version | None:
    """The version a tag names, or None when it names none."""
    match = _VERSION.match(tag)
    if match is None:
        return None
    return Version(int(match["major"]), int(match["minor"] or 0), int(match["patch"] or 0), _pre(match["pre"]))


_OPS: dict[str, Callable[[Version, Version], bool]] = {
    ">": lambda v, b: v > b,
    ">=": lambda v, b: v >= b,
    "<": lambda v, b: v < b,
    "<=": lambda v, b: v <= b,
    "=": lambda v, b: v.key() == b.key(),
}
_FLOOR: PreRelease = (0,)  # `-0`: below every other pre-release, so `<2.0.0-0` also excludes 2.0.0-rc.1


@dataclass(frozen=True)
class _Comparator:
    op: str
    bound: Version

    def holds(self, version: Version) -> bool:
        return _OPS[self.op](version, self.bound)


def _comparators(text: str) -> list[_Comparator]:
    """One comparator as written (`^1.2`, `>=1`, `1.x`) as primitive comparators."""
    match = _COMPARATOR.match(text)
    partial = _PARTIAL.match(match["version"]) if match else None
    if match is None or partial is None:
        raise ValueError(f"{text!r} is not a version comparator (examples: >=1.2.0, ^1.4, ~2.3, 1.x)")
    op = match["op"] or "="
    wild = {"x", "X", "*", None}
    parts = [partial["major"], partial["minor"], partial["patch"]]
    given = 0
    for part in parts:
        if part in wild:
            break
        given += 1
    if any(part not in wild for part in parts[given:]):
        raise ValueError(f"{text!r}: a wildcard must not be followed by a number")
    numbers = [int(p) if p not in wild else 0 for p in parts]
    major, minor, patch = numbers
    pre = _pre(partial["pre"]) if given == 3 else ()
    low = Version(major, minor, patch, pre)

    def upper(level: int) -> Version:  # the first version above the given parts at `level` (0 = major)
        bumped = [*numbers[:level], numbers[level] + 1] + [0] * (2 - level)
        return Version(bumped[0], bumped[1], bumped[2], _FLOOR)

    if op == "~>":
        op = "~"
    if given == 0:
        return [] if op in ("=", ">=", "<=", "^", "~") else [_Comparator("<", Version(0, 0, 0, _FLOOR))]
    if op == "^":
        level = next((i for i, n in enumerate(numbers[:given]) if n != 0), given - 1)
        return [_Comparator(">=", low), _Comparator("<", upper(min(level, given - 1)))]
    if op == "~":
        return [_Comparator(">=", low), _Comparator("<", upper(0 if given == 1 else 1))]
    if given == 3:
        return [_Comparator(op, low)]
    # A partial version (1, 1.2) with a plain operator is a range of releases.
    if op == "=":
        return [_Comparator(">=", low), _Comparator("<", upper(given - 1))]
    if op == ">":
        return [_Comparator(">=", upper(given - 1))]
    if op == ">=":
        return [_Comparator(">=", low)]
    if op == "<":
        return [_Comparator("<", Version(major, minor, patch, _FLOOR))]
    return [_Comparator("<", upper(given - 1))]  # <=


@dataclass(frozen=True)
class SemverRange:
    """A parsed range; `matches(tag)` tells whether the tag is a version inside it."""

    text: str
    sets: tuple[tuple[_Comparator, ...], ...]

    def matches(self, tag: str) -> bool:
        version = parse_version(tag)
        if version is None:
            return False
        for comparators in self.sets:
            if not all(c.holds(version) for c in comparators):
                continue
            if version.pre and not any(
                c.bound.pre and c.bound.pre != _FLOOR and c.bound.release == version.release for c in comparators
            ):
                continue
            return True
        return False


def parse_range(text: str) -> SemverRange:
    if not text.strip():
        raise ValueError("an empty semver range")
    sets: list[tuple[_Comparator, ...]] = []
    for alternative in text.split("||"):
        # `>= 1.2` is one comparator: join an operator to the version after it.
        words = re.sub(r"(>=|<=|>|<|=|\^|~>?)\s+", r"\1", alternative.strip()).replace(",", " ").split()
        if not words:
            raise ValueError(f"{text!r}: an empty alternative between ||")
        sets.append(tuple(c for word in words for c in _comparators(word)))
    return SemverRange(text, tuple(sets))
