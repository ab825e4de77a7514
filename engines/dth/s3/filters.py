"""Which keys a task covers: include and exclude glob patterns on keys relative to the prefix."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase


class KeyFilter:
    """A key is selected when it matches an include pattern (or there are none) and no exclude pattern.
    `*` matches across `/`, as in aws s3 sync."""

    def __init__(self, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> None:
        self._include = tuple(include)
        self._exclude = tuple(exclude)

    @property
    def selects_everything(self) -> bool:
        return not self._include and not self._exclude

    def __call__(self, key: str) -> bool:
        if self._include and not any(fnmatchcase(key, pattern) for pattern in self._include):
            return False
        return not any(fnmatchcase(key, pattern) for pattern in self._exclude)
