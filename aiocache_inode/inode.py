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

``CachingInode`` is the table of contents: its public operations, the hit and write fast paths
(plain slots of ``self``, no call into a part), and the ``Reclaimable`` protocol the store uses
(``services.py``). The work is done by parts, each named after its concern (``parts/``): the
shared fields and the in-flight table in ``core``; ``fills`` (read misses, readahead),
``writes``, ``runs`` (write-back), ``views`` (mappings, pins, translate), ``attributes`` (setters,
truncate, allocate, revalidate), ``drops`` (eviction, invalidation, release) and ``hostmap``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

import anyio
import anyio.lowlevel

from .attrs import AttrMask
from .backing.metered import MeteredBacking
from .chunks import CHUNK_SHIFT, CHUNK_SIZE
from .errors import BackingError, ClosedError, WouldBlock
from .parts.attributes import Attributes
from .parts.core import InodeCore
from .parts.drops import Drops
from .parts.fills import Fills
from .parts.runs import WritebackRuns
from .parts.views import TranslateError, Translation, View, Views
from .parts.writes import Writes
from .ranges import MAX_OFFSET, Range
from .stats import InodeStatistics

if TYPE_CHECKING:
    from .attrs import Attrs, TimeSpec
    from .backing.base import BackingFile
    from .mappings import MappingSpace
    from .services import StoreServices

__all__ = ["CachingInode", "TranslateError", "Translation"]


@final
class CachingInode(InodeCore):
    """Attributes and byte ranges of one backing file, cached in a :class:`CacheStore` pool.

    Get one from ``store.open(key, backing)``; the constructor is internal.

    Invariants (checked by :meth:`_check_invariants`):
        dirty ⊆ cached (by offset); no cached page starts at or past page_round_up(size);
        keep-dirty ranges ⊆ mapped ranges; policy keys of this inode == chunks with cached pages;
        in-flight ops are pairwise disjoint; FILL and WRITE ops lie in cache gaps, WRITEBACK ops
        inside cached pages.
    """

    __slots__ = ("_attr_ops", "_drops", "_fills", "_runs", "_views", "_writes")

    def __init__(
        self,
        services: StoreServices,
        key: object,
        inode_id: int,
        backing: BackingFile,
        attrs: Attrs,
    ) -> None:
        super().__init__(services, key, inode_id, backing, attrs)
        # The parts, each named after its concern; they share the core's fields and keep their
        # own state. Immutable after __init__.
        self._fills = Fills(self)
        self._writes = Writes(self, self._fills)
        self._runs = WritebackRuns(self)
        self._views = Views(self, self._fills)
        self._attr_ops = Attributes(self)
        self._drops = Drops(self, self._runs)

    # ------------------------------------------------------------------------------------------
    # Observable state
    # ------------------------------------------------------------------------------------------

    @property
    def key(self) -> object:
        """The key this inode is stored under."""
        return self._key

    @property
    def dirty_attrs(self) -> AttrMask:
        """Attributes changed locally and not yet written out."""
        return AttrMask(self._dirty_attr)

    @property
    def size(self) -> int:
        """The file size as cached."""
        return self._size

    @property
    def attributes_stale(self) -> bool:
        """Whether the backing reported a change that :meth:`revalidate` could not follow yet.

        Set when the attribute read (or a kept page's tail read) after a successful refresh
        failed; the next :meth:`revalidate` follows the change even though the backing does not
        report it again, and clears it.
        """
        return self._attr_ops.stale

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
        """The backing file it was opened with (not the store's meter around it)."""
        b = self._backing
        return b.inner if isinstance(b, MeteredBacking) else b

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
            # Readahead: a sequential run only moves _ra_next (used readahead is counted
            # lazily); crossing the trigger tops the window up; a jump ends the stream.
            if offset == self._ra_next:
                self._ra_next = end
                if end >= self._ra_trigger:
                    self._fills.readahead_async(n)
            elif self._ra_trigger != MAX_OFFSET or self._ra_unused:
                self._fills.jump(offset, end)
            else:
                self._ra_next = end
            svc.hit_credit -= 1
            if svc.hit_credit <= 0:
                svc.hit_credit = svc.hit_yield_every
                await anyio.lowlevel.checkpoint()
            return n
        return await self._fills.read_slow(offset, end, mv)

    def prefetch(self, offset: int, length: int) -> int:
        """Read ``[offset, offset + length)`` ahead, for a reader about to read it in order.

        ``posix_fadvise(POSIX_FADV_WILLNEED)`` for a sequential reader. For a caller that
        knows how far it will read, such as a server answering a ranged GET: the readahead
        window covers the whole range at once instead of growing into it over several round
        trips. It is ordinary readahead otherwise: requests of ``readahead_request`` bytes,
        bounded by this inode's fair share of ``readahead_cap`` (what does not fit is issued
        as the reader consumes, the window growing as usual up to the end of the range),
        never waiting for memory nor evicting readahead no one has read, and counted as
        readahead (used or wasted) in the statistics. A range starting elsewhere than where
        the last read ended starts a new sequential stream at ``offset`` (a read there
        continues it, a read elsewhere ends it), and nothing is issued past the range until a
        read goes beyond it. A range continuing where the last read ended (consecutive ranged
        GETs of one object) extends the running stream instead, which reads on past the range
        as usual. Cached and in-flight parts are skipped. With readahead off
        (``readahead_max=0``) it does nothing.

        Synchronous (no checkpoint): it reserves pages and starts background fills. A fill
        that fails caches nothing; the read that needs those bytes asks the backing again.
        Returns the bytes of readahead it issued now.

        Raises:
            ValueError: negative offset or length.
            ClosedError: the inode was released.
        """
        if self._closed:
            raise ClosedError("inode released")
        if offset < 0 or length < 0:
            raise ValueError(
                f"prefetch needs a non-negative offset and length, not {offset}, {length}"
            )
        if offset + length > MAX_OFFSET:
            raise ValueError("prefetch range passes the largest file offset")
        return self._fills.prefetch(offset, offset + length)

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
        self._fills.after_hit(offset, end)
        return bytes(buf)

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
        if self._closed:
            raise ClosedError("inode released")
        if n == 0:
            await anyio.lowlevel.checkpoint()
            return 0
        svc = self._svc
        # Fast path: no writer, no I/O in flight on this inode, dirty data under the limit, and
        # the bytes land in cached pages or in fresh pages past EOF (write-back mode). Then the
        # whole write is one synchronous section: atomic, no lock needed, as cheap as a hit.
        # (intersects answers an append past every op in flight, the flusher's write-backs of
        # earlier pages, in O(1).)
        if (
            not self._inflight.intersects(offset, offset + n)
            and not self._attr_lock.locked()
            and svc.dirty_bytes <= svc.dirty_limit
            and self._writes.write_nowait(offset, src, n)
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
                    pos = await self._writes.write_step(pos, end, src, offset)
            finally:
                self._after_write_locked(offset, pos)
            svc.counters.written_bytes += n
        if svc.over_background_dirty():
            svc.wake_flusher()
        return n

    # ------------------------------------------------------------------------------------------
    # Views, mappings and translation
    # ------------------------------------------------------------------------------------------

    def view(self, offset: int, length: int, *, writable: bool = False) -> View:
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
        return View(self, self._views, offset, length, writable)

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
        await self._views.add_mapping(space, start, end, offset, writable)

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
        await self._views.remove_mapping(space, start, end, offset, writable)

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
        await self._views.copy_mapping(
            space, src_start, src_end, dst_start, dst_end, offset, writable
        )

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
        return await self._views.translate(required, optional, write)

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
        return await self._runs.write_back(start, end, max_run=max_run)

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
        await self._runs.write_out()

    # ------------------------------------------------------------------------------------------
    # Attributes
    # ------------------------------------------------------------------------------------------

    async def set_permissions(self, mode: int) -> bool:
        """Set the permission bits; ``False`` if the backing refused (the seed's contract).

        Checkpoint: always. Cancellation: once the backing call starts it completes (shielded).

        Raises:
            ValueError: ``mode`` is not a permission mask.
        """
        return await self._attr_ops.set_permissions(mode)

    async def set_owner(self, uid: int | None = None, gid: int | None = None) -> None:
        """Set the owner and/or group; with neither, do nothing.

        Checkpoint: always. Cancellation: once the backing call starts it completes (shielded).

        Raises:
            ValueError: a negative id.
            BackingError: the backing refused (nothing changed).
        """
        await self._attr_ops.set_owner(uid, gid)

    async def set_timestamps(self, atime: TimeSpec, mtime: TimeSpec) -> None:
        """Set atime and/or mtime (written through, forced); both omitted does nothing.

        An explicitly set time is clean afterwards (its dirty bit is cleared: the seed left it).

        Checkpoint: always. Cancellation: once the backing call starts it completes (shielded).

        Raises:
            TypeError: an argument is not a TimeSpec.
            BackingError: the backing refused (nothing changed).
        """
        await self._attr_ops.set_timestamps(atime, mtime)

    async def inc_links(self) -> None:
        """Add a link; ctime is touched (as Linux does; the seed also touched mtime).

        Links are not dirty-tracked: the backing is authoritative for them.
        Checkpoint: always. Cancellation: atomic.
        """
        await self._attr_ops.inc_links()

    async def dec_links(self) -> None:
        """Drop a link; ctime is touched. Checkpoint: always. Cancellation: atomic.

        Raises:
            ValueError: the link count is already 0.
        """
        await self._attr_ops.dec_links()

    async def touch_access_time(self) -> None:
        """Set atime to now (dirty). Checkpoint: always. Cancellation: atomic."""
        await self._attr_ops.touch_access_time()

    async def touch_modification_and_status_change_time(self) -> None:
        """Set mtime and ctime to now (dirty). Checkpoint: always. Cancellation: atomic."""
        await self._attr_ops.touch_modification_and_status_change_time()

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
        await self._attr_ops.truncate(size)

    async def allocate(self, offset: int, length: int) -> None:
        """Reserve backing storage for ``[offset, offset+length)``, growing the file if needed.

        A range inside the file is a no-op (the seed's); the backing is not called.
        Checkpoint: always. Cancellation: once the backing call starts it completes (shielded).

        Raises:
            ValueError: negative values, zero length, or an end past the largest offset.
            BackingError: the backing refused (nothing changed).
        """
        await self._attr_ops.allocate(offset, length)

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
        become dirty too (the ranges named are page-aligned, clipped to the old size). When the
        new version is longer, a kept last page shows the new version's bytes past the old size
        (read from the backing, clean), not the zeros it held there.

        A change is followed once: if reading the new attributes (or that tail) fails after the
        backing reported the change, :attr:`attributes_stale` is set and the next call follows
        the change (drops the clean pages again, reports the conflict) even though the backing
        does not report it again.

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
                cause); nothing changed. Also when it changed but its new attributes (or a
                kept page's tail) could not be read: the clean pages are dropped, the size and
                the cached attributes stay, and :attr:`attributes_stale` is set until a
                revalidation succeeds.
        """
        return await self._attr_ops.revalidate()

    # ------------------------------------------------------------------------------------------
    # Eviction, invalidation, release
    # ------------------------------------------------------------------------------------------

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
        return bool(self._drops.evictable_parts(cs, cs + CHUNK_SIZE, clean_only=clean_only))

    def chunk_holds_unread_readahead(self, idx: int) -> bool:
        """Whether chunk ``idx`` holds readahead no read has used yet. Complexity: O(log n)."""
        if not self._ra_unused:
            return False
        self._ra_flush()
        cs = idx << CHUNK_SHIFT
        return self._ra_unused.covered_bytes(cs, cs + CHUNK_SIZE) > 0

    def drop_chunk_nowait(self, idx: int, reason: str) -> int:
        """Drop the clean, unmapped, idle pages of chunk ``idx``; return the bytes freed.

        Synchronous: safe from any task, no lock needed (one event-loop thread).
        """
        return self._drops.drop_nowait(idx << CHUNK_SHIFT, (idx + 1) << CHUNK_SHIFT, reason)

    def try_retire(self) -> bool:
        """Close this inode if it holds nothing worth keeping; return whether it did.

        For the store's inode table (``CacheStore._retire_if_idle``), which knows whether
        anyone holds the inode open. A caller that kept the object gets ``ClosedError``.
        Synchronous. Complexity: O(1).
        """
        if self._closed or not self._retirable():
            return False
        self._closed = True
        self._fills.end_stream()
        # The cache map's callback is the one reference cycle an inode has: break it, so the
        # object is freed at once by reference counting rather than by the cyclic collector
        # (which, with thousands of retired inodes, cost more than opening them).
        self._cache.detach()
        self._report()
        return True

    def abandon(self) -> None:
        """Close this inode without writing anything back: its store has shut down."""
        self._closed = True
        self._fills.end_stream()

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
        return await self._drops.evict_chunk(idx, reason)

    async def evict(self, start: int, end: int) -> None:
        """Write back, then drop, the unmapped cached pages of ``[start, end)``.

        The range is rounded out to pages. Mapped pages are left alone (the seed's Evict);
        unlike the seed, a failed write-back keeps the data dirty and cached and raises.

        Checkpoint: always. Cancellation: whatever was not yet dropped stays cached and dirty.

        Raises:
            ValueError: an invalid range.
            WritebackError: dirty data could not be written back (it stays).
        """
        await self._drops.evict(start, end)

    async def shrink(self, target_bytes: int = 0) -> int:
        """Write back and drop unmapped pages until at most ``target_bytes`` stay cached.

        Returns the bytes cached after.

        Checkpoint: always.
        Cancellation: stops between cached ranges; what was not dropped stays cached (and dirty).
        Requires: no inode lock held (write-backs take _data_lock shared).

        Raises:
            WritebackError: dirty data could not be written back (it stays).
        """
        return await self._drops.shrink(target_bytes)

    async def invalidate_unsavable(self) -> None:
        """Invalidate every mapping, write back all dirty data, then empty the cache.

        If the write-back fails the cache is kept (and the error raised).
        Checkpoint: always. Cancellation: the cache is either kept or emptied, never half.
        Requires: no inode lock held (takes _attr_lock, _map_lock, then _data_lock).

        Raises:
            WritebackError: dirty data could not be written back.
        """
        await self._drops.invalidate_unsavable()

    async def notify_change_fd(self) -> None:
        """The backing's host descriptor changed: re-map, then invalidate every mapping.

        Internal host mappings are re-made onto the new descriptor first. If re-mapping fails,
        old mappings stay and it raises.

        Checkpoint: always.
        Cancellation: the internal mappings are re-made synchronously, before any await; a
        cancellation while waiting for _map_lock leaves the mapping set not invalidated.
        Requires: no inode lock held (takes _map_lock).

        Raises:
            BackingError: the new descriptor could not be mapped.
        """
        self._check_open()
        try:
            self._host.regenerate()
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
        try:
            await self._drops.release()
        finally:
            if self._closed:
                self._fills.end_stream()  # its share of the readahead cap goes to the others

    # ------------------------------------------------------------------------------------------
    # Host-FD mode (the seed's IncRef/DecRef/MapInternal)
    # ------------------------------------------------------------------------------------------

    def inc_ref(self, r: Range) -> None:
        """Add a reference to the host-file pages of ``r`` (page-aligned).

        Pages going from 0 to 1 count as mapped. Synchronous.

        Raises:
            ValueError: a misaligned range.
        """
        self._host.inc_ref(r)

    def dec_ref(self, r: Range) -> None:
        """Drop a reference added by :meth:`inc_ref`.

        Raises:
            ValueError: a misaligned range, or a page with no reference.
        """
        self._host.dec_ref(r)

    @property
    def host_referenced_bytes(self) -> int:
        """Bytes of host-file pages with a reference (the seed's Mapped usage in host mode)."""
        return self._host.referenced_bytes()

    def map_internal(self, r: Range, write: bool) -> list[memoryview]:
        """Memoryviews of the backing's host file over ``r``, mmapped in 2 MiB chunks.

        This is the seed's hostFileMapper. A read-only chunk is upgraded when ``write`` is
        asked. The range is clipped to the file size, since touching a mapping past EOF faults.

        Raises:
            CacheError: the backing has no host descriptor.
            ValueError: an empty range.
        """
        return self._host.map_internal(r, write, self._size)
