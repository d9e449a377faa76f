"""Which file pages are cached, and where in the pool they live (the seed's ``FileRangeSet``).

A :class:`CacheMap` maps page-aligned file ranges to pool offsets: a segment ``[s, e) -> p``
says file offset ``s + i`` is cached at pool offset ``p + i``. Segments merge only when they
are adjacent in both the file and the pool, so one segment is always one contiguous pool extent
and can be handed to the pool (or to ``os.preadv``) as one buffer.

Filling (reading the backing file into fresh pool extents) is the inode's job; this module only
keeps the map and hands back the extents a drop or truncate frees, so the caller can release
them to the pool. The owner's ``_data_lock`` protects it (lock order: see ``inode.py``).

The map is also the one owner of which *chunks* (``1 << chunk_shift`` bytes of the file) hold
cached pages: it counts cached bytes per chunk and calls ``on_chunk(index, True)`` when a chunk
gains its first cached byte and ``on_chunk(index, False)`` when it loses its last. The eviction
policy's keys are kept by that callback alone, so no call site can forget to tell the policy.
"""

from __future__ import annotations

from itertools import pairwise
from typing import TYPE_CHECKING, final

from .ranges import PAGE_MASK
from .segments import SegmentMap

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["CacheMap"]


def _advance(pool_offset: int, delta: int) -> int:
    """Split rule: the right piece starts ``delta`` bytes further into the pool."""
    return pool_offset + delta


def _contiguous_within(arena_size: int) -> Callable[[int, int, int], bool]:
    """Merge rule: the right piece continues the left one in the pool, in the same arena.

    Pool offsets of adjacent arenas are numerically contiguous, but one memoryview cannot span
    two arenas, so a segment must never cross an arena boundary.
    """

    def contiguous(left_pool: int, left_length: int, right_pool: int) -> bool:
        return left_pool + left_length == right_pool and right_pool % arena_size != 0

    return contiguous


def _check_aligned(start: int, end: int) -> None:
    if (start | end) & PAGE_MASK:
        raise ValueError(f"range [{start:#x}, {end:#x}) is not page-aligned")


@final
class CacheMap(SegmentMap[int]):
    """Page-aligned file ranges mapped to their pool offsets ("FR start" in the seed).

    Mutators taking a range require page alignment (``ValueError``), on top of the checks of
    :class:`~aiocache_inode.segments.SegmentMap`. Queries accept any offsets.
    """

    __slots__ = ("_chunk_bytes", "_chunk_shift", "_on_chunk")

    def __init__(
        self,
        arena_size: int = 64 << 20,
        *,
        chunk_shift: int = 16,
        on_chunk: Callable[[int, bool], None] | None = None,
    ) -> None:
        super().__init__(split=_advance, can_merge=_contiguous_within(arena_size))
        self._chunk_shift = chunk_shift
        # Cached bytes per chunk index; a chunk with none has no entry.
        # Invariant: sum(values) == self.total(); every value > 0.
        self._chunk_bytes: dict[int, int] = {}
        self._on_chunk = on_chunk

    def _count(self, start: int, end: int, sign: int) -> None:
        """Add (``sign`` 1) or take (-1) ``[start, end)`` from the per-chunk counts.

        Complexity: O(c); c chunks touched.
        """
        shift = self._chunk_shift
        counts = self._chunk_bytes
        notify = self._on_chunk
        idx = start >> shift
        while start < end:
            stop = min(end, (idx + 1) << shift)
            had = counts.get(idx, 0)
            now = had + sign * (stop - start)
            if now:
                counts[idx] = now
            else:
                del counts[idx]
            if notify is not None and (not had or not now):
                notify(idx, bool(now))
            start = stop
            idx += 1

    def detach(self) -> None:
        """Stop reporting chunk changes (the owner is closed and drops its last reference)."""
        self._on_chunk = None

    def chunk_cached(self, idx: int) -> bool:
        """Whether chunk ``idx`` holds any cached page. Complexity: O(1)."""
        return idx in self._chunk_bytes

    def cached_chunks(self) -> list[int]:
        """Indices of the chunks holding cached pages (a snapshot). Complexity: O(c)."""
        return list(self._chunk_bytes)

    def pool_offset(self, offset: int) -> tuple[int, int, int] | None:
        """``(segment start, segment end, pool offset of offset)``, or ``None`` if uncached.

        This is the seed's ``FileRangeOf`` for one offset: the pool offset of the rest of the
        segment follows contiguously.

        Complexity: O(log n).

        Raises:
            ValueError: ``offset`` is negative.
        """
        found = self.find(offset)
        if found is None:
            return None
        start, end, pool = found
        return start, end, pool + (offset - start)

    def insert(self, start: int, end: int, value: int) -> None:
        """Record ``[start, end)`` as cached at pool offset ``value``; see ``SegmentMap``.

        Complexity: O(log n).

        Raises:
            ValueError: not page-aligned, invalid, or meets a cached range.
        """
        _check_aligned(start, end)
        if value & PAGE_MASK:
            raise ValueError(f"pool offset {value:#x} is not page-aligned")
        super().insert(start, end, value)
        self._count(start, end, 1)

    def append(self, start: int, end: int, value: int) -> bool:
        """Add ``[start, end) -> value`` past the last segment; see ``SegmentMap.append``.

        Complexity: O(1) when it extends the last segment, else O(log n).
        """
        if not super().append(start, end, value):
            return False
        self._count(start, end, 1)
        return True

    def assign(self, start: int, end: int, value: int) -> None:
        """Record ``[start, end)`` as cached at ``value``, replacing what was there.

        The caller must already have released the pool extents this replaces (use
        :meth:`drop` first to learn them).

        Complexity: O((k + 1) log n).

        Raises:
            ValueError: not page-aligned, or invalid.
        """
        _check_aligned(start, end)
        if value & PAGE_MASK:
            raise ValueError(f"pool offset {value:#x} is not page-aligned")
        self.remove(start, end)
        self.insert(start, end, value)

    def remove(self, start: int, end: int) -> list[tuple[int, int, int]]:
        """Uncache ``[start, end)``; return the removed ``(start, end, pool offset)`` pieces.

        Complexity: O((k + 1) log n).

        Raises:
            ValueError: not page-aligned, or invalid.
        """
        _check_aligned(start, end)
        removed = super().remove(start, end)
        for s, e, _pool in removed:
            self._count(s, e, -1)
        return removed

    def clear(self) -> None:
        """Uncache everything (the per-chunk owner is told of every chunk). Complexity: O(n)."""
        if self:
            bounds = self.bounds()
            assert bounds is not None
            self.remove(bounds[0], bounds[1])

    def split_at(self, offset: int) -> None:
        """Cut the segment strictly containing ``offset`` there; see ``SegmentMap``.

        Complexity: O(log n).

        Raises:
            ValueError: ``offset`` is negative or not page-aligned.
        """
        _check_aligned(offset, offset)
        super().split_at(offset)

    def drop(self, start: int, end: int) -> list[tuple[int, int]]:
        """Uncache ``[start, end)`` (the seed's ``Drop``) and return the freed pool extents.

        Complexity: O((k + 1) log n).

        Returns:
            ``(pool offset, length)`` of each freed extent, in file order, for the caller to
            release to the pool.

        Raises:
            ValueError: not page-aligned, or invalid.
        """
        return [(pool, e - s) for s, e, pool in self.remove(start, end)]

    def truncate_pages(self, new_page_end: int) -> list[tuple[int, int]]:
        """Uncache every page at or past ``new_page_end`` (the seed's ``Truncate``, page part).

        Zeroing the tail of a partial last page is the inode's job: this map knows where the
        page lives but not its bytes. Compare Linux's ``mm/truncate.c:truncate_setsize()``.

        Complexity: O((k + 1) log n); k segments dropped.

        Returns:
            ``(pool offset, length)`` of each freed extent, in file order.

        Raises:
            ValueError: ``new_page_end`` is negative or not page-aligned.
        """
        _check_aligned(new_page_end, new_page_end)
        if new_page_end < 0:
            raise ValueError(f"negative offset {new_page_end}")
        bounds = self.bounds()
        if bounds is None or bounds[1] <= new_page_end:
            return []
        return self.drop(new_page_end, bounds[1])

    def check_invariants(self) -> None:
        """``SegmentMap``'s invariants, plus: page-aligned, and pool extents disjoint.

        Complexity: O(n log n) (the pool extents are sorted to check them).

        Raises:
            AssertionError: one does not hold.
        """
        super().check_invariants()
        extents: list[tuple[int, int]] = []
        for s, e, pool in self.segments():
            if (s | e | pool) & PAGE_MASK:
                raise AssertionError(f"[{s:#x}, {e:#x}) -> {pool:#x} is not page-aligned")
            if pool < 0:
                raise AssertionError(f"[{s:#x}, {e:#x}) -> negative pool offset {pool}")
            extents.append((pool, pool + (e - s)))
        extents.sort()
        for (_, prev_end), (pool_start, _) in pairwise(extents):
            if prev_end > pool_start:
                raise AssertionError(f"pool extents overlap at {pool_start:#x}")
        shift = self._chunk_shift
        want: dict[int, int] = {}
        for s, e, _pool in self.segments():
            while s < e:
                idx = s >> shift
                stop = min(e, (idx + 1) << shift)
                want[idx] = want.get(idx, 0) + stop - s
                s = stop
        if want != self._chunk_bytes:
            raise AssertionError("per-chunk cached byte counts differ from the segments")
