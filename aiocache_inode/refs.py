"""Reference counts over ranges (the seed's ``FrameRefSet``), on the generic segment map."""

from __future__ import annotations

from typing import final

from .segments import SegmentMap

__all__ = ["RefCountSet"]


@final
class RefCountSet:
    """Per-offset reference counts kept as maximal runs of equal counts.

    Invariant: every stored count is >= 1 (offsets with no reference are gaps).
    """

    __slots__ = ("_map",)

    def __init__(self) -> None:
        self._map: SegmentMap[int] = SegmentMap()

    def __bool__(self) -> bool:
        return bool(self._map)

    def referenced_bytes(self) -> int:
        """Bytes with a count of at least one. Complexity: O(1)."""
        return self._map.total()

    def increment(self, start: int, end: int) -> list[tuple[int, int]]:
        """Add one reference to ``[start, end)``; return the sub-ranges that went from 0 to 1.

        Complexity: O(log n + k); k segments touched.
        """
        if start >= end:
            return []
        m = self._map
        newly = list(m.gaps(start, end))
        pieces = m.remove(start, end)
        for s, e, count in pieces:
            m.insert(s, e, count + 1)
        for s, e in newly:
            m.insert(s, e, 1)
        return newly

    def decrement(self, start: int, end: int) -> list[tuple[int, int]]:
        """Drop one reference from ``[start, end)``; return the sub-ranges that reached 0.

        Raises:
            ValueError: part of the range holds no reference (nothing is changed).

        Complexity: O(log n + k).
        """
        if start >= end:
            return []
        m = self._map
        if not m.is_covered(start, end):
            raise ValueError(f"reference underflow in [{start}, {end})")
        released: list[tuple[int, int]] = []
        for s, e, count in m.remove(start, end):
            if count > 1:
                m.insert(s, e, count - 1)
            else:
                released.append((s, e))
        return released

    def unreferenced(self, start: int, end: int) -> list[tuple[int, int]]:
        """The sub-ranges of ``[start, end)`` with no reference. Complexity: O(log n + k)."""
        return list(self._map.gaps(start, end))

    def referenced(self, start: int, end: int) -> list[tuple[int, int]]:
        """The sub-ranges of ``[start, end)`` holding a reference. Complexity: O(log n + k)."""
        return [(s, e) for s, e, _count in self._map.clipped(start, end)]

    def check_invariants(self) -> None:
        """Raise AssertionError unless every count is positive and the map is well formed."""
        self._map.check_invariants()
        for s, e, count in self._map.segments():
            assert count >= 1, (s, e, count)
