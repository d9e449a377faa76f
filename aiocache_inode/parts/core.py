"""The state one caching inode shares with its parts, and the helpers they all use.

:class:`InodeCore` holds every field of a :class:`~aiocache_inode.inode.CachingInode` that more
than one part reads or writes (cache map, dirty set, in-flight table, size, attributes, locks,
readahead and hit-path state), each with the lock that protects it; the lock order is stated
once, in ``inode.py``. The parts (``fills``, ``writes``, ``runs``, ``views``, ``attributes``,
``drops``, ``hostmap``) each get the core at construction and keep their own state, if any, to
themselves. ``CachingInode`` subclasses the core only so that its hot paths read these fields as
plain slots of ``self``; everything else is composition.

The in-flight table (``_inflight``) records one :class:`Op` per backing request over a page
range: FILL (pool pages being read from the backing; readers wait on it, a truncate marks it
invalid), WRITE (a write-through to an uncached gap; readers wait) and WRITEBACK (dirty cached
pages being written; writers wait, eviction skips them). Fills and write-throughs cover gaps of
the cache map, write-backs cover cached pages, so the kinds never overlap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, final

import anyio
import anyio.lowlevel

from ..attrs import S_ISGID, S_ISUID, S_IXGRP, AttrMask, Attrs
from ..cache import CacheMap
from ..chunks import CHUNK_SHIFT, KEY_SHIFT
from ..dirty import DirtySet
from ..errors import BackingError, ClosedError
from ..locks import RWLock
from ..mappings import MappingSet
from ..ranges import MAX_OFFSET, Range, page_round_up
from ..refs import RefCountSet
from ..segments import SegmentMap
from .hostmap import HostFileMapper

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..backing.base import BackingFile
    from ..services import StoreServices


__all__ = [
    "A_ATIME",
    "A_CTIME",
    "A_MCTIME",
    "A_MODE",
    "A_MTIME",
    "A_SIZE",
    "A_USAGE",
    "FILL",
    "WRITE",
    "WRITEBACK",
    "InodeCore",
    "Op",
    "advance_views",
    "kill_suid",
]

# The dirty-attribute mask is kept as a plain int: Flag arithmetic costs ~1 us per operation,
# more than a cached 4 KiB write. These are its bits.
A_SIZE: Final = AttrMask.SIZE.value
A_USAGE: Final = AttrMask.USAGE.value
A_MODE: Final = AttrMask.MODE.value
A_ATIME: Final = AttrMask.ATIME.value
A_MTIME: Final = AttrMask.MTIME.value
A_CTIME: Final = AttrMask.CTIME.value
A_MCTIME: Final = A_MTIME | A_CTIME

FILL: Final = 1
WRITE: Final = 2
WRITEBACK: Final = 3


@final
class Op:
    """One backing request in flight over ``[start, end)`` (see the module docstring)."""

    __slots__ = ("end", "error", "event", "extents", "invalid", "kind", "speculative", "start")

    def __init__(self, kind: int, start: int, end: int) -> None:
        self.kind = kind
        self.start = start
        self.end = end
        # Immutable after __init__ (kind, start, end). The rest is loop-atomic: written by the
        # task running the op and by truncate/invalidation, read by its waiters.
        # Pool extents reserved for a FILL, in file order; they cover [start, end) exactly.
        self.extents: list[tuple[int, int]] = []
        # Set by a truncate or invalidation: discard the fill's pages instead of caching them.
        self.invalid = False
        # A readahead fill (counted against readahead_cap; its pages are remembered as unused).
        self.speculative = False
        # The backing failure that ended the op, if any (a cancelled op records None).
        self.error: BaseException | None = None
        # Set when the op completes, whatever the outcome.
        self.event = anyio.Event()


def advance_views(views: list[memoryview], done: int) -> None:
    """Drop the first ``done`` bytes from ``views`` after a short read or write. O(k)."""
    while views and done >= len(views[0]):
        done -= len(views[0])
        views.pop(0)
    if views and done:
        views[0] = views[0][done:]


def kill_suid(mode: int) -> int:
    """Drop setuid, and setgid when group-execute is set (Linux's should_remove_suid)."""
    mode &= ~S_ISUID
    if mode & S_ISGID and mode & S_IXGRP:
        mode &= ~S_ISGID
    return mode


class InodeCore:
    """The fields a caching inode shares with its parts (see the module docstring).

    Get one from ``store.open(key, backing)``; the constructor is internal.

    Invariants (checked by :meth:`_check_invariants`):
        dirty ⊆ cached (by offset); no cached page starts at or past page_round_up(size);
        keep-dirty ranges ⊆ mapped ranges; policy keys of this inode == chunks with cached pages;
        in-flight ops are pairwise disjoint; FILL and WRITE ops lie in cache gaps, WRITEBACK ops
        inside cached pages.
    """

    __slots__ = (
        "__weakref__",
        "_append",
        "_attr_lock",
        "_attrs",
        "_backing",
        "_cache",
        "_closed",
        "_data_lock",
        "_deferred_free",
        "_dirtied_at",
        "_dirty",
        "_dirty_attr",
        "_hit",
        "_host",
        "_id",
        "_inflight",
        "_key",
        "_key_base",
        "_map_lock",
        "_maps",
        "_pending_mc",
        "_pending_usage",
        "_pins",
        "_ra_mark",
        "_ra_next",
        "_ra_trigger",
        "_ra_unused",
        "_ra_wasted",
        "_reported_cached",
        "_reported_dirty",
        "_reported_mapped",
        "_resizing",
        "_size",
        "_svc",
        "_writeback_bytes",
    )

    def __init__(
        self,
        services: StoreServices,
        key: object,
        inode_id: int,
        backing: BackingFile,
        attrs: Attrs,
    ) -> None:
        # Immutable after __init__. The store's services: the one way to anything store-wide.
        self._svc = services
        self._key = key
        self._id = inode_id
        self._key_base = inode_id << KEY_SHIFT
        self._backing = backing

        # Serializes writers, the attribute setters, truncate and allocate (the lock order is
        # in inode.py).
        self._attr_lock = anyio.Lock()
        # Cached attributes. Protected by: _attr_lock, except size (below).
        self._attrs = attrs
        # Attributes changed only here, not yet written out. Protected by: _attr_lock.
        self._dirty_attr = 0
        # The file size. Written with _attr_lock held (and _data_lock exclusive when it shrinks
        # or is set by truncate/allocate); read anywhere (one event-loop thread). self._attrs.size
        # is refreshed from it when attributes are read.
        self._size = attrs.size
        # Set while a shrinking truncate is under way (from before its backing call until the
        # cache is cut): a fill then may read a backing that already shrank and take its EOF
        # for a hole, so fills completing meanwhile are discarded and new ones wait for it.
        # Written under _attr_lock; read anywhere (loop-atomic).
        self._resizing: anyio.Event | None = None
        # A write's mtime = ctime and usage, applied to _attrs when attributes are next read
        # (building a frozen Attrs costs more than a cached 4 KiB write). 0 = nothing pending.
        # Protected by: _attr_lock (or the write fast path's synchronous section).
        self._pending_mc = 0
        self._pending_usage = 0

        # Guards the mapping set.
        self._map_lock = anyio.Lock()
        # Who maps which file range. Protected by: _map_lock.
        self._maps = MappingSet()

        # Shared by write-backs, exclusive around size changes and wholesale drops (inode.py).
        self._data_lock = RWLock()
        # File range -> pool offset; dirty ranges (keep flag); I/O in flight. Protected by:
        # loop atomicity (changed only in synchronous sections); _data_lock exclusive keeps
        # write-backs out while a size change or a wholesale drop rewrites them.
        self._cache = CacheMap(
            services.pool.arena_size, chunk_shift=CHUNK_SHIFT, on_chunk=self._chunk_changed
        )
        self._dirty = DirtySet()
        # Bytes write-back runs took out of the dirty set and have not finished writing: still
        # dirty for every count (dirty_bytes, the store's totals, the dirty limit), as Linux
        # counts pages under writeback. Loop-atomic (changed at a run's start and end).
        self._writeback_bytes = 0
        self._inflight: SegmentMap[Op] = SegmentMap(can_merge=lambda a, _n, b: a is b)
        # Pool ranges pinned by live views (counts), and pool ranges dropped from the cache
        # while pinned: freed when the last pin goes (so a view never sees reused memory).
        # Protected by: loop atomicity.
        self._pins = RefCountSet()
        self._deferred_free: SegmentMap[bool] = SegmentMap()
        # Host-FD mode: page refs on the backing file and the internal mmaps (map_internal).
        # Loop-atomic (every change is synchronous).
        self._host = HostFileMapper(backing)

        # Readahead state the hit path reads: where a sequential reader goes next, and the offset
        # whose read starts the next asynchronous window (the rest is Fills' own). A new file
        # read from its start counts as sequential (the common whole-object read).
        # Protected by: loop atomicity (hits update them without a lock).
        self._ra_next = 0
        self._ra_trigger = MAX_OFFSET
        # Ranges filled by readahead that no read has used yet (wasted if dropped unused), and
        # where the current run of sequential reads began: every byte of [_ra_mark, _ra_next)
        # has been read, and is removed from _ra_unused lazily (_ra_flush), not per read.
        # This inode's wasted readahead bytes (its window shrinks when they grow).
        # Protected by: loop atomicity.
        self._ra_unused: SegmentMap[bool] = SegmentMap()
        self._ra_mark = 0
        self._ra_wasted = 0
        # The cached segment the last hit used: (file start, file end, arena view, offset of
        # the start in it). Any drop of cached pages forgets it (extents may be reused).
        # Protected by: loop atomicity.
        self._hit: tuple[int, int, memoryview, int] | None = None
        # Pool pages set aside for appends in write-back mode (offset, length): a run of 4 KiB
        # appends then takes its pages from one allocation and its cache segment grows in
        # place. Counted in usage; given back by truncate, eviction and release, and taken back
        # by reclaim whenever room is short (svc.appends: held exactly while this is set).
        # Protected by: loop atomicity (taken and given back in synchronous sections).
        self._append: tuple[int, int] | None = None

        # Byte counts last reported to the store's totals (the store sums deltas). Protected by:
        # loop atomicity (only _report writes them).
        self._reported_cached = 0
        self._reported_dirty = 0
        self._reported_mapped = 0
        # svc.monotonic() when the inode last went from clean to dirty (the flusher's age).
        # Protected by: loop atomicity (only _report writes it).
        self._dirtied_at: float | None = None
        # Set once by release, retirement or the store's exit; never cleared. Loop-atomic.
        self._closed = False

    @property
    def attrs(self) -> Attrs:
        """The cached attributes (the seed's UnstableAttr). Never contacts the backing."""
        a = self._attrs
        if a.size != self._size or self._pending_mc or self._pending_usage > a.usage:
            changes = {"size": self._size}
            if self._pending_mc:
                changes["mtime"] = changes["ctime"] = self._pending_mc
                self._pending_mc = 0
            if self._pending_usage > a.usage:
                changes["usage"] = self._pending_usage
            a = self._attrs = a.with_(**changes)
        return a

    def dirty_ranges(self) -> list[Range]:
        """The dirty file ranges, in order."""
        return [Range(s, e) for s, e, _keep in self._dirty.segments()]

    def cached_ranges(self) -> list[Range]:
        """The cached file ranges, in order (adjacent ranges merged)."""
        out: list[Range] = []
        for s, e, _fr in self._cache.segments():
            if out and out[-1].end == s:
                out[-1] = Range(out[-1].start, e)
            else:
                out.append(Range(s, e))
        return out

    def _lookup_hit(self, offset: int) -> tuple[int, int, memoryview, int] | None:
        """Find the cached segment holding ``offset`` and remember it for the next hit."""
        # Hot path: the cache map's SortedDict, read directly (a method call per bisect would
        # cost more than the bisect).
        cmap = self._cache._map  # noqa: SLF001
        i = cmap.bisect_right(offset) - 1
        if i < 0:
            return None
        seg_start, (seg_end, fr) = cmap.peekitem(i)
        if seg_end <= offset:
            return None
        arena, at = self._svc.pool.locate(fr)
        hit = self._hit = (seg_start, seg_end, arena, at)
        return hit

    def _access_chunks(self, offset: int, end: int) -> None:
        """One policy access per chunk of ``[offset, end)`` (once per request, not per page)."""
        access = self._svc.policy.access
        base = self._key_base
        for idx in range(offset >> CHUNK_SHIFT, ((end - 1) >> CHUNK_SHIFT) + 1):
            access(base | idx)

    def _copy_cached(self, pos: int, end: int, out: memoryview, base: int) -> int:
        """Copy the cached run starting at ``pos`` into ``out``; return where the run stops.

        ``out[0]`` is file offset ``base``; the result is ``end`` when all was cached.
        Synchronous. Complexity: O(log n + k); k segments copied.
        """
        cmap = self._cache._map  # noqa: SLF001 (hot path, as in _lookup_hit)
        pool_view = self._svc.pool.view
        i = cmap.bisect_right(pos) - 1
        if i < 0:
            i = 0
        nseg = len(cmap)
        while pos < end and i < nseg:
            s, (e, fr) = cmap.peekitem(i)
            if s > pos:
                break
            if e > pos:
                stop = e if e < end else end
                out[pos - base : stop - base] = pool_view(fr + pos - s, stop - pos)
                pos = stop
            i += 1
        return pos

    async def _wait_op(self, op: Op, pos: int) -> None:
        """Wait for an in-flight op covering ``pos``; raise if it was a fill that failed there."""
        await op.event.wait()
        if (
            op.kind == FILL
            and op.error is not None
            and self._cache.find(pos) is None
            and self._inflight.find(pos) is None
        ):
            raise BackingError(f"fill of [{op.start}, {op.end}) failed: {op.error}") from op.error

    def _op_at(self, pos: int) -> Op | None:
        """The in-flight op covering ``pos``, if any. Complexity: O(log n)."""
        seg = self._inflight.find(pos)
        return None if seg is None else seg[2]

    def _gap_limit(self, pos: int) -> int:
        """Where the uncached, idle gap containing ``pos`` ends (clipped to pgend(size))."""
        limit = page_round_up(self._size)
        nxt = self._cache.next_segment_start(pos)
        if nxt is not None and nxt < limit:
            limit = nxt
        nxt = self._inflight.next_segment_start(pos)
        if nxt is not None and nxt < limit:
            limit = nxt
        return limit

    @staticmethod
    def _next_boundary(m: SegmentMap[Any], pos: int) -> int:
        seg = m.find(pos)
        if seg is not None:
            return seg[1]
        nxt = m.next_segment_start(pos)
        return MAX_OFFSET if nxt is None else nxt

    def _chunk_changed(self, idx: int, cached: bool) -> None:
        """The cache map's report: chunk ``idx`` gained its first cached page, or lost its last.

        The one place the policy learns of this inode's chunks (the cache map owns the count),
        so the policy's keys are exactly the chunks with cached pages, less those reclaim holds
        while it works on them (``svc.reclaiming``; it puts them back when it is done).
        Synchronous. Complexity: O(1).
        """
        key = self._key_base | idx
        svc = self._svc
        if cached:
            svc.policy.insert(key)
        else:
            svc.policy.remove(key)
            svc.reclaiming.discard(key)

    def _ra_flush(self) -> None:
        """Count the pending sequential run ``[_ra_mark, _ra_next)`` as used readahead."""
        mark = self._ra_mark
        nxt = self._ra_next
        if nxt > mark and self._ra_unused:
            self._ra_consume(mark, nxt)
        self._ra_mark = nxt

    def _ra_consume(self, start: int, end: int) -> None:
        used = self._ra_unused.remove(start, end)
        if used:
            self._svc.counters.readahead_used_bytes += sum(e - s for s, e, _ in used)

    def _idle(self, start: int, end: int) -> bool:
        """Whether no I/O is in flight over ``[start, end)``. Complexity: O(log n)."""
        return next(iter(self._inflight.overlapping(start, end)), None) is None

    def _release_append(self) -> None:
        """Give the append reservation back to the pool."""
        res = self._append
        if res is not None:
            self._append = None
            svc = self._svc
            del svc.appends[self._id]
            svc.pool.free(res[0], res[1])

    def _gap_limit_any(self, pos: int) -> int:
        """Where the gap at ``pos`` ends: the next cached page or in-flight op (no EOF clip)."""
        limit = MAX_OFFSET
        nxt = self._cache.next_segment_start(pos)
        if nxt is not None:
            limit = nxt
        nxt = self._inflight.next_segment_start(pos)
        if nxt is not None and nxt < limit:
            limit = nxt
        return limit

    def _grow_locked(self, end: int) -> None:
        """Extend the size to ``end`` after data landed there. Requires: _attr_lock held."""
        if end > self._size:
            self._size = end
            self._dirty_attr |= A_SIZE

    def _after_write_locked(self, offset: int, pos: int) -> None:
        """The seed's maybeUpdateAttrs. Requires: _attr_lock held."""
        if pos > self._pending_usage and pos > self._attrs.usage:
            self._pending_usage = pos
            self._dirty_attr |= A_USAGE
        mode = self._attrs.mode
        if pos > offset and mode & (S_ISUID | S_ISGID):
            new = kill_suid(mode)
            if new != mode:
                self._attrs = self.attrs.with_(mode=new)
                self._dirty_attr |= A_MODE

    def _free_extent(self, pool_offset: int, length: int) -> None:
        """Return cache pages to the pool, deferring any part a live view still pins."""
        self._hit = None
        pool = self._svc.pool
        if not self._pins:
            pool.free(pool_offset, length)
            return
        end = pool_offset + length
        for s, e in self._pins.unreferenced(pool_offset, end):
            pool.free(s, e - s)
        for s, e in self._pins.referenced(pool_offset, end):
            self._deferred_free.insert(s, e, True)

    def _writeback_op_in(self, start: int, end: int) -> Op | None:
        """A WRITEBACK op in flight over ``[start, end)``, if any. Complexity: O(log n + k)."""
        if start >= end:
            return None
        for _s, _e, op in self._inflight.overlapping(start, end):
            if op.kind == WRITEBACK:
                return op
        return None

    def _op_end_at(self, pos: int) -> int:
        seg = self._inflight.find(pos)
        return pos if seg is None else seg[1]

    def _set_times_locked(
        self, *, atime: int | None = None, mtime: int | None = None, ctime: int | None = None
    ) -> None:
        """Set the named times in the cache and mark them dirty. Requires: _attr_lock held."""
        if atime is None and mtime is not None and mtime == ctime:
            # A write's touch: kept pending (see _pending_mc), applied on the next read.
            self._pending_mc = mtime
            self._dirty_attr |= A_MCTIME
            return
        changes: dict[str, int] = {}
        if atime is not None:
            changes["atime"] = atime
            self._dirty_attr |= A_ATIME
        if mtime is not None:
            changes["mtime"] = mtime
            self._dirty_attr |= A_MTIME
        if ctime is not None:
            changes["ctime"] = ctime
            self._dirty_attr |= A_CTIME
        self._attrs = self.attrs.with_(**changes)

    async def _set_through_locked(self, mask: AttrMask, attrs: Attrs, force: bool) -> None:
        """Write ``mask`` of ``attrs`` to the backing, shielded so the cache can follow it.

        Requires: _attr_lock held.
        """
        with anyio.CancelScope(shield=True):
            await self._backing.set_attributes(mask, attrs, force)

    def _count_dropped(self, start: int, end: int, freed: int, reason: str) -> None:
        counters = self._svc.counters
        counters.evicted_bytes[reason] += freed
        if self._ra_unused:
            self._ra_flush()
            wasted = self._ra_unused.remove(start, end)
            for s, e, _ in wasted:
                if self._cache.covered_bytes(s, e) == 0:
                    counters.readahead_wasted_bytes += e - s
                    self._ra_wasted += e - s
                else:
                    self._ra_unused.insert(s, e, True)

    async def _reserve(self, nbytes: int) -> bool:
        """Make room in the budget for ``nbytes``: clean reclaim first, then direct reclaim.

        True when they fit. Checkpoint: only when clean reclaim was not enough.
        Cancellation: nothing to undo (what was dropped stays dropped).
        """
        svc = self._svc
        return svc.reserve_nowait(nbytes) or await svc.wait_for_room(nbytes)

    async def _backing_read(self, offset: int, views: Sequence[memoryview]) -> int:
        """``read_into`` of the backing (the store's meter counts it at the edge)."""
        return await self._backing.read_into(offset, views)

    async def _backing_write(self, offset: int, views: Sequence[memoryview]) -> int:
        """``write_from`` of the backing (the store's meter counts it at the edge)."""
        return await self._backing.write_from(offset, views)

    def _report(self) -> None:
        """Push this inode's byte-count changes into the store's totals. O(1)."""
        svc = self._svc
        c = self._cache.total()
        d = self._dirty.total() + self._writeback_bytes
        m = self._maps.mapped_bytes()
        svc.cached_bytes += c - self._reported_cached
        svc.dirty_bytes += d - self._reported_dirty
        svc.mapped_bytes += m - self._reported_mapped
        if d and not self._reported_dirty:
            self._dirtied_at = svc.monotonic()
        elif not d:
            self._dirtied_at = None
        self._reported_cached, self._reported_dirty, self._reported_mapped = c, d, m
        if not c and not self._closed:
            # Cheap test first: only an inode with an empty cache can be idle (the store then
            # checks that nobody holds it open).
            svc.retire_if_idle(self._id)

    def _retirable(self) -> bool:
        """Whether this inode holds nothing worth keeping (see ``svc.retire_if_idle``)."""
        return not (
            self._cache
            or self._dirty
            or self._inflight
            or self._pins
            or self._deferred_free
            or self._dirty_attr
            or self._append is not None
            or self._maps.mapped_bytes()
            or self._host.busy()
            or self._attr_lock.locked()
            or self._map_lock.locked()
            or self._data_lock.readers
            or self._data_lock.writer_active
        )

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("inode released")

    def _check_invariants(self) -> None:
        """Raise AssertionError unless the invariants in the class docstring hold."""
        self._cache.check_invariants()
        self._dirty.check_invariants()
        self._inflight.check_invariants()
        self._pins.check_invariants()
        for s, e, _keep in self._dirty.segments():
            assert self._cache.is_covered(s, e), f"dirty [{s}, {e}) not cached"
        for s, _e, _fr in self._cache.segments():
            assert s < page_round_up(self._size), f"cached page at {s} past size {self._size}"
        for s, e, keep in self._dirty.segments():
            if keep:
                assert not self._maps.unmapped_ranges(s, e), f"keep-dirty [{s}, {e}) unmapped"
        for s, e, op in self._inflight.segments():
            if op.kind == WRITEBACK:
                assert self._cache.is_covered(s, e), f"write-back [{s}, {e}) not cached"
            else:
                assert self._cache.covered_bytes(s, e) == 0, f"fill/write [{s}, {e}) cached"
        want = set()
        for s, e, _fr in self._cache.segments():
            for idx in range(s >> CHUNK_SHIFT, ((e - 1) >> CHUNK_SHIFT) + 1):
                want.add(self._key_base | idx)
        svc = self._svc
        have = {k for k in [*svc.policy.keys(), *svc.reclaiming] if k >> KEY_SHIFT == self._id}
        assert want == have, f"policy keys differ: missing {want - have}, extra {have - want}"
        lent = self._id in svc.appends
        assert lent == (self._append is not None), "append reservation not registered as lent"
        assert self._reported_cached == self._cache.total()
        assert self._reported_dirty == self._dirty.total() + self._writeback_bytes
        running = sum(
            op.end - op.start for _s, _e, op in self._inflight.segments() if op.kind == WRITEBACK
        )
        assert self._writeback_bytes <= running, "write-back bytes with no run in flight"
