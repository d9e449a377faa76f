"""The caching inode: one backing file's attributes and byte ranges, cached in the store's pool.

A re-imagining of gVisor's ``CachingInodeOperations`` for anyio (see ``docs/architecture.md`` for
the data flow, and ``docs/seed.md`` for the operation-by-operation semantics).

Lock order (outermost first); no other module restates it:

    CachingInode._attr_lock      attributes, dirty-attribute mask; serializes writers
      CachingInode._map_lock     the mapping set (views, add/remove/copy_mapping)
        CachingInode._data_lock  RWLock: shared by every write-back while it writes pool pages to
                                 the backing; exclusive around a change of the file size (truncate,
                                 allocate) and wholesale drops (invalidate_unsavable, release), so
                                 no write-back can write past a new EOF (seed section 8.9)
          backend-internal locks

Everything else rests on one event-loop thread: code between two awaits is atomic. The cache map,
dirty set and in-flight table are only changed in such synchronous sections, so a hit needs no
lock at all, and no backing I/O ever runs under the exclusive data lock except the size change.

Ranges with I/O in flight are recorded in ``_inflight`` (one ``_Op`` per request):

- FILL: pool pages reserved for a gap and being read from the backing. Readers of the range wait
  on it (one backing read per range, not one per reader); writers wait for it to finish; a
  truncate marks it invalid so its (possibly stale) pages are discarded instead of cached.
- WRITE: a write-through to an uncached gap. Readers wait, so no fill reads the old bytes.
- WRITEBACK: dirty cached pages being written to the backing. Writers wait (stable pages, as
  Linux's wait_on_page_writeback), eviction skips them.

The kinds never overlap one another: fills and write-throughs cover gaps of the cache map,
write-backs cover cached pages.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import time
from typing import TYPE_CHECKING, Any, Final, final

import anyio
import anyio.lowlevel

from .attrs import S_ISGID, S_ISUID, S_IXGRP, AttrMask, Attrs, TimeSpec
from .backing.base import Revalidating
from .cache import CacheMap
from .chunks import CHUNK_SHIFT, CHUNK_SIZE, KEY_SHIFT
from .dirty import DirtySet
from .errors import (
    BackingError,
    CacheError,
    ClosedError,
    ConflictError,
    WouldBlock,
    WritebackError,
)
from .locks import RWLock
from .mappings import MappingSet
from .ranges import MAX_OFFSET, PAGE_MASK, PAGE_SIZE, Range, page_round_down, page_round_up
from .refs import RefCountSet
from .segments import SegmentMap
from .stats import InodeStatistics

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

    from .backing.base import BackingFile
    from .mappings import MappingSpace
    from .services import StoreServices

__all__ = ["CachingInode", "TranslateError", "Translation"]

#: The seed's maxFillRange window for translate (64 KiB).
SEED_FILL_WINDOW: Final = 64 << 10
#: Host mappings for map_internal are made in chunks of this size (the seed's 2 MiB).
HOST_CHUNK: Final = 2 << 20

# The dirty-attribute mask is kept as a plain int: Flag arithmetic costs ~1 us per operation,
# more than a cached 4 KiB write. These are its bits.
_SIZE: Final = AttrMask.SIZE.value
_USAGE: Final = AttrMask.USAGE.value
_MODE: Final = AttrMask.MODE.value
_ATIME: Final = AttrMask.ATIME.value
_MTIME: Final = AttrMask.MTIME.value
_CTIME: Final = AttrMask.CTIME.value
_MCTIME: Final = _MTIME | _CTIME
#: Attributes a revalidation keeps from the cache while they are dirty (size and usage follow
#: the backing, see revalidate).
_KEPT: Final = tuple(
    (flag.value, name)
    for flag, name in (
        (AttrMask.MODE, "mode"),
        (AttrMask.UID, "uid"),
        (AttrMask.GID, "gid"),
        (AttrMask.ATIME, "atime"),
        (AttrMask.MTIME, "mtime"),
        (AttrMask.CTIME, "ctime"),
    )
)
#: Pages an append reservation takes at once (write-back mode).
APPEND_RESERVE: Final = CHUNK_SIZE

_FILL: Final = 1
_WRITE: Final = 2
_WRITEBACK: Final = 3


def _max_fill_range(required: Range, optional: Range) -> Range:
    """The seed's readahead clamp: at most ``max(64 KiB, len(required))``. Complexity: O(1)."""
    if required.length >= SEED_FILL_WINDOW:
        return required
    if optional.length <= SEED_FILL_WINDOW:
        return optional
    if optional.end - required.start <= SEED_FILL_WINDOW:
        return Range(required.start, optional.end)
    return Range(required.start, required.start + SEED_FILL_WINDOW)


@final
class _Op:
    """One backing request in flight over ``[start, end)`` (see the module docstring)."""

    __slots__ = ("end", "error", "event", "extents", "invalid", "kind", "speculative", "start")

    def __init__(self, kind: int, start: int, end: int) -> None:
        self.kind = kind
        self.start = start
        self.end = end
        # Pool extents reserved for a FILL, in file order; they cover [start, end) exactly.
        self.extents: list[tuple[int, int]] = []
        # Set by a truncate or invalidation: discard the fill's pages instead of caching them.
        self.invalid = False
        self.speculative = False
        # The backing failure that ended the op, if any (a cancelled op records None).
        self.error: BaseException | None = None
        self.event = anyio.Event()


@final
class Translation:
    """One contiguous piece of a translate result.

    File range ``source`` lives at pool offset ``pool_offset``; ``writable`` says whether
    writes through it are allowed.
    """

    __slots__ = ("pool_offset", "source", "writable")

    def __init__(self, source: Range, pool_offset: int, writable: bool) -> None:
        self.source = source
        self.pool_offset = pool_offset
        self.writable = writable

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Translation):
            return NotImplemented
        return (self.source, self.pool_offset, self.writable) == (
            other.source,
            other.pool_offset,
            other.writable,
        )

    def __hash__(self) -> int:
        return hash((self.source, self.pool_offset, self.writable))

    def __repr__(self) -> str:
        return f"Translation({self.source!r}, pool={self.pool_offset:#x}, w={self.writable})"


class TranslateError(CacheError):
    """A translate could not cover ``required``: past EOF, or a fill failed inside it.

    ``translations`` holds the partial result (the seed returns it beside its BusError).
    """

    def __init__(self, message: str, translations: list[Translation]) -> None:
        super().__init__(message)
        self.translations = translations


class _ViewSpace:
    """The mapping space a view registers under; invalidation (truncate) only flags it."""

    __slots__ = ("invalidated",)

    def __init__(self) -> None:
        self.invalidated = False

    def invalidate(self, addr_range: Range, private: bool) -> None:
        self.invalidated = True


@final
class _View:
    """``async with inode.view(...)``: pins pages and yields memoryviews into the pool."""

    __slots__ = ("_inode", "_length", "_offset", "_pinned", "_pr", "_space", "_views", "_writable")

    def __init__(self, inode: CachingInode, offset: int, length: int, writable: bool) -> None:
        self._inode = inode
        self._offset = offset
        self._length = length
        self._writable = writable
        self._space = _ViewSpace()
        self._pr: Range | None = None
        self._pinned: list[tuple[int, int]] = []
        self._views: list[memoryview] = []

    async def __aenter__(self) -> list[memoryview]:
        inode = self._inode
        inode._check_open()
        end = min(self._offset + self._length, inode._size)
        if end <= self._offset:
            return []
        pr = Range(page_round_down(self._offset), page_round_up(end))
        await inode.add_mapping(self._space, pr.start, pr.end, pr.start, self._writable)
        self._pr = pr
        try:
            ts = await inode.translate(pr, pr, self._writable)
        except BaseException:
            await self._unmap()
            raise
        # Synchronous from here on: pin the pool pages so a truncate that drops them defers the
        # free until this view is released (the bytes stay valid memory, never reused).
        pool = inode._svc.pool
        lo, hi = self._offset, min(end, inode._size)
        for t in ts:
            inode._pin(t.pool_offset, t.source.length)
            self._pinned.append((t.pool_offset, t.source.length))
            s = max(lo, t.source.start)
            e = min(hi, t.source.end)
            if s < e:
                self._views.append(pool.view(t.pool_offset + (s - t.source.start), e - s))
        return list(self._views)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for v in self._views:
            v.release()
        self._views.clear()
        inode = self._inode
        for off, length in self._pinned:
            inode._unpin(off, length)
        self._pinned.clear()
        await self._unmap()

    async def _unmap(self) -> None:
        pr = self._pr
        if pr is None:
            return
        self._pr = None
        # Must finish even when the holder is being cancelled: a leaked mapping pins pages forever.
        with anyio.CancelScope(shield=True):
            await self._inode.remove_mapping(
                self._space, pr.start, pr.end, pr.start, self._writable
            )


@final
class CachingInode:
    """Attributes and byte ranges of one backing file, cached in a :class:`CacheStore` pool.

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
        "_append_last",
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
        "_host_maps",
        "_host_refs",
        "_id",
        "_inflight",
        "_key",
        "_key_base",
        "_map_lock",
        "_maps",
        "_pending_mc",
        "_pending_usage",
        "_pins",
        "_ra_next",
        "_ra_reserved_end",
        "_ra_trigger",
        "_ra_unused",
        "_ra_window",
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

        self._map_lock = anyio.Lock()
        # Who maps which file range. Protected by: _map_lock.
        self._maps = MappingSet()

        self._data_lock = RWLock()
        # File range -> pool offset; dirty ranges (keep flag); I/O in flight. Changed only in
        # synchronous sections; see the lock-order comment for what _data_lock adds.
        self._cache = CacheMap(
            services.pool.arena_size, chunk_shift=CHUNK_SHIFT, on_chunk=self._chunk_changed
        )
        self._dirty = DirtySet()
        # Bytes write-back runs took out of the dirty set and have not finished writing: still
        # dirty for every count (dirty_bytes, the store's totals, the dirty limit), as Linux
        # counts pages under writeback. Loop-atomic (changed at a run's start and end).
        self._writeback_bytes = 0
        self._inflight: SegmentMap[_Op] = SegmentMap(can_merge=lambda a, _n, b: a is b)
        # Pool ranges pinned by live views (counts), and pool ranges dropped from the cache
        # while pinned: freed when the last pin goes (so a view never sees reused memory).
        self._pins = RefCountSet()
        self._deferred_free: SegmentMap[bool] = SegmentMap()
        # Host-FD mode: page refs on the backing file and the internal mmaps (map_internal).
        self._host_refs = RefCountSet()
        self._host_maps: dict[int, tuple[mmap.mmap, bool]] = {}

        # Readahead state: where a sequential reader goes next, the current window, the offset
        # whose read starts the next asynchronous window, and how far readahead has been issued.
        # A new file read from its start counts as sequential (the common whole-object read).
        self._ra_next = 0
        self._ra_window = 0
        self._ra_trigger = MAX_OFFSET
        self._ra_reserved_end = 0
        # Ranges filled by readahead that no read has used yet (wasted if dropped unused).
        self._ra_unused: SegmentMap[bool] = SegmentMap()
        # The cached segment the last hit used: (file start, file end, arena view, offset of
        # the start in it). Any drop of cached pages forgets it (extents may be reused).
        self._hit: tuple[int, int, memoryview, int] | None = None
        # Pool pages set aside for appends in write-back mode (offset, length): a run of 4 KiB
        # appends then takes its pages from one allocation and its cache segment grows in
        # place. Counted in usage; given back by truncate, eviction and release.
        self._append: tuple[int, int] | None = None
        self._append_last = 0

        # Byte counts last reported to the store's totals (the store sums deltas).
        self._reported_cached = 0
        self._reported_dirty = 0
        self._reported_mapped = 0
        # svc.monotonic() when the inode last went from clean to dirty (the flusher's age).
        self._dirtied_at: float | None = None
        self._closed = False

    # ------------------------------------------------------------------------------------------
    # Observable state
    # ------------------------------------------------------------------------------------------

    @property
    def key(self) -> object:
        """The key this inode is stored under."""
        return self._key

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

    @property
    def dirty_attrs(self) -> AttrMask:
        """Attributes changed locally and not yet written out."""
        return AttrMask(self._dirty_attr)

    @property
    def size(self) -> int:
        """The file size as cached."""
        return self._size

    @property
    def cached_bytes(self) -> int:
        """Bytes of file data held in pool pages."""
        return self._cache.total()

    @property
    def dirty_bytes(self) -> int:
        """Bytes of file data not yet written back (including write-backs in flight)."""
        return self._dirty.total() + self._writeback_bytes

    @property
    def mapped_bytes(self) -> int:
        """Bytes of file range mapped (pinned) by views or add_mapping."""
        return self._maps.mapped_bytes()

    @property
    def closed(self) -> bool:
        """Whether :meth:`release` has completed."""
        return self._closed

    @property
    def backing(self) -> BackingFile:
        """The backing file."""
        return self._backing

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

    def statistics(self) -> InodeStatistics:
        """A snapshot of this inode's state."""
        return InodeStatistics(
            size=self._size,
            cached_bytes=self._cache.total(),
            dirty_bytes=self._dirty.total() + self._writeback_bytes,
            mapped_bytes=self._maps.mapped_bytes(),
            inflight_ops=len({id(op) for _s, _e, op in self._inflight.segments()}),
            cached_segments=len(self._cache),
            dirty_segments=len(self._dirty),
        )

    def fd(self) -> int:
        """The backing's host file descriptor, or -1 (the seed's FD)."""
        return self._backing.fd()

    # ------------------------------------------------------------------------------------------
    # Reads
    # ------------------------------------------------------------------------------------------

    async def read(self, offset: int, size: int) -> bytes:
        """Read up to ``size`` bytes at ``offset``; ``b""`` at or past EOF.

        Checkpoint: not on a full cache hit (see :meth:`readinto`); otherwise yes.
        Cancellation: nothing changes but the cache contents (fills finish or are discarded).

        Raises:
            ValueError: negative offset or size.
            BackingError: a fill from the backing failed.
            ClosedError: the inode was released.
        """
        if size < 0:
            raise ValueError(f"negative read size {size}")
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        n = min(size, max(0, self._size - offset))
        buf = bytearray(n)
        got = await self.readinto(offset, buf)
        return bytes(buf) if got == n else bytes(buf[:got])

    async def readinto(self, offset: int, buffer: Any) -> int:
        """Copy file bytes at ``offset`` into ``buffer`` (any writable buffer); return the count.

        Hot path: a read that finds every page cached copies straight out of the pool and
        returns without yielding (a checkpoint costs several times a 4 KiB copy); to keep a loop
        of hits from starving the event loop, every ``hit_yield_every``-th hit in the store
        (default 64) checkpoints. No locks, no allocation beyond the slicing memoryviews.

        Checkpoint: on misses, and on every ``hit_yield_every``-th hit.
        Cancellation: the buffer may hold part of the data; cache state stays consistent.
        Requires: no inode lock held.

        Raises:
            ValueError: negative offset, or a read-only buffer.
            BackingError: a fill from the backing failed.
            ClosedError: the inode was released.
        """
        if self._closed:
            raise ClosedError("inode released")
        mv = buffer if type(buffer) is memoryview else memoryview(buffer)
        if mv.readonly:
            raise ValueError("readinto needs a writable buffer")
        if mv.ndim != 1 or mv.itemsize != 1:
            mv = mv.cast("B")
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        end = offset + len(mv)
        size = self._size
        if end > size:
            end = size
        if offset >= end:
            return 0
        svc = self._svc
        # Hot path: the last segment hit (or one lookup), one copy, one policy access.
        hit = self._hit
        if hit is None or offset < hit[0] or end > hit[1]:
            hit = self._lookup_hit(offset)
        if hit is not None and end <= hit[1]:
            n = end - offset
            base = hit[3] - hit[0]
            if n == len(mv):
                mv[:] = hit[2][base + offset : base + end]
            else:
                mv[:n] = hit[2][base + offset : base + end]
            counters = svc.counters
            counters.cache_hits += 1
            counters.read_bytes_cache += n
            first = offset >> CHUNK_SHIFT
            if first == (end - 1) >> CHUNK_SHIFT:
                svc.policy.access(self._key_base | first)
            else:
                self._access_chunks(offset, end)
            if self._ra_unused:
                self._ra_consume(offset, end)
            if offset == self._ra_next and end >= self._ra_trigger:
                self._readahead_async()
            self._ra_next = end
            svc.hit_credit -= 1
            if svc.hit_credit <= 0:
                svc.hit_credit = svc.hit_yield_every
                await anyio.lowlevel.checkpoint()
            return n
        return await self._read_slow(offset, end, mv)

    def _lookup_hit(self, offset: int) -> tuple[int, int, memoryview, int] | None:
        """Find the cached segment holding ``offset`` and remember it for the next hit."""
        cmap = self._cache._map
        i = cmap.bisect_right(offset) - 1
        if i < 0:
            return None
        seg_start, (seg_end, fr) = cmap.peekitem(i)
        if seg_end <= offset:
            return None
        arena, at = self._svc.pool.locate(fr)
        hit = self._hit = (seg_start, seg_end, arena, at)
        return hit

    def read_nowait(self, offset: int, size: int) -> bytes:
        """Serve a read from the cache alone.

        Raises:
            WouldBlock: some byte of the range is not cached.
        """
        if self._closed:
            raise ClosedError("inode released")
        if offset < 0 or size < 0:
            raise ValueError("negative offset or size")
        end = min(offset + size, self._size)
        if offset >= end:
            return b""
        buf = bytearray(end - offset)
        if self._copy_cached(offset, end, memoryview(buf), offset) != end:
            raise WouldBlock(f"[{offset}, {end}) is not fully cached")
        svc = self._svc
        svc.counters.cache_hits += 1
        svc.counters.read_bytes_cache += end - offset
        self._after_hit(offset, end)
        return bytes(buf)

    def _access_chunks(self, offset: int, end: int) -> None:
        """One policy access per chunk of ``[offset, end)`` (once per request, not per page)."""
        access = self._svc.policy.access
        base = self._key_base
        for idx in range(offset >> CHUNK_SHIFT, ((end - 1) >> CHUNK_SHIFT) + 1):
            access(base | idx)

    def _after_hit(self, offset: int, end: int) -> None:
        """Policy access and readahead bookkeeping for a read served from the cache."""
        self._access_chunks(offset, end)
        self._after_read(offset, end)

    def _after_read(self, offset: int, end: int) -> None:
        """Readahead bookkeeping after any read: used bytes, the sequential trigger."""
        if self._ra_unused:
            self._ra_consume(offset, end)
        if offset == self._ra_next and end >= self._ra_trigger:
            self._readahead_async()
        self._ra_next = end

    def _copy_cached(self, pos: int, end: int, out: memoryview, base: int) -> int:
        """Copy the cached run starting at ``pos`` into ``out``; return where the run stops.

        ``out[0]`` is file offset ``base``; the result is ``end`` when all was cached.
        Synchronous. Complexity: O(log n + k); k segments copied.
        """
        cmap = self._cache._map
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

    async def _read_slow(self, offset: int, end: int, out: memoryview) -> int:
        """The read path for anything not a single-segment hit. Checkpoint: yes."""
        svc = self._svc
        counters = svc.counters
        pos = offset
        missed = False
        from_cache = 0
        while True:
            size = self._size
            if end > size:
                end = size
            if pos >= end:
                break
            before = pos
            pos = self._copy_cached(pos, end, out, offset)
            if not missed:
                from_cache += pos - before
            if pos >= end:
                break
            missed = True
            op = self._op_at(pos)
            if op is not None:
                await self._wait_op(op, pos)
                continue
            got = await self._fill_for_read(pos, end, out, offset)
            pos += got
        n = pos - offset
        if missed:
            counters.cache_misses += 1
        else:
            counters.cache_hits += 1
            svc.hit_credit -= 1
        # Bytes copied before the first miss came from the cache; the rest had to be fetched.
        counters.read_bytes_cache += from_cache
        counters.read_bytes_backing += n - from_cache
        if n and missed:
            self._after_miss(offset, pos)
        elif n:
            self._after_hit(offset, pos)
        await anyio.lowlevel.checkpoint()
        return n

    def _after_miss(self, offset: int, end: int) -> None:
        self._access_chunks(offset, end)
        self._after_read(offset, end)

    async def _wait_op(self, op: _Op, pos: int) -> None:
        """Wait for an in-flight op covering ``pos``; raise if it was a fill that failed there."""
        await op.event.wait()
        if (
            op.kind == _FILL
            and op.error is not None
            and self._cache.find(pos) is None
            and self._inflight.find(pos) is None
        ):
            raise BackingError(f"fill of [{op.start}, {op.end}) failed: {op.error}") from op.error

    # ------------------------------------------------------------------------------------------
    # Fills and readahead
    # ------------------------------------------------------------------------------------------

    def _op_at(self, pos: int) -> _Op | None:
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

    async def _fill_for_read(self, pos: int, end: int, out: memoryview, base: int) -> int:
        """Fill the gap at ``pos`` and wait for the part the read needs.

        A sequential reader also starts readahead beyond it (asynchronously); a random one
        fills only the pages it asked for. Returns 0 to make the caller re-scan, or the bytes
        copied by a direct read when the pool has no room. Checkpoint: yes.
        """
        svc = self._svc
        if self._resizing is not None:
            await self._resizing.wait()
            return 0  # re-scan under the new size
        start = page_round_down(pos)
        limit = self._gap_limit(pos)
        req_end = min(page_round_up(end), limit)
        sequential = pos == self._ra_next or (
            self._ra_window > 0 and self._ra_next <= pos < self._ra_reserved_end
        )
        if not sequential:
            self._ra_window = 0
            self._ra_trigger = MAX_OFFSET
        need = req_end - start
        if not svc.reserve_nowait(need) and not await svc.wait_for_room(need):
            return await self._read_direct(pos, min(end, limit), out, base)
        if (
            self._op_at(pos) is not None
            or self._cache.find(pos) is not None
            or self._resizing is not None
            or pos >= self._size
        ):
            # The wait let someone else fill here, or the size change: re-scan.
            return 0
        req_end = min(req_end, self._gap_limit(pos))
        op = self._start_fill(start, req_end, speculative=False)
        if op is None:
            return await self._read_direct(pos, min(end, limit), out, base)
        try:
            if sequential and svc.tunables.readahead_max:
                self._ra_reserved_end = max(self._ra_reserved_end, req_end)
                self._ra_next = pos
                self._readahead_async()
        finally:
            # The fill is recorded: it must run (and complete) whatever happened above.
            await self._run_fill(op)
        if op.error is not None and self._cache.find(pos) is None:
            raise BackingError(f"fill of [{op.start}, {op.end}) failed: {op.error}") from op.error
        return 0

    async def _read_direct(self, pos: int, end: int, out: memoryview, base: int) -> int:
        """Read ``[pos, end)`` straight from the backing into ``out`` (no room in the pool).

        Loops on short counts, as a fill does: a short count is legal for any backing. A zero
        count is EOF: when the size did not change meanwhile, the backing ends before the
        cached size (a hole not yet written back) and the rest reads as zeros; when it did
        (a truncate), the bytes read so far are returned and the caller re-scans under the new
        size. Returns the bytes placed in ``out``, never past the current size.
        Checkpoint: yes. Cancellation: ``out`` may hold part of the data.
        """
        end = min(end, self._size)  # the size may have shrunk while the caller waited
        if pos >= end:
            return 0
        size_before = self._size
        resizing = self._resizing is not None
        dst = out[pos - base : end - base]
        done = 0
        try:
            while done < len(dst):
                got = await self._backing_read(pos + done, [dst[done:]])
                if got <= 0:
                    break
                done += got
        except Exception as exc:
            raise BackingError(f"direct read at {pos} failed: {exc}") from exc
        if done < len(dst):
            if resizing or self._resizing is not None or self._size != size_before:
                return min(done, max(0, self._size - pos))
            dst[done:] = bytes(len(dst) - done)
            done = len(dst)
        return min(done, max(0, self._size - pos))

    def _start_fill(self, start: int, end: int, *, speculative: bool) -> _Op | None:
        """Reserve pool pages for the page-aligned gap ``[start, end)`` and record a FILL op.

        Synchronous. Returns None if the pool cannot allocate (the caller reads directly).
        """
        if start >= end:
            return None
        # Internal bug checks: fills are page-granular, and every in-flight op is too.
        assert not (start | end) & PAGE_MASK, f"fill [{start}, {end}) is not page-aligned"
        svc = self._svc
        op = _Op(_FILL, start, end)
        op.speculative = speculative
        # Recorded before anything is reserved: an overlap raises with nothing to give back.
        self._inflight.insert(start, end, op)
        try:
            op.extents = svc.pool.allocate(end - start)
        except CacheError:
            self._inflight.remove(start, end)
            return None
        if speculative:
            svc.counters.readahead_bytes += end - start
            svc.readahead_inflight += end - start
        return op

    def _readahead_async(self) -> None:
        """Issue the next readahead window beyond what is already requested.

        Synchronous: it only reserves pages and spawns background fills of at most
        ``readahead_request`` bytes each, all in flight at once. The window starts at
        ``readahead_initial`` and doubles each time the reader reaches the start of the last
        window issued (Linux's PG_readahead marker), up to ``readahead_max``. It stops at EOF,
        at the store's cap on speculative bytes in flight, and when the pool has no clean room:
        readahead never waits for memory and never goes over budget.
        """
        svc = self._svc
        t = svc.tunables
        if not t.readahead_max or not svc.running or self._resizing is not None:
            return
        window = self._ra_window
        window = t.readahead_initial if not window else min(window * 2, t.readahead_max)
        self._ra_window = window
        eof = page_round_up(self._size)
        pos = max(page_round_up(self._ra_next), self._ra_reserved_end)
        first = pos
        target = min(pos + window, eof)
        issued = False
        while pos < target:
            if svc.readahead_inflight >= t.readahead_cap:
                break
            if self._cache.find(pos) is not None or self._op_at(pos) is not None:
                nxt = min(
                    self._next_boundary(self._cache, pos),
                    self._next_boundary(self._inflight, pos),
                    target,
                )
                pos = max(nxt, pos + PAGE_SIZE)
                continue
            stop = min(target, self._gap_limit(pos), pos + t.readahead_request)
            if not svc.reserve_nowait(stop - pos):
                break
            op = self._start_fill(pos, stop, speculative=True)
            if op is None:
                break
            svc.spawn(self._run_fill, op)
            issued = True
            pos = stop
        self._ra_reserved_end = max(self._ra_reserved_end, pos)
        if issued or pos < target:
            # The next window goes out when a read reaches the first page of this one (or,
            # when the cap or the budget stopped us, retry from there).
            self._ra_trigger = first + PAGE_SIZE if pos > first else MAX_OFFSET
        else:
            # All of it was cached already: look again only once the reader gets there.
            self._ra_trigger = pos

    @staticmethod
    def _next_boundary(m: SegmentMap[Any], pos: int) -> int:
        seg = m.find(pos)
        if seg is not None:
            return seg[1]
        nxt = m.next_segment_start(pos)
        return MAX_OFFSET if nxt is None else nxt

    async def _run_fill(self, op: _Op) -> None:
        """Read a FILL op's range from the backing into its reserved pages, then cache them.

        Bytes at or past the size (as it was when the read started) are zeroed without asking
        the backing; a backing EOF before the size zero-fills the rest (a hole). On a failure
        the page-granular prefix read so far is kept. Completion is synchronous, in ``finally``.

        Checkpoint: yes.
        Cancellation: the op completes with nothing cached; waiters re-scan.
        """
        svc = self._svc
        pool = svc.pool
        done = 0
        try:
            want = min(op.end, self._size) - op.start
            if want > 0:
                views: list[memoryview] = []
                left = want
                for off, length in op.extents:
                    if left <= 0:
                        break
                    take = length if length < left else left
                    views.append(pool.view(off, take))
                    left -= take
                done = await self._read_fully(op.start, views, want)
            done = op.end - op.start  # everything past `done` is a hole or past EOF: zeros
        except anyio.get_cancelled_exc_class():
            done = 0
            raise
        except Exception as exc:
            op.error = exc
            done = page_round_down(done) if isinstance(done, int) else 0
        finally:
            self._complete_fill(op, done)

    async def _read_fully(self, offset: int, views: list[memoryview], want: int) -> int:
        """Read into ``views`` until full or EOF; zero what EOF leaves.

        Returns the bytes covered (always ``want`` unless an exception propagates). A zero
        count is EOF, never a loop.
        """
        done = 0
        while views:
            got = await self._backing_read(offset + done, views)
            if got <= 0:
                for v in views:
                    v[:] = bytes(len(v))
                return want
            done += got
            while views and got >= len(views[0]):
                got -= len(views[0])
                views.pop(0)
            if views and got:
                views[0] = views[0][got:]
        return done

    def _complete_fill(self, op: _Op, done: int) -> None:
        """Cache the first ``done`` bytes of ``op`` (page-granular), free the rest, wake waiters."""
        svc = self._svc
        pool = svc.pool
        self._inflight.remove(op.start, op.end)
        if op.speculative:
            svc.readahead_inflight -= op.end - op.start
        if self._resizing is not None:
            op.invalid = True  # it may have read a backing that already shrank
        keep_end = op.start + (0 if op.invalid or self._closed else page_round_up(done))
        size_end = page_round_up(self._size)
        if keep_end > size_end:
            keep_end = max(op.start, size_end)
        pos = op.start
        for off, length in op.extents:
            piece_end = pos + length
            if pos < keep_end:
                cut = min(piece_end, keep_end)
                # Zero what lies past the size in the kept pages (EOF rounding, seed Fill).
                tail = self._size
                if tail < cut:
                    z = max(tail, pos)
                    pool.fill_zero(off + (z - pos), cut - z)
                self._cache.insert(pos, cut, off)
                if cut < piece_end:
                    pool.free(off + (cut - pos), piece_end - cut)
            else:
                pool.free(off, length)
            pos = piece_end
        op.extents = []
        if keep_end > op.start:
            if op.speculative:
                self._ra_unused.assign(op.start, keep_end, True)
            # Pages being filled were not evictable when the evictor last looked: wake it now
            # that they are, rather than at its next poll.
            if svc.pool.used_bytes > svc.evict_above:
                svc.wake_evictor()
        self._report()
        op.event.set()

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

    def _ra_consume(self, start: int, end: int) -> None:
        used = self._ra_unused.remove(start, end)
        if used:
            self._svc.counters.readahead_used_bytes += sum(e - s for s, e, _ in used)

    async def _ensure_cached(self, start: int, end: int, window_end: int) -> BaseException | None:
        """Make ``[start, end)`` (page-aligned, within pgend(size)) cached.

        Gaps are filled up to ``window_end``. Returns the first fill error that left part of
        the range uncached, or None when all of it is cached at return (synchronously with the
        caller's next step).

        Checkpoint: when anything is missing.
        Cancellation: fills already started finish or are discarded; nothing else changes.
        """
        svc = self._svc
        while True:
            gap = self._cache.first_gap_from(start, end)
            if gap is None:
                return None
            pos = gap[0]
            op = self._op_at(pos)
            if op is not None:
                await op.event.wait()
                if (
                    op.error is not None
                    and self._cache.find(pos) is None
                    and self._inflight.find(pos) is None
                ):
                    return op.error
                continue
            if self._resizing is not None:
                await self._resizing.wait()
                continue
            limit = self._gap_limit(pos)
            if pos >= limit:
                return None  # past EOF now (a concurrent truncate): nothing to fill
            fill_end = min(limit, max(gap[1], min(window_end, limit)))
            need = fill_end - pos
            if not svc.reserve_nowait(need) and not await svc.wait_for_room(need):
                # Pinned pages must live in the pool: go over budget rather than fail.
                pass
            if (
                self._inflight.find(pos) is not None
                or self._cache.find(pos) is not None
                or self._resizing is not None
            ):
                continue
            # Re-checked after the wait: a truncate may have moved EOF below pos meanwhile.
            fill_end = min(fill_end, self._gap_limit(pos))
            if fill_end <= pos:
                return None
            op = self._start_fill(pos, fill_end, speculative=False)
            if op is None:
                raise CacheError(f"the pool cannot allocate {fill_end - pos} bytes")
            svc.counters.cache_misses += 1
            await self._run_fill(op)
            if op.error is not None and self._cache.find(pos) is None:
                return op.error

    # ------------------------------------------------------------------------------------------
    # Writes
    # ------------------------------------------------------------------------------------------

    async def write(self, offset: int, data: Any) -> int:
        """Write ``data`` at ``offset``; return ``len(data)`` or raise.

        Cached pages are copied into and marked dirty. Uncached ranges are written through to
        the backing (the seed's policy), or, in write-back mode, cached without a
        read-modify-write when whole pages or bytes past EOF are covered (a partial page inside
        the file is filled first). The data is applied in file order; a failure stops there, and
        the inode's size and contents then reflect exactly the prefix that was applied.

        Hot path: a write that needs no I/O (its bytes land in one cached segment, or in
        write-back mode in fresh pages at or past EOF) while no other writer holds the inode, no
        I/O is in flight over its range and dirty bytes are under the limit, completes in one
        synchronous section without taking ``_attr_lock``, like a cache hit.

        Checkpoint: always, except on the hot path, which checkpoints on every
        ``hit_yield_every``-th hit or synchronous write in the store.
        Cancellation: like a failure, a prefix of ``data`` may have been applied (size included);
        a write-through request already sent completes first (shielded).
        Requires: no inode lock held (takes _attr_lock).
        Complexity: O(k + log n) per piece; k pages touched, n cached ranges.

        Raises:
            ValueError: negative offset, or the end would pass the largest offset.
            TypeError: ``data`` is not a bytes-like object.
            BackingError: a write-through failed (the prefix before it is applied).
            ClosedError: the inode was released.
        """
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        src = memoryview(data)
        if src.ndim != 1 or src.itemsize != 1:
            src = src.cast("B")
        n = len(src)
        if offset + n > MAX_OFFSET:
            raise ValueError("write would pass the largest file offset")
        self._check_open()
        if n == 0:
            await anyio.lowlevel.checkpoint()
            return 0
        svc = self._svc
        # Fast path: no writer, no I/O in flight on this inode, dirty data under the limit, and
        # the bytes land in cached pages or in fresh pages past EOF (write-back mode). Then the
        # whole write is one synchronous section: atomic, no lock needed, as cheap as a hit.
        if (
            (not self._inflight or self._idle(offset, offset + n))
            and not self._attr_lock.locked()
            and svc.dirty_bytes <= svc.dirty_limit
            and self._write_nowait(offset, src, n)
        ):
            svc.counters.written_bytes += n
            if svc.dirty_bytes > svc.dirty_background:
                svc.wake_flusher()
            svc.hit_credit -= 1
            if svc.hit_credit <= 0:
                svc.hit_credit = svc.hit_yield_every
                await anyio.lowlevel.checkpoint()
            return n
        await svc.balance_dirty()
        async with self._attr_lock:
            self._check_open()
            now = svc.clock()
            self._set_times_locked(mtime=now, ctime=now)
            pos = offset
            end = offset + n
            try:
                while pos < end:
                    pos = await self._write_step(pos, end, src, offset)
            finally:
                self._after_write_locked(offset, pos)
            svc.counters.written_bytes += n
        if svc.over_background_dirty():
            svc.wake_flusher()
        return n

    def _idle(self, start: int, end: int) -> bool:
        """Whether no I/O is in flight over ``[start, end)``. Complexity: O(log n)."""
        return next(iter(self._inflight.overlapping(start, end)), None) is None

    def _write_nowait(self, offset: int, src: memoryview, n: int) -> bool:
        """Apply a write synchronously if it needs no I/O; False (nothing changed) otherwise.

        Two cases: the range lies in one cached segment, or (write-back mode) it starts on a
        page boundary at or past EOF, where pages are known to be uncached (invariant: no page
        cached past pgend(size)) and need no fill; they come from the append reservation.
        Complexity: O(log n) plus the copy.
        """
        end = offset + n
        if offset >= self._size and not offset & PAGE_MASK and self._svc.write_back:
            view = self._append_pages(offset, end)
            if view is None:
                return False
            view[:n] = src
            tail = len(view) - n
            if tail:
                view[n:] = bytes(tail)
            if not self._cache.append(offset, offset + len(view), self._append_last):
                self._cache.insert(offset, offset + len(view), self._append_last)
            if not self._dirty.append(offset, end, False):
                self._dirty.mark_dirty(offset, end)
        else:
            hit = self._hit
            if hit is None or offset < hit[0] or end > hit[1]:
                hit = self._lookup_hit(offset)
            if hit is None or end > hit[1]:
                return False
            base = hit[3] - hit[0]
            hit[2][base + offset : base + end] = src
            self._dirty.mark_dirty(offset, end)
        if end > self._size:
            self._size = end
            self._dirty_attr |= _SIZE
        self._pending_mc = self._svc.clock()
        self._dirty_attr |= _MCTIME
        if end > self._pending_usage and end > self._attrs.usage:
            self._pending_usage = end
            self._dirty_attr |= _USAGE
        if self._attrs.mode & (S_ISUID | S_ISGID):
            self._after_write_locked(offset, end)
        self._report()
        return True

    def _append_pages(self, offset: int, end: int) -> memoryview | None:
        """Pool pages for ``[offset, pgend(end))`` from the append reservation.

        The reservation is refilled with one allocation of at least ``APPEND_RESERVE``.
        Returns None when the pool has no room. Sets ``_append_last`` to the pages' pool offset.
        """
        need = page_round_up(end) - offset
        svc = self._svc
        pool = svc.pool
        res = self._append
        if res is None or res[1] < need:
            self._release_append()
            want = max(need, APPEND_RESERVE)
            if not svc.reserve_nowait(want):
                return None
            try:
                extents = pool.allocate(want)
            except CacheError:
                return None
            for off, length in extents[1:]:
                pool.free(off, length)
            res = extents[0]
            if res[1] < need:
                pool.free(res[0], res[1])
                return None
        pool_off, left = res
        self._append = (pool_off + need, left - need) if left > need else None
        self._append_last = pool_off
        return pool.view(pool_off, need)

    def _release_append(self) -> None:
        """Give the append reservation back to the pool."""
        res = self._append
        if res is not None:
            self._append = None
            self._svc.pool.free(res[0], res[1])

    async def _write_step(self, pos: int, end: int, src: memoryview, base: int) -> int:
        """Apply the piece of the write at ``pos``; return the new position. Checkpoint: maybe."""
        op = self._op_at(pos)
        if op is not None:
            await op.event.wait()
            return pos
        svc = self._svc
        seg = self._cache.find(pos)
        if seg is not None:
            s, e, fr = seg
            stop = min(e, end)
            nxt = self._inflight.next_segment_start(pos)
            if nxt is not None and nxt < stop:
                stop = nxt
            svc.pool.view(fr + pos - s, stop - pos)[:] = src[pos - base : stop - base]
            self._dirty.mark_dirty(pos, stop)
            self._grow_locked(stop)
            self._report()
            return stop
        gap_end = min(end, self._gap_limit_any(pos))
        if svc.write_back:
            new = await self._write_back_gap(pos, gap_end, src, base)
            if new is not None:
                return new
            # Waiting for room let others run: a fill may have started in the gap since.
            if self._op_at(pos) is not None or self._cache.find(pos) is not None:
                return pos
            gap_end = min(end, self._gap_limit_any(pos))
        return await self._write_through(pos, gap_end, src, base)

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

    async def _write_back_gap(self, pos: int, end: int, src: memoryview, base: int) -> int | None:
        """Write-back mode: cache ``[pos, end)`` (a gap) as dirty pages without a backing write.

        Returns the new position, or None to fall back to write-through (no room in the pool).
        A partial first or last page that lies inside the file is filled from the backing
        first (the caller re-scans and then copies into the now cached page).
        """
        size = self._size
        head = page_round_down(pos)
        if pos & PAGE_MASK and head < size:
            await self._fill_page_locked(head)
            return pos
        # The last page is partial and inside the file (and not the head page: that case
        # returned above, since a head page inside the file is filled first).
        tail = page_round_down(end)
        if end & PAGE_MASK and tail < size:
            await self._fill_page_locked(tail)
            return pos
        start = head
        stop = page_round_up(end)
        svc = self._svc
        if not svc.reserve_nowait(stop - start) and not await svc.wait_for_room(stop - start):
            return None
        if self._inflight.find(pos) is not None or self._cache.find(pos) is not None:
            return pos  # the wait changed the picture: re-scan
        stop = min(stop, page_round_up(self._gap_limit_any(pos)))
        end = min(end, stop)
        try:
            extents = svc.pool.allocate(stop - start)
        except CacheError:
            return None
        pool = svc.pool
        at = start
        for off, length in extents:
            v = pool.view(off, length)
            lo = max(at, pos)
            hi = min(at + length, end)
            if lo > at:
                v[: lo - at] = bytes(lo - at)
            if hi > lo:
                v[lo - at : hi - at] = src[lo - base : hi - base]
            if at + length > hi:
                z = max(hi, at)
                v[z - at :] = bytes(at + length - z)
            self._cache.insert(at, at + length, off)
            at += length
        self._dirty.mark_dirty(pos, end)
        self._grow_locked(end)
        self._report()
        return end

    async def _fill_page_locked(self, page: int) -> None:
        """Fill one page inside the file before a partial write-back-mode write to it."""
        err = await self._ensure_cached(page, page + PAGE_SIZE, page + PAGE_SIZE)
        if err is not None:
            raise BackingError(f"read-modify-write fill at {page} failed: {err}") from err

    async def _write_through(self, pos: int, end: int, src: memoryview, base: int) -> int:
        """Write ``[pos, end)`` (a cache gap) straight to the backing under a WRITE op.

        The op covers the whole pages the bytes touch, so every in-flight op is page-granular:
        a fill next to it then stops at a page boundary and can never overlap it. Those pages
        are uncached (the cache is page-granular and ``pos`` lies in a gap).
        """
        op = _Op(_WRITE, page_round_down(pos), page_round_up(end))
        self._inflight.insert(op.start, op.end, op)
        done = 0
        try:
            # A request already sent must be accounted for: shield it, so the inode's size
            # and contents match what reached the backing.
            with anyio.CancelScope(shield=True):
                while pos + done < end:
                    chunk = src[pos + done - base : end - base]
                    try:
                        got = await self._backing_write(pos + done, [chunk])
                    except Exception as exc:
                        raise BackingError(f"write-through at {pos + done} failed: {exc}") from exc
                    if got <= 0:
                        raise BackingError(
                            f"write-through at {pos + done} made no progress"
                        ) from OSError(errno.EIO, "zero-length write")
                    done += got
                    self._svc.counters.writethrough_bytes += got
        finally:
            self._inflight.remove(op.start, op.end)
            op.event.set()
            if done:
                self._grow_locked(pos + done)
        await anyio.lowlevel.checkpoint()
        return pos + done

    def _grow_locked(self, end: int) -> None:
        """Extend the size to ``end`` after data landed there. Requires: _attr_lock held."""
        if end > self._size:
            self._size = end
            self._dirty_attr |= _SIZE

    def _after_write_locked(self, offset: int, pos: int) -> None:
        """The seed's maybeUpdateAttrs. Requires: _attr_lock held."""
        if pos > self._pending_usage and pos > self._attrs.usage:
            self._pending_usage = pos
            self._dirty_attr |= _USAGE
        mode = self._attrs.mode
        if pos > offset and mode & (S_ISUID | S_ISGID):
            new = _kill_suid(mode)
            if new != mode:
                self._attrs = self.attrs.with_(mode=new)
                self._dirty_attr |= _MODE

    # ------------------------------------------------------------------------------------------
    # Views, mappings and translation
    # ------------------------------------------------------------------------------------------

    def view(self, offset: int, length: int, *, writable: bool = False) -> _View:
        """Pin the pages of ``[offset, offset+length)`` and yield memoryviews into the pool.

        ``async with inode.view(off, n) as views:`` gives ``list[memoryview]`` that together are
        exactly the bytes ``[offset, min(offset+length, size))`` in order, zero copy. Pinned pages
        are never evicted. Writes through a writable view are dirty data; the pages stay dirty
        (kept) until the view is released, and are written back later like any dirty data.
        The views are released on exit; do not keep them.

        Checkpoint: entering and leaving, always.
        Cancellation: entering cancelled leaves nothing mapped; leaving is shielded.

        Raises:
            ValueError: negative offset or length.
        """
        if offset < 0 or length < 0:
            raise ValueError("negative offset or length")
        if offset + length > MAX_OFFSET:
            raise ValueError("view would pass the largest file offset")
        return _View(self, offset, length, writable)

    def _pin(self, pool_offset: int, length: int) -> None:
        self._pins.increment(pool_offset, pool_offset + length)

    def _unpin(self, pool_offset: int, length: int) -> None:
        released = self._pins.decrement(pool_offset, pool_offset + length)
        if not self._deferred_free or not released:
            return
        pool = self._svc.pool
        for s, e in released:
            for ds, de, _ in self._deferred_free.remove(s, e):
                pool.free(ds, de - ds)

    def _free_extent(self, pool_offset: int, length: int) -> None:
        """Return cache pages to the pool, deferring any part a live view still pins."""
        self._hit = None
        pool = self._svc.pool
        if not self._pins:
            pool.free(pool_offset, length)
            return
        end = pool_offset + length
        for s, e in self._pins._map.gaps(pool_offset, end):
            pool.free(s, e - s)
        for s, e, _count in self._pins._map.clipped(pool_offset, end):
            self._deferred_free.insert(s, e, True)

    async def add_mapping(
        self, space: MappingSpace, start: int, end: int, offset: int, writable: bool
    ) -> None:
        """Record that ``space`` maps address range ``[start, end)`` to file ``offset``.

        Mapped ranges are never evicted (the seed's MarkUnevictable of newly mapped ranges).

        Checkpoint: always. Cancellation: nothing is recorded.
        Requires: no inode lock held (takes _map_lock).

        Raises:
            ValueError: an empty or misaligned range.
        """
        ar = _aligned_range(start, end)
        _check_offset(offset)
        async with self._map_lock:
            self._check_open()
            self._maps.add_mapping(space, ar, offset, writable)
            self._report()

    async def remove_mapping(
        self, space: MappingSpace, start: int, end: int, offset: int, writable: bool
    ) -> None:
        """Forget a mapping added by :meth:`add_mapping`.

        Ranges left with no mapping may be cleaned again (AllowClean) and evicted; dirty data is
        not written back here (eviction, sync or release do that).

        Checkpoint: always. Cancellation: atomic (nothing changed, or all of it).
        Requires: no inode lock held (takes _map_lock).

        Raises:
            ValueError: the mapping is not present over the whole range.
        """
        ar = _aligned_range(start, end)
        async with self._map_lock:
            unmapped = self._maps.remove_mapping(space, ar, offset, writable)
            for r in unmapped:
                self._dirty.allow_clean(r.start, r.end)
            self._report()

    async def copy_mapping(
        self,
        space: MappingSpace,
        src_start: int,
        src_end: int,
        dst_start: int,
        dst_end: int,
        offset: int,
        writable: bool,
    ) -> None:
        """Record a copy of a mapping (mremap): the seed adds the destination, ignoring the source.

        Checkpoint: always. Cancellation: nothing is recorded.
        """
        _aligned_range(src_start, src_end)
        await self.add_mapping(space, dst_start, dst_end, offset, writable)

    async def translate(self, required: Range, optional: Range, write: bool) -> list[Translation]:
        """Fill and return the pool ranges backing ``required``, as the seed's Translate.

        As much of ``optional`` as the seed's 64 KiB window allows is filled too.

        The caller must already map the range (:meth:`add_mapping`): unmapped pages may be
        evicted and their pool ranges reused after this returns. A write translation marks the
        translated ranges kept-dirty.

        Checkpoint: always.
        Cancellation: fills already started finish or are discarded; nothing is translated.

        Raises:
            ValueError: misaligned ranges, empty ``required``, or ``optional`` not ⊇ ``required``.
            TranslateError: ``required`` lies (partly) past EOF, or a fill inside it failed;
                ``.translations`` holds what was translated.
        """
        if not (required and required.is_page_aligned() and optional.is_page_aligned()):
            raise ValueError("translate needs non-empty, page-aligned ranges")
        if not optional.is_superset_of(required):
            raise ValueError("optional must contain required")
        self._check_open()
        pgend = page_round_up(self._size)
        if required.start >= pgend:
            await anyio.lowlevel.checkpoint()
            raise TranslateError("translate past EOF", [])
        beyond_eof = required.end > pgend
        if beyond_eof:
            required = Range(required.start, pgend)
        optional = Range(optional.start, min(optional.end, pgend))
        window = _max_fill_range(required, optional)
        fill_err = await self._ensure_cached(required.start, required.end, window.end)
        await anyio.lowlevel.checkpoint()
        # Synchronous from here: the walk sees the cache exactly as the fill left it.
        out: list[Translation] = []
        pos = required.start
        while pos < required.end:
            seg = self._cache.find(pos)
            if seg is None:
                break
            s, e, fr = seg
            src_s = max(s, optional.start)
            src_e = min(e, optional.end)
            out.append(Translation(Range(src_s, src_e), fr + (src_s - s), write))
            if write and src_s < self._size:
                # Bytes past EOF in the last page are not file data: stores there are lost, as
                # with mmap, so they are never dirty (they could not be written back).
                self._dirty.keep_dirty(src_s, min(src_e, self._size))
            pos = e
        translated_end = out[-1].source.end if out else required.start
        self._report()
        if translated_end < required.end:
            if fill_err is not None:
                raise TranslateError(f"fill failed: {fill_err}", out) from fill_err
            raise TranslateError("range not cached (evicted or truncated meanwhile)", out)
        if beyond_eof:
            raise TranslateError("translate reaches past EOF", out)
        return out

    # ------------------------------------------------------------------------------------------
    # Write-back
    # ------------------------------------------------------------------------------------------

    async def write_back(self, start: int, end: int, *, max_run: int | None = None) -> int:
        """Write the dirty bytes of ``[start, end)`` below the size to the backing.

        Runs coalesced over dirty segments (each a WRITEBACK op, zero copy from the pool).
        Written parts whose keep flag is clear become clean; kept parts stay dirty.

        Checkpoint: when anything is dirty.
        Cancellation: ranges not fully written stay dirty; nothing is lost.
        Requires: _data_lock not held by this task (takes it shared).

        Raises:
            WritebackError: a write failed; its range and every later one stay dirty.
        Returns the bytes written.
        """
        if not self._dirty and not self._inflight:
            return 0
        written = 0
        svc = self._svc
        async with self._data_lock.read_locked():
            # Dirty bytes can only lie below the size (writes grow it as they dirty, truncate
            # cleans past it); drop any that a size change left behind, they are not data.
            self._dirty.keep_clean(self._size, MAX_OFFSET)
            pos = start
            # After the first pass only unkept pieces are written again: a kept piece (mapped
            # writable) stays dirty however often it is written, and two write-backs re-writing
            # it in turn, each waiting for the other's run, would never end.
            again = False
            while True:
                size = self._size
                hi = min(end, size)
                pieces = self._dirty.dirty_ranges(pos, hi) if pos < hi else []
                if again:
                    pieces = [p for p in pieces if not p[2]]
                if not pieces:
                    # Another task's write-back over the range took its pages out of the dirty
                    # set when it started: wait for it (Linux's filemap_write_and_wait waits on
                    # pages under writeback too), then look again from the start, since what
                    # it failed to write is dirty again and ours to write (or report).
                    other = self._writeback_op_in(start, hi)
                    if other is None:
                        break
                    await other.event.wait()
                    pos = start
                    again = True
                    continue
                ds, de, _keep = pieces[0]
                if max_run is not None and de - ds > max_run:
                    de = ds + max_run
                busy = next(iter(self._inflight.overlapping(ds, de)), None)
                if busy is not None:
                    await busy[2].event.wait()
                    continue
                written += await self._writeback_run(ds, de)
                pos = de
        if written:
            svc.counters.writeback_runs += 1
        return written

    def _writeback_op_in(self, start: int, end: int) -> _Op | None:
        """A WRITEBACK op in flight over ``[start, end)``, if any. Complexity: O(log n + k)."""
        if start >= end:
            return None
        for _s, _e, op in self._inflight.overlapping(start, end):
            if op.kind == _WRITEBACK:
                return op
        return None

    async def _writeback_run(self, ds: int, de: int) -> int:
        """Write one dirty run ``[ds, de)`` (all cached) under a WRITEBACK op.

        The dirty state is cleared when the run *starts*, as Linux's clear_page_dirty_for_io
        does, and put back for whatever is not written when it fails or is cancelled. Anything
        that dirties the range while the request is in flight (a writable view, whose release
        runs without the data lock) dirties it again, so nothing is ever marked clean that the
        backing did not receive. The rejected order, clearing from the dirty set when the
        request *ends*, lost a view's write made while a backing held the old bytes. Kept
        (mapped writable) pieces stay dirty throughout, as before.

        Checkpoint: yes. Cancellation: the request in flight completes (shielded), so what the
        backing took is accounted for; the unwritten rest is dirty again.
        """
        svc = self._svc
        pool = svc.pool
        views = [pool.view(fr, e - s) for s, e, fr in self._cache.clipped(ds, de)]
        # An internal bug check, not a condition a caller can handle.
        assert sum(len(v) for v in views) == de - ds, f"dirty [{ds}, {de}) is not fully cached"
        op = _Op(_WRITEBACK, ds, de)
        self._inflight.insert(ds, de, op)
        # What this run takes out of the dirty set (non-kept pieces), to put back on failure.
        taken = [(s, e) for s, e, keep in self._dirty.dirty_ranges(ds, de) if not keep]
        taken_bytes = sum(e - s for s, e in taken)
        self._dirty.mark_clean(ds, de)
        self._writeback_bytes += taken_bytes
        done = 0
        t0 = time.perf_counter()
        try:
            while views:
                try:
                    # A request already sent must be accounted for (its bytes may land).
                    with anyio.CancelScope(shield=True):
                        got = await self._backing_write(ds + done, views)
                except Exception as exc:
                    raise self._writeback_error(ds + done, exc) from exc
                if got <= 0:
                    err = OSError(errno.EIO, "backing wrote 0 bytes")
                    raise self._writeback_error(ds + done, err) from err
                done += got
                while views and got >= len(views[0]):
                    got -= len(views[0])
                    views.pop(0)
                if views and got:
                    views[0] = views[0][got:]
                await anyio.lowlevel.checkpoint()
        finally:
            self._inflight.remove(ds, de)
            op.event.set()
            self._writeback_bytes -= taken_bytes
            unwritten = ds + done
            for s, e in taken:
                if e > unwritten:
                    self._dirty.mark_dirty(max(s, unwritten), e)
            if done:
                svc.counters.writeback_bytes += done
                svc.observe_writeback(time.perf_counter() - t0)
            self._report()
        return done

    def _writeback_error(self, at: int, exc: BaseException) -> WritebackError:
        self._svc.counters.writeback_errors += 1
        # Raised from inside the run, before it puts its unwritten part back: name that too.
        still = [Range(s, e) for s, e, _k in self._dirty.segments()]
        if not still or still[-1].end < at:
            still.append(Range(at, max(at + 1, self._op_end_at(at))))
        return WritebackError(f"write-back at offset {at} failed: {exc}", still)

    def _op_end_at(self, pos: int) -> int:
        seg = self._inflight.find(pos)
        return pos if seg is None else seg[1]

    async def write_out(self) -> None:
        """Write back dirty data and attributes, then sync the backing (the seed's WriteOut).

        After it returns, the backing holds exactly what reads return, and only kept-dirty
        ranges (mapped writable) remain dirty.

        Checkpoint: always.
        Cancellation: ranges not yet written stay dirty and the attribute mask stays set.
        Requires: no inode lock held (takes _attr_lock; the sync runs with no lock held).

        Raises:
            WritebackError: data could not be written; it stays dirty and cached.
            BackingError: the attributes or the sync failed (the mask stays dirty).
        """
        async with self._attr_lock:
            self._check_open()
            await self._write_dirty_pages_and_attrs_locked()
        try:
            await self._backing_call("sync", self._backing.sync())
        except Exception as exc:
            raise BackingError(f"sync failed: {exc}") from exc

    async def _write_dirty_pages_and_attrs_locked(self) -> None:
        """Requires: _attr_lock held."""
        await self.write_back(0, MAX_OFFSET)
        if self._dirty_attr:
            mask = AttrMask(self._dirty_attr)
            try:
                await self._backing_call(
                    "set_attributes", self._backing.set_attributes(mask, self.attrs, False)
                )
            except Exception as exc:
                raise BackingError(f"writing attributes {mask} failed: {exc}") from exc
            # Only what was sent is clean: a touch during the await stays dirty.
            # Nothing can touch the mask meanwhile: _attr_lock is held (and the write fast
            # path stands aside while it is).
            self._dirty_attr &= ~mask.value

    # ------------------------------------------------------------------------------------------
    # Attributes
    # ------------------------------------------------------------------------------------------

    def _set_times_locked(
        self, *, atime: int | None = None, mtime: int | None = None, ctime: int | None = None
    ) -> None:
        """Set the named times in the cache and mark them dirty. Requires: _attr_lock held."""
        if atime is None and mtime is not None and mtime == ctime:
            # A write's touch: kept pending (see _pending_mc), applied on the next read.
            self._pending_mc = mtime
            self._dirty_attr |= _MCTIME
            return
        changes: dict[str, int] = {}
        if atime is not None:
            changes["atime"] = atime
            self._dirty_attr |= _ATIME
        if mtime is not None:
            changes["mtime"] = mtime
            self._dirty_attr |= _MTIME
        if ctime is not None:
            changes["ctime"] = ctime
            self._dirty_attr |= _CTIME
        self._attrs = self.attrs.with_(**changes)

    async def _set_through_locked(self, mask: AttrMask, attrs: Attrs, force: bool) -> None:
        """Write ``mask`` of ``attrs`` to the backing, shielded so the cache can follow it.

        Requires: _attr_lock held.
        """
        with anyio.CancelScope(shield=True):
            await self._backing_call(
                "set_attributes", self._backing.set_attributes(mask, attrs, force)
            )

    async def set_permissions(self, mode: int) -> bool:
        """Set the permission bits; ``False`` if the backing refused (the seed's contract).

        Checkpoint: always. Cancellation: once the backing call starts it completes (shielded).

        Raises:
            ValueError: ``mode`` is not a permission mask.
        """
        if not isinstance(mode, int) or not 0 <= mode <= 0o7777:
            raise ValueError(f"mode {mode!r} is not a permission mask")
        async with self._attr_lock:
            self._check_open()
            try:
                await self._set_through_locked(AttrMask.MODE, self.attrs.with_(mode=mode), False)
            except Exception:
                return False
            self._attrs = self.attrs.with_(mode=mode)
            self._set_times_locked(ctime=self._svc.clock())
            return True

    async def set_owner(self, uid: int | None = None, gid: int | None = None) -> None:
        """Set the owner and/or group; with neither, do nothing.

        Checkpoint: always. Cancellation: once the backing call starts it completes (shielded).

        Raises:
            ValueError: a negative id.
            BackingError: the backing refused (nothing changed).
        """
        for v in (uid, gid):
            if v is not None and (not isinstance(v, int) or v < 0):
                raise ValueError(f"invalid id {v!r}")
        if uid is None and gid is None:
            await anyio.lowlevel.checkpoint()
            return
        async with self._attr_lock:
            self._check_open()
            mask = AttrMask.NONE
            changes: dict[str, int] = {}
            if uid is not None:
                mask |= AttrMask.UID
                changes["uid"] = uid
            if gid is not None:
                mask |= AttrMask.GID
                changes["gid"] = gid
            try:
                await self._set_through_locked(mask, self.attrs.with_(**changes), False)
            except Exception as exc:
                raise BackingError(f"set_owner failed: {exc}") from exc
            self._attrs = self.attrs.with_(**changes)
            self._set_times_locked(ctime=self._svc.clock())

    async def set_timestamps(self, atime: TimeSpec, mtime: TimeSpec) -> None:
        """Set atime and/or mtime (written through, forced); both omitted does nothing.

        An explicitly set time is clean afterwards (its dirty bit is cleared: the seed left it).

        Checkpoint: always. Cancellation: once the backing call starts it completes (shielded).

        Raises:
            TypeError: an argument is not a TimeSpec.
            BackingError: the backing refused (nothing changed).
        """
        if not isinstance(atime, TimeSpec) or not isinstance(mtime, TimeSpec):
            raise TypeError("set_timestamps takes TimeSpec values")
        if atime.omitted and mtime.omitted:
            await anyio.lowlevel.checkpoint()
            return
        async with self._attr_lock:
            self._check_open()
            clock = self._svc.clock
            now = clock()
            mask = AttrMask.NONE
            changes: dict[str, int] = {}
            if not atime.omitted:
                mask |= AttrMask.ATIME
                changes["atime"] = now if atime.use_now else atime.resolve(clock)
            if not mtime.omitted:
                mask |= AttrMask.MTIME
                changes["mtime"] = now if mtime.use_now else mtime.resolve(clock)
            try:
                await self._set_through_locked(mask, self.attrs.with_(**changes), True)
            except Exception as exc:
                raise BackingError(f"set_timestamps failed: {exc}") from exc
            self._attrs = self.attrs.with_(**changes)
            self._dirty_attr &= ~mask.value
            self._set_times_locked(ctime=now)

    async def inc_links(self) -> None:
        """Add a link; ctime is touched (as Linux does; the seed also touched mtime).

        Links are not dirty-tracked: the backing is authoritative for them.
        Checkpoint: always. Cancellation: atomic.
        """
        async with self._attr_lock:
            self._check_open()
            self._attrs = self.attrs.with_(links=self._attrs.links + 1)
            self._set_times_locked(ctime=self._svc.clock())

    async def dec_links(self) -> None:
        """Drop a link; ctime is touched. Checkpoint: always. Cancellation: atomic.

        Raises:
            ValueError: the link count is already 0.
        """
        async with self._attr_lock:
            self._check_open()
            if self._attrs.links == 0:
                raise ValueError("link count is already 0")
            self._attrs = self.attrs.with_(links=self._attrs.links - 1)
            self._set_times_locked(ctime=self._svc.clock())

    async def touch_access_time(self) -> None:
        """Set atime to now (dirty). Checkpoint: always. Cancellation: atomic."""
        async with self._attr_lock:
            self._check_open()
            if not self._svc.noatime:
                self._set_times_locked(atime=self._svc.clock())

    async def touch_modification_and_status_change_time(self) -> None:
        """Set mtime and ctime to now (dirty). Checkpoint: always. Cancellation: atomic."""
        async with self._attr_lock:
            self._check_open()
            now = self._svc.clock()
            self._set_times_locked(mtime=now, ctime=now)

    async def truncate(self, size: int) -> None:
        """Set the file size (the seed's three-phase Truncate).

        The backing gets the size first (with setuid/setgid dropped, as Linux does; the cached
        mode follows only if the backing accepted it). Shrinking then invalidates mappings past
        the new end, drops those pages, zeroes the tail of the last partial page and discards
        dirty data past the end without writing it back. Growing leaves the cache alone.

        Checkpoint: always.
        Cancellation: if cancelled before the backing call, nothing changed; from the backing
        call on, the truncate completes (shielded).
        Requires: no inode lock held (takes _attr_lock, then _map_lock and _data_lock).

        Raises:
            ValueError: a negative size or one past the largest offset.
            BackingError: the backing refused (size, mode and times unchanged).
        """
        if not isinstance(size, int) or size < 0 or size > MAX_OFFSET:
            raise ValueError(f"invalid size {size!r}")
        async with self._attr_lock:
            self._check_open()
            if size >= self._size:
                await self._truncate_locked(size)
                return
            # Shrinking: from before the backing call until the cache is cut, fills may see the
            # backing's new EOF while the cached size is the old one (see _resizing).
            resizing = self._resizing = anyio.Event()
            for _s, _e, op in self._inflight.overlapping(0, MAX_OFFSET):
                if op.kind == _FILL:
                    op.invalid = True
            try:
                await self._truncate_locked(size)
            finally:
                self._resizing = None
                resizing.set()

    async def _truncate_locked(self, size: int) -> None:
        """The body of :meth:`truncate`. Requires: _attr_lock held."""
        async with self._data_lock.write_locked():
            with anyio.CancelScope(shield=True):
                a = self.attrs
                mask = AttrMask.SIZE
                new_mode = _kill_suid(a.mode)
                if new_mode != a.mode:
                    mask |= AttrMask.MODE
                try:
                    await self._set_through_locked(mask, a.with_(size=size, mode=new_mode), False)
                except Exception as exc:
                    raise BackingError(f"truncate to {size} failed: {exc}") from exc
                old = self._size
                self._size = size
                self._dirty_attr &= ~_SIZE
                self._attrs = self.attrs.with_(size=size, mode=new_mode)
                now = self._svc.clock()
                self._set_times_locked(mtime=now, ctime=now)
                if size < old:
                    for _s, _e, op in self._inflight.overlapping(size, MAX_OFFSET):
                        op.invalid = True
        if size >= old:
            return
        with anyio.CancelScope(shield=True):
            new_end, old_end = page_round_up(size), page_round_up(old)
            if new_end != old_end:
                async with self._map_lock:
                    self._maps.invalidate(Range(new_end, old_end), True)
            async with self._data_lock.write_locked():
                self._truncate_cache_locked(size, old_end)

    def _truncate_cache_locked(self, size: int, old_end: int) -> None:
        """Drop pages past ``size``, zero its partial page, discard dirty data past it.

        Requires: _data_lock held exclusively.
        """
        self._release_append()
        new_end = page_round_up(size)
        freed = self._cache.truncate_pages(new_end)
        dropped = sum(length for _o, length in freed)
        for off, length in freed:
            self._free_extent(off, length)
        if size & PAGE_MASK:
            seg = self._cache.find(size)
            if seg is not None:
                s, _e, fr = seg
                self._svc.pool.fill_zero(fr + size - s, new_end - size)
        self._dirty.keep_clean(size, max(old_end, size))
        self._count_dropped(new_end, MAX_OFFSET, dropped, "truncate")
        self._report()

    async def allocate(self, offset: int, length: int) -> None:
        """Reserve backing storage for ``[offset, offset+length)``, growing the file if needed.

        A range inside the file is a no-op (the seed's); the backing is not called.
        Checkpoint: always. Cancellation: once the backing call starts it completes (shielded).

        Raises:
            ValueError: negative values, zero length, or an end past the largest offset.
            BackingError: the backing refused (nothing changed).
        """
        if offset < 0 or length <= 0 or offset + length > MAX_OFFSET:
            raise ValueError(f"invalid allocation [{offset}, +{length})")
        async with self._attr_lock:
            self._check_open()
            if offset + length <= self._size:
                await anyio.lowlevel.checkpoint()
                return
            async with self._data_lock.write_locked():
                with anyio.CancelScope(shield=True):
                    try:
                        await self._backing_call("allocate", self._backing.allocate(offset, length))
                    except Exception as exc:
                        raise BackingError(f"allocate failed: {exc}") from exc
                    self._size = max(self._size, offset + length)
                    now = self._svc.clock()
                    self._set_times_locked(mtime=now, ctime=now)

    async def revalidate(self) -> bool:
        """Ask the backing whether its file changed behind the cache, and if so follow it.

        The seed's UpdateUnstable, over the optional :class:`~aiocache_inode.backing.base.
        Revalidating` hook (a backing without it is the only writer of its file: ``False``).
        When the file changed, every mapping is invalidated, fills in flight are discarded, the
        clean cached pages are dropped (counted as evicted, reason ``revalidate``) and the
        attributes are re-read from the backing, size included; attributes changed here and not
        yet written out keep their local values. Dirty pages are a conflict: they stay cached
        and dirty, neither overwritten by the new version nor dropped, the size stays at least
        their end, and :class:`ConflictError` names them (``write_out`` then puts them over the
        new version). A partly dirty page is kept whole: its clean bytes, from the old version,
        become dirty too (the ranges named are page-aligned, clipped to the size).

        Checkpoint: always.
        Cancellation: before the backing is asked, nothing changed; from then on the
        revalidation completes (shielded), as a truncate does.
        Requires: no inode lock held (takes _attr_lock, _map_lock, then _data_lock exclusively,
        and asks the backing under all three: no write or write-back can land between its
        answer and the drop, so the dirty set tested is exactly what the new version lacks).

        Returns:
            Whether the backing's file changed.

        Raises:
            ClosedError: the inode was released.
            ConflictError: it changed while dirty pages were cached (they are kept, unsaved).
            BackingError: the backing could not tell, or would not move to the new version
                (S3Object holding written-back, unsynced data: ``ObjectChangedError`` is the
                cause); nothing changed. Also when it changed but its attributes could not be
                read: the clean pages are dropped, the cached attributes stay.
        """
        self._check_open()
        backing = self._backing
        if not isinstance(backing, Revalidating):
            await anyio.lowlevel.checkpoint()
            return False
        async with self._attr_lock, self._map_lock:
            self._check_open()
            async with self._data_lock.write_locked():
                with anyio.CancelScope(shield=True):
                    try:
                        changed = await self._backing_call("refresh", backing.refresh())
                    except Exception as exc:
                        raise BackingError(f"revalidation failed: {exc}") from exc
                    if not changed:
                        return False
                    fresh: Attrs | None = None
                    failure: Exception | None = None
                    try:
                        fresh = await self._backing_call("get_attributes", backing.get_attributes())
                    except Exception as exc:
                        failure = exc
                    self._maps.invalidate_all(False)
                    self._follow_change_locked(fresh)
        if failure is not None:
            raise BackingError(
                f"the file changed; reading its attributes failed: {failure}"
            ) from failure
        if self._dirty:
            ranges = self.dirty_ranges()
            raise ConflictError(
                f"the file changed behind the cache with {self._dirty.total()} bytes dirty in"
                f" {len(ranges)} ranges; they are kept",
                ranges,
            )
        return True

    def _follow_change_locked(self, fresh: Attrs | None) -> None:
        """Drop the clean pages of a changed file and adopt ``fresh`` attributes (if known).

        Requires: _attr_lock and _map_lock held, mappings invalidated, _data_lock held
        exclusively (so no write-back is in flight: every unsaved byte is in the dirty set).
        Complexity: O(n + k); n cached segments, k dirty ones.
        """
        assert self._data_lock.writer_active
        for _s, _e, op in self._inflight.segments():
            if op.kind == _FILL:
                op.invalid = True
        self._release_append()
        # Dirty ranges are byte-granular, but a page with any dirty byte stays whole: its clean
        # bytes (from the old version) become dirty with it, so that after a write_out the
        # backing holds exactly what reads return. The rejected alternative, refilling them
        # from the new version, is I/O under the exclusive data lock for a state the caller
        # is about to resolve anyway.
        for ds, de, _keep in list(self._dirty.segments()):
            self._dirty.mark_dirty(page_round_down(ds), min(page_round_up(de), self._size))
        freed = 0
        for s, e, _fr in list(self._cache.segments()):
            for gs, ge in list(self._dirty.gaps(s, e)):
                ps, pe = page_round_up(gs), page_round_down(ge)
                if ps < pe:
                    for off, length in self._cache.drop(ps, pe):
                        self._free_extent(off, length)
                        freed += length
        if freed:
            self._count_dropped(0, MAX_OFFSET, freed, "revalidate")
        if fresh is not None:
            local = self.attrs  # applies pending write times first
            keep = {name: getattr(local, name) for bit, name in _KEPT if self._dirty_attr & bit}
            dirty_end = max((e for _s, e, _keep in self._dirty.segments()), default=0)
            size = max(fresh.size, dirty_end)
            self._attrs = fresh.with_(size=size, **keep)
            self._size = size
            self._pending_usage = 0
            self._dirty_attr &= ~(_SIZE | _USAGE)
            if size != fresh.size:
                self._dirty_attr |= _SIZE
        self._report()

    # ------------------------------------------------------------------------------------------
    # Eviction, invalidation, release
    # ------------------------------------------------------------------------------------------

    def _evictable_parts(self, start: int, end: int, *, clean_only: bool) -> list[tuple[int, int]]:
        """Cached sub-ranges of ``[start, end)`` that are unmapped, idle (and clean)."""
        out: list[tuple[int, int]] = []
        for s, e, _fr in self._cache.clipped(start, end):
            parts = [(s, e)]
            blockers: list[SegmentMap[Any]] = [self._inflight]
            if clean_only:
                blockers.append(self._dirty)
            for m in blockers:
                nxt: list[tuple[int, int]] = []
                for ps, pe in parts:
                    nxt.extend(m.gaps(ps, pe))
                parts = nxt
            if self._maps.mapped_bytes():
                nxt = []
                for ps, pe in parts:
                    nxt.extend((r.start, r.end) for r in self._maps.unmapped_ranges(ps, pe))
                parts = nxt
            # Dirty ranges and write-throughs are byte-granular: a page with any blocked byte
            # stays, so round each free piece inward to whole pages.
            for ps, pe in parts:
                ps = page_round_up(ps)
                pe = page_round_down(pe)
                if ps < pe:
                    out.append((ps, pe))
        return out

    def _drop_nowait(self, start: int, end: int, reason: str, *, clean_only: bool = True) -> int:
        """Drop the clean (or all), unmapped, idle cached pages of ``[start, end)``.

        Synchronous: safe from any task, no lock needed (one event-loop thread). Returns bytes
        freed. Complexity: O(log n + k).
        """
        self._release_append()
        freed = 0
        for s, e in self._evictable_parts(start, end, clean_only=clean_only):
            for off, length in self._cache.drop(s, e):
                self._free_extent(off, length)
                freed += length
            if not clean_only:
                self._dirty.keep_clean(s, e)
        if freed:
            self._count_dropped(start, end, freed, reason)
            self._report()
        return freed

    def _count_dropped(self, start: int, end: int, freed: int, reason: str) -> None:
        counters = self._svc.counters
        counters.evicted_bytes[reason] += freed
        if self._ra_unused:
            wasted = self._ra_unused.remove(start, end)
            for s, e, _ in wasted:
                if self._cache.covered_bytes(s, e) == 0:
                    counters.readahead_wasted_bytes += e - s
                else:
                    self._ra_unused.insert(s, e, True)

    # The Reclaimable protocol (services.py): what the store's reclaim, flusher and inode
    # table may ask of an inode.

    @property
    def inode_id(self) -> int:
        """The id this inode's policy keys carry (``chunk_key(inode_id, idx)``)."""
        return self._id

    @property
    def dirtied_at(self) -> float | None:
        """``monotonic()`` when this inode last went from clean to dirty; None while clean."""
        return self._dirtied_at

    def has_dirty_pages(self) -> bool:
        """Whether dirty pages wait for a write-back (runs in flight not counted)."""
        return bool(self._dirty)

    def chunk_cached(self, idx: int) -> bool:
        """Whether chunk ``idx`` holds any cached page. Complexity: O(1)."""
        return self._cache.chunk_cached(idx)

    def chunk_evictable(self, idx: int, *, clean_only: bool) -> bool:
        """Whether chunk ``idx`` has pages reclaim may drop (unmapped, idle, clean if asked)."""
        cs = idx << CHUNK_SHIFT
        return bool(self._evictable_parts(cs, cs + CHUNK_SIZE, clean_only=clean_only))

    def drop_chunk_nowait(self, idx: int, reason: str) -> int:
        """Drop the clean, unmapped, idle pages of chunk ``idx``; return the bytes freed.

        Synchronous: safe from any task, no lock needed (one event-loop thread).
        """
        return self._drop_nowait(idx << CHUNK_SHIFT, (idx + 1) << CHUNK_SHIFT, reason)

    def try_retire(self) -> bool:
        """Close this inode if it holds nothing worth keeping; return whether it did.

        For the store's inode table (``CacheStore._retire_if_idle``), which knows whether
        anyone holds the inode open. A caller that kept the object gets ``ClosedError``.
        Synchronous. Complexity: O(1).
        """
        if self._closed or not self._retirable():
            return False
        self._closed = True
        # The cache map's callback is the one reference cycle an inode has: break it, so the
        # object is freed at once by reference counting rather than by the cyclic collector
        # (which, with thousands of retired inodes, cost more than opening them).
        self._cache.detach()
        self._report()
        return True

    def abandon(self) -> None:
        """Close this inode without writing anything back: its store has shut down."""
        self._closed = True

    @property
    def held_bytes(self) -> int:
        """Pool bytes this inode holds (the store's pool invariant).

        Cached pages, pages being filled, pinned pages whose free is deferred, and the append
        reservation.
        """
        ops = {id(op): op for _s, _e, op in self._inflight.segments()}
        filling = sum(length for op in ops.values() for _off, length in op.extents)
        append = 0 if self._append is None else self._append[1]
        return self._cache.total() + filling + self._deferred_free.total() + append

    async def evict_chunk(self, idx: int, reason: str) -> int:
        """Write back and drop one chunk's evictable pages (the evictor's unit of work).

        Dirty data is written back first in one coalesced run around the chunk; if that fails
        the data stays dirty and cached and WritebackError propagates.
        Checkpoint: when the chunk is dirty. Cancellation: pages not dropped stay cached.
        """
        cs = idx << CHUNK_SHIFT
        ce = cs + CHUNK_SIZE
        if self._dirty.covered_bytes(cs, ce):
            runs = self._dirty.dirty_ranges(cs, ce)
            lo = runs[0][0]
            hi = runs[-1][1]
            # Extend to the whole dirty segments around the chunk, up to the run cap.
            seg = self._dirty.find(lo)
            if seg is not None:
                lo = max(seg[0], lo - self._svc.tunables.writeback_max_run // 2)
            seg = self._dirty.find(hi - 1)
            if seg is not None:
                hi = min(seg[1], hi + self._svc.tunables.writeback_max_run // 2)
            await self.write_back(lo, hi)
        return self._drop_nowait(cs, ce, reason)

    async def evict(self, start: int, end: int) -> None:
        """Write back, then drop, the unmapped cached pages of ``[start, end)``.

        The range is rounded out to pages. Mapped pages are left alone (the seed's Evict);
        unlike the seed, a failed write-back keeps the data dirty and cached and raises.

        Checkpoint: always. Cancellation: whatever was not yet dropped stays cached and dirty.

        Raises:
            ValueError: an invalid range.
            WritebackError: dirty data could not be written back (it stays).
        """
        r = Range(start, end).page_rounded_out()
        self._check_open()
        await self._writeback_unmapped(r.start, r.end)
        self._drop_nowait(r.start, r.end, "explicit")
        await anyio.lowlevel.checkpoint()

    async def _writeback_unmapped(self, start: int, end: int) -> None:
        for r in self._maps.unmapped_ranges(start, end):
            await self.write_back(r.start, r.end)

    async def shrink(self, target_bytes: int = 0) -> int:
        """Write back and drop unmapped pages until at most ``target_bytes`` stay cached.

        Returns the bytes cached after. Checkpoint: always.

        Raises:
            WritebackError: dirty data could not be written back (it stays).
        """
        self._check_open()
        for s, e in [(r.start, r.end) for r in self.cached_ranges()]:
            if self._cache.total() <= target_bytes:
                break
            await self._writeback_unmapped(s, e)
            self._drop_nowait(s, e, "shrink")
        await anyio.lowlevel.checkpoint()
        return self._cache.total()

    async def invalidate_unsavable(self) -> None:
        """Invalidate every mapping, write back all dirty data, then empty the cache.

        If the write-back fails the cache is kept (and the error raised).
        Checkpoint: always. Cancellation: the cache is either kept or emptied, never half.
        Requires: no inode lock held (takes _attr_lock, _map_lock, then _data_lock).

        Raises:
            WritebackError: dirty data could not be written back.
        """
        self._check_open()
        # _attr_lock keeps writers out from the write-back to the drop: without it a write
        # landing while the data lock is awaited would be dirtied and then dropped unwritten.
        async with self._attr_lock, self._map_lock:
            self._maps.invalidate_all(False)
            await self.write_back(0, MAX_OFFSET)
            async with self._data_lock.write_locked():
                self._drop_all_locked("invalidate")

    def _drop_all_locked(self, reason: str) -> None:
        """Empty cache and dirty set (pinned pool pages are freed when unpinned).

        Requires: _data_lock held exclusively.
        """
        for _s, _e, op in self._inflight.segments():
            op.invalid = True
        self._release_append()
        dropped = 0
        for off, length in self._cache.drop(0, MAX_OFFSET):
            self._free_extent(off, length)
            dropped += length
        self._dirty.clear()
        if dropped:
            self._count_dropped(0, MAX_OFFSET, dropped, reason)
        self._report()

    async def notify_change_fd(self) -> None:
        """The backing's host descriptor changed: re-map, then invalidate every mapping.

        Internal host mappings are re-made onto the new descriptor first. If re-mapping fails,
        old mappings stay and it raises.

        Checkpoint: always.

        Raises:
            BackingError: the new descriptor could not be mapped.
        """
        self._check_open()
        try:
            self._regenerate_host_maps()
        except OSError as exc:
            raise BackingError(f"re-mapping onto the new descriptor failed: {exc}") from exc
        async with self._map_lock:
            self._maps.invalidate_all(False)

    async def release(self) -> None:
        """Write back all dirty data, then empty the cache and close the inode.

        Unlike the seed, a write-back failure raises (the inode stays open, data kept) instead
        of panicking, and mappings still present raise instead of panicking.
        Checkpoint: always. Cancellation: the inode stays open with its data (or is released).
        Requires: no inode lock held (takes _attr_lock, _map_lock, then _data_lock; the first
        keeps writers out between the write-back and the drop).

        Raises:
            CacheError: mappings still exist.
            WritebackError: dirty data could not be written back.
        """
        if self._closed:
            await anyio.lowlevel.checkpoint()
            return
        async with self._attr_lock, self._map_lock:
            if self._maps.mapped_bytes():
                raise CacheError("release with mappings still present")
            await self.write_back(0, MAX_OFFSET)
            async with self._data_lock.write_locked():
                if self._dirty.total():
                    raise WritebackError("dirty data appeared during release", self.dirty_ranges())
                self._drop_all_locked("release")
                self._closed = True
                for mm, _w in self._host_maps.values():
                    mm.close()
                self._host_maps.clear()
                self._svc.released(self._id)

    # ------------------------------------------------------------------------------------------
    # Host-FD mode (the seed's IncRef/DecRef/MapInternal)
    # ------------------------------------------------------------------------------------------

    def inc_ref(self, r: Range) -> None:
        """Add a reference to the host-file pages of ``r`` (page-aligned).

        Pages going from 0 to 1 count as mapped. Synchronous.

        Raises:
            ValueError: a misaligned range.
        """
        if not r.is_page_aligned():
            raise ValueError("inc_ref needs a page-aligned range")
        self._host_refs.increment(r.start, r.end)

    def dec_ref(self, r: Range) -> None:
        """Drop a reference added by :meth:`inc_ref`.

        Raises:
            ValueError: a misaligned range, or a page with no reference.
        """
        if not r.is_page_aligned():
            raise ValueError("dec_ref needs a page-aligned range")
        self._host_refs.decrement(r.start, r.end)

    @property
    def host_referenced_bytes(self) -> int:
        """Bytes of host-file pages with a reference (the seed's Mapped usage in host mode)."""
        return self._host_refs.referenced_bytes()

    def map_internal(self, r: Range, write: bool) -> list[memoryview]:
        """Memoryviews of the backing's host file over ``r``, mmapped in 2 MiB chunks.

        This is the seed's hostFileMapper. A read-only chunk is upgraded when ``write`` is
        asked. The range is clipped to the file size, since touching a mapping past EOF faults.

        Raises:
            CacheError: the backing has no host descriptor.
            ValueError: an empty range.
        """
        fd = self._backing.fd()
        if fd < 0:
            raise CacheError("map_internal needs a backing with a host file descriptor")
        if not r:
            raise ValueError("map_internal needs a non-empty range")
        end = min(r.end, self._size)
        out: list[memoryview] = []
        pos = r.start
        while pos < end:
            chunk = pos // HOST_CHUNK
            base = chunk * HOST_CHUNK
            length = min(HOST_CHUNK, self._size - base)
            mm = self._host_map(fd, chunk, base, length, write)
            stop = min(end, base + length)
            out.append(memoryview(mm)[pos - base : stop - base])
            pos = stop
        return out

    def _host_map(self, fd: int, chunk: int, base: int, length: int, write: bool) -> mmap.mmap:
        have = self._host_maps.get(chunk)
        if have is not None and len(have[0]) >= length and (have[1] or not write):
            return have[0]
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if write or (have and have[1]) else 0)
        mm = mmap.mmap(fd, length, mmap.MAP_SHARED, prot, offset=base)
        if have is not None:
            # A caller may still hold a view of the old mapping: it then stays valid.
            with contextlib.suppress(BufferError):
                have[0].close()
        self._host_maps[chunk] = (mm, bool(prot & mmap.PROT_WRITE))
        return mm

    def _regenerate_host_maps(self) -> None:
        fd = self._backing.fd()
        if not self._host_maps:
            return
        if fd < 0:
            raise OSError(errno.EBADF, "the backing no longer has a host descriptor")
        new: dict[int, tuple[mmap.mmap, bool]] = {}
        try:
            for chunk, (mm, w) in self._host_maps.items():
                prot = mmap.PROT_READ | (mmap.PROT_WRITE if w else 0)
                new[chunk] = (mmap.mmap(fd, len(mm), mmap.MAP_SHARED, prot, offset=0), w)
        except OSError:
            for m, _ in new.values():
                m.close()
            raise
        for chunk, (mm, _w) in self._host_maps.items():
            with contextlib.suppress(BufferError):
                mm.close()
            del chunk
        self._host_maps = new

    # ------------------------------------------------------------------------------------------
    # Backing calls, accounting, checks
    # ------------------------------------------------------------------------------------------

    async def _backing_read(self, offset: int, views: Sequence[memoryview]) -> int:
        n: int = await self._backing_call("read", self._backing.read_into(offset, views))
        return n

    async def _backing_write(self, offset: int, views: Sequence[memoryview]) -> int:
        n: int = await self._backing_call("write", self._backing.write_from(offset, views))
        return n

    async def _backing_call(self, op: str, coro: Any) -> Any:
        """Await one backing request, counted and timed by the store."""
        return await self._svc.backing_call(op, coro)

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
            or self._host_refs
            or self._host_maps
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
            if op.kind == _WRITEBACK:
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
        assert self._reported_cached == self._cache.total()
        assert self._reported_dirty == self._dirty.total() + self._writeback_bytes
        running = sum(
            op.end - op.start for _s, _e, op in self._inflight.segments() if op.kind == _WRITEBACK
        )
        assert self._writeback_bytes <= running, "write-back bytes with no run in flight"


def _kill_suid(mode: int) -> int:
    """Drop setuid, and setgid when group-execute is set (Linux's should_remove_suid)."""
    mode &= ~S_ISUID
    if mode & S_ISGID and mode & S_IXGRP:
        mode &= ~S_ISGID
    return mode


def _aligned_range(start: int, end: int) -> Range:
    r = Range(start, end)
    if not r or not r.is_page_aligned():
        raise ValueError(f"mapping range [{start}, {end}) must be non-empty and page-aligned")
    return r


def _check_offset(offset: int) -> None:
    if offset < 0 or offset & PAGE_MASK:
        raise ValueError(f"mapping offset {offset} must be page-aligned and non-negative")
