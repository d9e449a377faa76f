"""File attributes as the inode caches them (the seed's ``UnstableAttr`` and ``AttrMask``).

Times are integer nanoseconds since the epoch; ``TimeSpec`` is how callers name a time to set.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final, final

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["ALL_TIMES", "S_ISGID", "S_ISUID", "AttrMask", "Attrs", "TimeSpec", "now_ns"]

S_ISUID: Final = 0o4000
S_ISGID: Final = 0o2000
S_IXGRP: Final = 0o0010


def now_ns() -> int:
    """Wall-clock time in nanoseconds, the clock every timestamp update uses."""
    return time.time_ns()


class AttrMask(enum.Flag):
    """Which attributes a call names (the seed's ``AttrMask``)."""

    NONE = 0
    SIZE = enum.auto()
    USAGE = enum.auto()
    MODE = enum.auto()
    UID = enum.auto()
    GID = enum.auto()
    ATIME = enum.auto()
    MTIME = enum.auto()
    CTIME = enum.auto()
    LINKS = enum.auto()


ALL_TIMES: Final = AttrMask.ATIME | AttrMask.MTIME | AttrMask.CTIME


@final
@dataclass(frozen=True, slots=True)
class Attrs:
    """A snapshot of one file's attributes. ``mode`` holds permission bits (including setuid)."""

    size: int = 0
    usage: int = 0
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    atime: int = 0
    mtime: int = 0
    ctime: int = 0
    links: int = 1

    def __post_init__(self) -> None:
        if self.size < 0 or self.usage < 0 or self.links < 0:
            raise ValueError(f"negative size, usage or links in {self!r}")
        if not 0 <= self.mode <= 0o7777:
            raise ValueError(f"mode {self.mode:#o} is not a permission mask")

    def with_(self, **changes: int) -> Attrs:
        """A copy with ``changes`` applied (``dataclasses.replace``)."""
        return replace(self, **changes)


@final
@dataclass(frozen=True, slots=True)
class TimeSpec:
    """A timestamp to set: omitted, "now", or an explicit time in nanoseconds.

    Build one with :meth:`omit`, :meth:`now` or :meth:`at`.
    """

    ns: int | None = None
    use_now: bool = False

    @classmethod
    def omit(cls) -> TimeSpec:
        """Leave the timestamp as it is."""
        return cls(None, False)

    @classmethod
    def now(cls) -> TimeSpec:
        """Set the timestamp to the time of the call."""
        return cls(None, True)

    @classmethod
    def at(cls, ns: int) -> TimeSpec:
        """Set the timestamp to ``ns`` nanoseconds since the epoch."""
        if not isinstance(ns, int) or isinstance(ns, bool):
            raise TypeError(f"TimeSpec.at takes integer nanoseconds, not {ns!r}")
        return cls(ns, False)

    @property
    def omitted(self) -> bool:
        """Whether this spec leaves the timestamp alone."""
        return self.ns is None and not self.use_now

    def resolve(self, clock: Callable[[], int] = now_ns) -> int:
        """The concrete time this spec names ("now" is read from ``clock``)."""
        if self.use_now:
            return clock()
        if self.ns is None:
            raise ValueError("an omitted TimeSpec names no time")
        return self.ns
