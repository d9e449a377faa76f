"""Who maps which file range (the seed's ``memmap.MappingSet``).

A :class:`MappingSet` maps file ranges to the frozenset of :class:`Mapping` entries covering
them. The seed keys each entry by its address range clipped to the segment, and merges two
segments only when every entry of one continues exactly in the other. Here an entry stores
``delta = address - file offset`` instead, which is the same all along one mapping, so the
clipped entries of two touching pieces of one mapping are *equal*: splitting leaves values
unchanged, and the adjacency merge is plain frozenset equality (the ``SegmentMap`` defaults).

The set reports the ranges that become mapped or unmapped, which drive the inode's evictable
marking and ``DirtySet.allow_clean``, and tells each address space to drop translations on
truncate or descriptor change. The owner's ``_map_lock`` protects it (lock order: see
``inode.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, final

from .ranges import Range
from .segments import SegmentMap

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["Mapping", "MappingSet", "MappingSpace"]


class MappingSpace(Protocol):
    """An address space that maps file ranges (the seed's ``memmap.MappingSpace``).

    Compared and hashed by identity unless the implementation says otherwise: two mappings are
    the same entry only if their spaces compare equal.
    """

    def invalidate(self, addr_range: Range, private: bool) -> None:
        """Drop the translations of ``addr_range``.

        ``private`` also discards private copy-on-write copies (the seed's
        ``InvalidatePrivate``), as a shrinking truncate requires. Must not call back into the
        mapping set.
        """
        ...


@dataclass(frozen=True, slots=True)
class Mapping:
    """One mapping of a file range into ``space``: file offset ``f`` is at address ``f + delta``."""

    space: MappingSpace
    delta: int
    writable: bool

    def addr_range(self, start: int, end: int) -> Range:
        """The addresses that file range ``[start, end)`` occupies in this mapping. O(1)."""
        return Range(start + self.delta, end + self.delta)


def _coalesce(ranges: Iterable[tuple[int, int]]) -> list[Range]:
    """Join touching ``(start, end)`` pairs (given in order) into ranges."""
    out: list[Range] = []
    run_start = run_end = -1
    for s, e in ranges:
        if s == run_end:
            run_end = e
            continue
        if run_end >= 0:
            out.append(Range(run_start, run_end))
        run_start, run_end = s, e
    if run_end >= 0:
        out.append(Range(run_start, run_end))
    return out


@final
class MappingSet(SegmentMap[frozenset[Mapping]]):
    """File ranges mapped to the set of mappings covering them.

    Ranges need not be page-aligned (the inode passes page-aligned ones). An empty range is a
    no-op; a negative one raises ``ValueError``.
    """

    __slots__ = ()

    def __init__(self) -> None:
        # Identity split and equality merge are right because entries store a delta.
        super().__init__()

    def add_mapping(
        self, space: MappingSpace, ar: Range, offset: int, writable: bool
    ) -> list[Range]:
        """Record that ``space`` maps file offsets from ``offset`` at addresses ``ar``.

        Adding an entry that is already present changes nothing for that range: entries form a
        set, as in the seed.

        Complexity: O((k + 1) log n).

        Returns:
            The file ranges that had no mapping before (the seed's "newly mapped"), in order.

        Raises:
            ValueError: ``offset`` is negative.
        """
        start = offset
        end = offset + ar.length
        if start < 0:
            raise ValueError(f"negative file offset {offset}")
        if start == end:
            return []
        added = frozenset((Mapping(space, ar.start - offset, writable),))
        newly = list(self.gaps(start, end))
        # The bound method maps an existing value v to v | added without a per-call closure.
        self.update(start, end, added.union)
        for gap_start, gap_end in newly:
            self.insert(gap_start, gap_end, added)
        return [Range(s, e) for s, e in newly]

    def remove_mapping(
        self, space: MappingSpace, ar: Range, offset: int, writable: bool
    ) -> list[Range]:
        """Remove the mapping added as ``add_mapping(space, ar, offset, writable)`` (or part).

        All or nothing: the whole range is checked before anything changes.

        Complexity: O((k + 1) log n).

        Returns:
            The file ranges that now have no mapping (the seed's "unmapped"), in order.

        Raises:
            ValueError: ``offset`` is negative, or the mapping is not present over the whole
                range (the seed panics here; a caller bug should not take the process down).
        """
        start = offset
        end = offset + ar.length
        if start < 0:
            raise ValueError(f"negative file offset {offset}")
        if start == end:
            return []
        entry = Mapping(space, ar.start - offset, writable)
        cursor = start
        for s, e, value in self.overlapping(start, end):
            if s > cursor or entry not in value:
                raise ValueError(f"{entry!r} does not map file range [{start}, {end})")
            cursor = e
        if cursor < end:
            raise ValueError(f"{entry!r} does not map file range [{start}, {end})")

        def without(value: frozenset[Mapping]) -> frozenset[Mapping] | None:
            rest = value - {entry}
            return rest if rest else None

        return [Range(s, e) for s, e in self.update(start, end, without)]

    def invalidate(self, mr: Range, private: bool) -> None:
        """Tell every mapping of every segment meeting ``mr`` to drop that part, clipped to ``mr``.

        One ``space.invalidate`` call per (segment, entry), as in the seed; the order of the
        entries within a segment is unspecified.

        Complexity: O(log n + k + c); c calls made.
        """
        # Materialised: an address space may (wrongly) call back and change the set.
        for s, e, value in list(self.clipped(mr.start, mr.end)):
            for entry in value:
                entry.space.invalidate(entry.addr_range(s, e), private)

    def invalidate_all(self, private: bool) -> None:
        """``invalidate`` over every mapped range (the seed's ``InvalidateAll``).

        Complexity: O(n + c); c calls made.
        """
        for s, e, value in list(self.segments()):
            for entry in value:
                entry.space.invalidate(entry.addr_range(s, e), private)

    def mapped_ranges(self, start: int, end: int) -> list[Range]:
        """The mapped parts of ``[start, end)``, touching ones joined, in order.

        Complexity: O(log n + k).
        """
        return _coalesce((s, e) for s, e, _ in self.clipped(start, end))

    def unmapped_ranges(self, start: int, end: int) -> list[Range]:
        """The unmapped parts of ``[start, end)``, in order (the seed's gap iteration).

        Complexity: O(log n + k).
        """
        return [Range(s, e) for s, e in self.gaps(start, end)]

    def writable_ranges(self, start: int, end: int) -> list[Range]:
        """The parts of ``[start, end)`` mapped writable by at least one mapping, in order.

        Complexity: O(log n + k + m); m entries inspected.
        """
        return _coalesce(
            (s, e)
            for s, e, value in self.clipped(start, end)
            if any(entry.writable for entry in value)
        )

    def is_mapped(self, offset: int) -> bool:
        """Whether some mapping covers file offset ``offset``.

        Complexity: O(log n).
        """
        return self.find(offset) is not None

    def mapped_bytes(self) -> int:
        """How many file offsets are mapped at least once.

        Complexity: O(1).
        """
        return self.total()
