"""Dropping cached pages: eviction by chunk or range, shrink, invalidation and release.

What may be dropped is decided in one place (``evictable_parts``): cached, unmapped, with no I/O
in flight, and clean unless the caller wrote it back first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

import anyio
import anyio.lowlevel

from ..chunks import CHUNK_SHIFT, CHUNK_SIZE
from ..errors import CacheError, WritebackError
from ..ranges import MAX_OFFSET, Range, page_round_down, page_round_up

if TYPE_CHECKING:
    from ..segments import SegmentMap
    from .core import (
        InodeCore,
    )
    from .runs import WritebackRuns

__all__ = ["Drops"]


@final
class Drops:
    """Eviction, invalidation and release of one inode's cached pages."""

    __slots__ = (
        "_ino",
        "_runs",
    )

    def __init__(self, inode: InodeCore, runs: WritebackRuns) -> None:
        # The inode served, whose shared state (core.py) this part works on, and the parts
        # it calls. Immutable after __init__.
        self._ino = inode
        self._runs = runs

    def evictable_parts(self, start: int, end: int, *, clean_only: bool) -> list[tuple[int, int]]:
        """Cached sub-ranges of ``[start, end)`` that are unmapped, idle (and clean)."""
        ino = self._ino
        out: list[tuple[int, int]] = []
        for s, e, _fr in ino._cache.clipped(start, end):
            parts = [(s, e)]
            blockers: list[SegmentMap[Any]] = [ino._inflight]
            if clean_only:
                blockers.append(ino._dirty)
            for m in blockers:
                nxt: list[tuple[int, int]] = []
                for ps, pe in parts:
                    nxt.extend(m.gaps(ps, pe))
                parts = nxt
            if ino._maps.mapped_bytes():
                nxt = []
                for ps, pe in parts:
                    nxt.extend((r.start, r.end) for r in ino._maps.unmapped_ranges(ps, pe))
                parts = nxt
            # Dirty ranges and write-throughs are byte-granular: a page with any blocked byte
            # stays, so round each free piece inward to whole pages.
            for ps, pe in parts:
                ps = page_round_up(ps)
                pe = page_round_down(pe)
                if ps < pe:
                    out.append((ps, pe))
        return out

    def drop_nowait(self, start: int, end: int, reason: str, *, clean_only: bool = True) -> int:
        """Drop the clean (or all), unmapped, idle cached pages of ``[start, end)``.

        Synchronous: safe from any task, no lock needed (one event-loop thread). Returns bytes
        freed. Complexity: O(log n + k).
        """
        ino = self._ino
        ino._release_append()
        freed = 0
        for s, e in self.evictable_parts(start, end, clean_only=clean_only):
            for off, length in ino._cache.drop(s, e):
                ino._free_extent(off, length)
                freed += length
            if not clean_only:
                ino._dirty.keep_clean(s, e)
        if freed:
            ino._count_dropped(start, end, freed, reason)
            ino._report()
        return freed

    async def evict_chunk(self, idx: int, reason: str) -> int:
        """The body of :meth:`CachingInode.evict_chunk`, which states the contract."""
        ino = self._ino
        cs = idx << CHUNK_SHIFT
        ce = cs + CHUNK_SIZE
        if ino._dirty.covered_bytes(cs, ce):
            runs = ino._dirty.dirty_ranges(cs, ce)
            lo = runs[0][0]
            hi = runs[-1][1]
            # Extend to the whole dirty segments around the chunk, up to the run cap.
            seg = ino._dirty.find(lo)
            if seg is not None:
                lo = max(seg[0], lo - ino._svc.tunables.writeback_max_run // 2)
            seg = ino._dirty.find(hi - 1)
            if seg is not None:
                hi = min(seg[1], hi + ino._svc.tunables.writeback_max_run // 2)
            await self._runs.write_back(lo, hi)
        return self.drop_nowait(cs, ce, reason)

    async def evict(self, start: int, end: int) -> None:
        """The body of :meth:`CachingInode.evict`, which states the contract."""
        ino = self._ino
        r = Range(start, end).page_rounded_out()
        ino._check_open()
        await self.writeback_unmapped(r.start, r.end)
        self.drop_nowait(r.start, r.end, "explicit")
        await anyio.lowlevel.checkpoint()

    async def writeback_unmapped(self, start: int, end: int) -> None:
        """Write back the unmapped dirty parts of ``[start, end)``.

        Checkpoint: when dirty. Cancellation: what was not written stays dirty.
        """
        ino = self._ino
        for r in ino._maps.unmapped_ranges(start, end):
            await self._runs.write_back(r.start, r.end)

    async def shrink(self, target_bytes: int = 0) -> int:
        """The body of :meth:`CachingInode.shrink`, which states the contract."""
        ino = self._ino
        ino._check_open()
        for s, e in [(r.start, r.end) for r in ino.cached_ranges()]:
            if ino._cache.total() <= target_bytes:
                break
            await self.writeback_unmapped(s, e)
            self.drop_nowait(s, e, "shrink")
        await anyio.lowlevel.checkpoint()
        return ino._cache.total()

    async def invalidate_unsavable(self) -> None:
        """The body of :meth:`CachingInode.invalidate_unsavable`, which states the contract."""
        ino = self._ino
        ino._check_open()
        # _attr_lock keeps writers out from the write-back to the drop: without it a write
        # landing while the data lock is awaited would be dirtied and then dropped unwritten.
        async with ino._attr_lock, ino._map_lock:
            ino._maps.invalidate_all(False)
            await self._runs.write_back(0, MAX_OFFSET)
            async with ino._data_lock.write_locked():
                self.drop_all_locked("invalidate")

    def drop_all_locked(self, reason: str) -> None:
        """Empty cache and dirty set (pinned pool pages are freed when unpinned).

        Requires: _data_lock held exclusively.
        """
        ino = self._ino
        for _s, _e, op in ino._inflight.segments():
            op.invalid = True
        ino._release_append()
        dropped = 0
        for off, length in ino._cache.drop(0, MAX_OFFSET):
            ino._free_extent(off, length)
            dropped += length
        ino._dirty.clear()
        if dropped:
            ino._count_dropped(0, MAX_OFFSET, dropped, reason)
        ino._report()

    async def release(self) -> None:
        """The body of :meth:`CachingInode.release`, which states the contract."""
        ino = self._ino
        if ino._closed:
            await anyio.lowlevel.checkpoint()
            return
        async with ino._attr_lock, ino._map_lock:
            if ino._maps.mapped_bytes():
                raise CacheError("release with mappings still present")
            await self._runs.write_back(0, MAX_OFFSET)
            async with ino._data_lock.write_locked():
                if ino._dirty.total():
                    raise WritebackError("dirty data appeared during release", ino.dirty_ranges())
                self.drop_all_locked("release")
                ino._closed = True
                ino._host.close()
                ino._svc.released(ino._id)
