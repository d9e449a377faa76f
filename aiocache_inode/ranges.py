"""Half-open byte ranges and page arithmetic.

Every range in the library is ``[start, end)`` with ``0 <= start <= end``. Pages are 4 KiB, as in
the seed; :func:`page_round_down` / :func:`page_round_up` are the seed's ``RoundDown`` and
``pgend``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_OFFSET", "PAGE_MASK", "PAGE_SIZE", "Range", "page_round_down", "page_round_up"]

PAGE_SIZE: Final = 4096
PAGE_MASK: Final = PAGE_SIZE - 1
#: Largest file offset the library accepts: the seed clamps to MaxInt64; this is the last page
#: boundary below it, so every page-rounded range stays in bounds.
MAX_OFFSET: Final = (1 << 63) - PAGE_SIZE


def page_round_down(x: int) -> int:
    """Round ``x`` down to a page boundary. Complexity: O(1)."""
    return x & ~PAGE_MASK


def page_round_up(x: int) -> int:
    """Round ``x`` up to a page boundary (the seed's ``pgend``). Complexity: O(1)."""
    return (x + PAGE_MASK) & ~PAGE_MASK


@dataclass(frozen=True, slots=True)
class Range:
    """A half-open range ``[start, end)`` of offsets.

    Raises:
        ValueError: ``start`` is negative or greater than ``end``.
    """

    start: int
    end: int

    def __post_init__(self) -> None:
        if not (0 <= self.start <= self.end):
            raise ValueError(f"invalid range [{self.start}, {self.end})")

    @property
    def length(self) -> int:
        """Number of offsets in the range."""
        return self.end - self.start

    def __len__(self) -> int:
        return self.end - self.start

    def __bool__(self) -> bool:
        return self.end > self.start

    def contains(self, offset: int) -> bool:
        """Whether ``offset`` lies in the range."""
        return self.start <= offset < self.end

    def overlaps(self, other: Range) -> bool:
        """Whether the two ranges share at least one offset."""
        return self.start < other.end and other.start < self.end

    def is_superset_of(self, other: Range) -> bool:
        """Whether every offset of ``other`` lies in this range (an empty ``other`` does)."""
        return not other or (self.start <= other.start and other.end <= self.end)

    def intersect(self, other: Range) -> Range:
        """The overlap of the two ranges; empty (at ``self.start``) when they do not meet."""
        start = max(self.start, other.start)
        end = min(self.end, other.end)
        if start >= end:
            return Range(self.start, self.start)
        return Range(start, end)

    def is_page_aligned(self) -> bool:
        """Whether both ends lie on page boundaries."""
        return not ((self.start | self.end) & PAGE_MASK)

    def page_rounded_out(self) -> Range:
        """The smallest page-aligned range containing this one."""
        return Range(self.start & ~PAGE_MASK, (self.end + PAGE_MASK) & ~PAGE_MASK)

    def __repr__(self) -> str:
        return f"Range({self.start:#x}, {self.end:#x})"
