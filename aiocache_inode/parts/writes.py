"""Writes that cannot complete in the hot path's synchronous section, and the append reservation.

Each piece of a write lands in cached pages (copied and dirtied), is written through to the
backing under a WRITE op, or, in write-back mode, is cached as fresh dirty pages without a
read-modify-write (only a partial page inside the file is filled first).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Final, final

import anyio
import anyio.lowlevel

from ..attrs import S_ISGID, S_ISUID
from ..chunks import CHUNK_SIZE
from ..errors import BackingError, CacheError
from ..ranges import PAGE_MASK, PAGE_SIZE, page_round_down, page_round_up
from .core import A_MCTIME, A_SIZE, A_USAGE, WRITE, InodeCore, Op

if TYPE_CHECKING:
    from .fills import Fills

__all__ = ["APPEND_RESERVE", "Writes"]

#: Pages an append reservation takes at once (write-back mode).
APPEND_RESERVE: Final = CHUNK_SIZE


@final
class Writes:
    """The write paths of one inode (the hot path is ``CachingInode.write``)."""

    __slots__ = ("_append_at", "_fills", "_ino", "_res_arena", "_res_base")

    def __init__(self, inode: InodeCore, fills: Fills) -> None:
        # The inode served, whose shared state (core.py) this part works on, and the parts
        # it calls. Immutable after __init__.
        self._ino = inode
        self._fills = fills
        # The pool offset of the pages append_pages handed out last (write_nowait caches them
        # there). Protected by: loop atomicity.
        self._append_at = 0
        # The view of the arena holding the current append reservation, and the pool offset of
        # that view's first byte (set with the reservation; read only while ino._append is
        # set, which lies inside it). The pool's own arena view, so holding it exports nothing.
        # Protected by: loop atomicity.
        self._res_arena = memoryview(b"")
        self._res_base = 0

    def write_nowait(self, offset: int, src: memoryview, n: int) -> bool:
        """Apply a write synchronously if it needs no I/O; False (nothing changed) otherwise.

        Two cases: the range lies in one cached segment, or (write-back mode) it starts on a
        page boundary at or past EOF, where pages are known to be uncached (invariant: no page
        cached past pgend(size)) and need no fill; they come from the append reservation.
        Complexity: O(log n) plus the copy; O(1) Python steps for an append that continues the
        last one (the cache and dirty segments then grow in place).
        """
        ino = self._ino
        end = offset + n
        svc = ino._svc
        if offset >= ino._size and not offset & PAGE_MASK and svc.write_back:
            need = ((end + PAGE_MASK) & ~PAGE_MASK) - offset
            res = ino._append
            if res is not None and need <= res[1]:
                # The reservation holds the pages: take them without a call (the common case,
                # 15 appends of 4 KiB in 16), sliced from the arena view located when the
                # reservation was made rather than through the checked pool.view.
                pool_off, left = res
                if left > need:
                    ino._append = (pool_off + need, left - need)
                else:
                    ino._append = None
                    del svc.appends[ino._id]
                at = pool_off - self._res_base
                view = self._res_arena[at : at + need]
            else:
                got = self.append_pages(offset, end)
                if got is None:
                    return False
                view = got
                pool_off = self._append_at
            view[:n] = src
            if need > n:
                view[n:] = bytes(need - n)
            cache = ino._cache
            if not cache.append(offset, offset + need, pool_off):
                cache.insert(offset, offset + need, pool_off)
            dirty = ino._dirty
            if not dirty.append(offset, end, False):
                dirty.mark_dirty(offset, end)
            ino._size = end
            ino._dirty_attr |= A_SIZE | A_MCTIME
            ino._pending_mc = svc.clock()
            if end > ino._pending_usage and end > ino._attrs.usage:
                ino._pending_usage = end
                ino._dirty_attr |= A_USAGE
            if ino._attrs.mode & (S_ISUID | S_ISGID):
                ino._after_write_locked(offset, end)
            # _report, inlined (it is a third of an append's bookkeeping): the same deltas
            # from the same totals. Mappings are left out: a write never changes them, and
            # every mapping change reports at once. The cache is not empty, so the inode
            # cannot be idle (no retire check), and it is dirty now.
            c = cache._total  # SegmentMap.total(), without the call
            d = dirty._total + ino._writeback_bytes
            svc.cached_bytes += c - ino._reported_cached
            if not ino._reported_dirty:
                ino._dirtied_at = svc.monotonic()
            svc.dirty_bytes += d - ino._reported_dirty
            ino._reported_cached = c
            ino._reported_dirty = d
            return True
        hit = ino._hit
        if hit is None or offset < hit[0] or end > hit[1]:
            hit = ino._lookup_hit(offset)
        if hit is None or end > hit[1]:
            return False
        base = hit[3] - hit[0]
        hit[2][base + offset : base + end] = src
        ino._dirty.mark_dirty(offset, end)
        if end > ino._size:
            ino._size = end
            ino._dirty_attr |= A_SIZE
        ino._pending_mc = svc.clock()
        ino._dirty_attr |= A_MCTIME
        if end > ino._pending_usage and end > ino._attrs.usage:
            ino._pending_usage = end
            ino._dirty_attr |= A_USAGE
        if ino._attrs.mode & (S_ISUID | S_ISGID):
            ino._after_write_locked(offset, end)
        ino._report()
        return True

    def append_pages(self, offset: int, end: int) -> memoryview | None:
        """Pool pages for ``[offset, pgend(end))`` from the append reservation.

        The reservation is lent budget, not spent (see ``svc.appends``): when it runs out, the
        pages this append needs are reserved (reclaiming for them if the budget is full), and
        up to ``APPEND_RESERVE`` in all is set aside only out of the budget's free headroom, so
        it never evicts a cached page; reclaim takes it back before anything is evicted or goes
        over budget. Returns None when the pool has no room. Sets ``_append_at`` to the pages'
        pool offset.
        """
        ino = self._ino
        need = page_round_up(end) - offset
        svc = ino._svc
        pool = svc.pool
        res = ino._append
        if res is None or res[1] < need:
            ino._release_append()
            if not svc.reserve_nowait(need):
                return None
            spare = (svc.memory_limit - pool.used_bytes - need) & ~PAGE_MASK
            want = need + max(0, min(APPEND_RESERVE - need, spare))
            try:
                # Populated now: this thread writes every page of it next (see MemoryPool).
                extents = pool.allocate(want, populate=True)
            except CacheError:
                return None
            for off, length in extents[1:]:
                pool.free(off, length)
            res = extents[0]
            if res[1] < need:
                pool.free(res[0], res[1])
                return None
            if res[1] > need:
                svc.appends[ino._id] = ino._release_append
            # One extent lies in one arena: write_nowait slices the rest from its view.
            arena, at = pool.locate(res[0])
            self._res_arena = arena
            self._res_base = res[0] - at
        pool_off, left = res
        if left > need:
            ino._append = (pool_off + need, left - need)
        elif ino._append is not None:
            # Used up: no longer lent.
            ino._append = None
            del svc.appends[ino._id]
        self._append_at = pool_off
        return pool.view(pool_off, need)

    async def write_step(self, pos: int, end: int, src: memoryview, base: int) -> int:
        """Apply the piece of the write at ``pos``; return the new position.

        Checkpoint: when it waits or does I/O. Cancellation: the bytes before the returned
        position are applied, nothing after (a write-through already sent completes).
        Requires: _attr_lock held.
        """
        ino = self._ino
        op = ino._op_at(pos)
        if op is not None:
            await op.event.wait()
            return pos
        svc = ino._svc
        seg = ino._cache.find(pos)
        if seg is not None:
            s, e, fr = seg
            stop = min(e, end)
            nxt = ino._inflight.next_segment_start(pos)
            if nxt is not None and nxt < stop:
                stop = nxt
            svc.pool.view(fr + pos - s, stop - pos)[:] = src[pos - base : stop - base]
            ino._dirty.mark_dirty(pos, stop)
            ino._grow_locked(stop)
            ino._report()
            return stop
        gap_end = min(end, ino._gap_limit_any(pos))
        if svc.write_back:
            new = await self.write_back_gap(pos, gap_end, src, base)
            if new is not None:
                return new
            # Waiting for room let others run: a fill may have started in the gap since.
            if ino._op_at(pos) is not None or ino._cache.find(pos) is not None:
                return pos
            gap_end = min(end, ino._gap_limit_any(pos))
        return await self.write_through(pos, gap_end, src, base)

    async def write_back_gap(self, pos: int, end: int, src: memoryview, base: int) -> int | None:
        """Write-back mode: cache ``[pos, end)`` (a gap) as dirty pages without a backing write.

        Returns the new position, or None to fall back to write-through (no room in the pool).
        A partial first or last page that lies inside the file is filled from the backing
        first (the caller re-scans and then copies into the now cached page).

        Checkpoint: when it fills a page or waits for room. Cancellation: nothing cached yet,
        or the whole gap cached and dirty (the copy is synchronous).
        Requires: _attr_lock held.
        """
        ino = self._ino
        size = ino._size
        head = page_round_down(pos)
        if pos & PAGE_MASK and head < size:
            await self.fill_page_locked(head)
            return pos
        # The last page is partial and inside the file (and not the head page: that case
        # returned above, since a head page inside the file is filled first).
        tail = page_round_down(end)
        if end & PAGE_MASK and tail < size:
            await self.fill_page_locked(tail)
            return pos
        start = head
        stop = page_round_up(end)
        svc = ino._svc
        if not await ino._reserve(stop - start):
            return None
        if ino._inflight.find(pos) is not None or ino._cache.find(pos) is not None:
            return pos  # the wait changed the picture: re-scan
        stop = min(stop, page_round_up(ino._gap_limit_any(pos)))
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
            ino._cache.insert(at, at + length, off)
            at += length
        ino._dirty.mark_dirty(pos, end)
        ino._grow_locked(end)
        ino._report()
        return end

    async def fill_page_locked(self, page: int) -> None:
        """Fill one page inside the file before a partial write-back-mode write to it.

        Checkpoint: yes. Cancellation: the fill finishes or is discarded; nothing written.
        Requires: _attr_lock held.
        """
        err = await self._fills.ensure_cached(page, page + PAGE_SIZE, page + PAGE_SIZE)
        if err is not None:
            raise BackingError(f"read-modify-write fill at {page} failed: {err}") from err

    async def write_through(self, pos: int, end: int, src: memoryview, base: int) -> int:
        """Write ``[pos, end)`` (a cache gap) straight to the backing under a WRITE op.

        The op covers the whole pages the bytes touch, so every in-flight op is page-granular:
        a fill next to it then stops at a page boundary and can never overlap it. Those pages
        are uncached (the cache is page-granular and ``pos`` lies in a gap).

        Checkpoint: yes. Cancellation: the requests are shielded, so what was sent completes
        and the size follows it. Requires: _attr_lock held.
        """
        ino = self._ino
        op = Op(WRITE, page_round_down(pos), page_round_up(end))
        ino._inflight.insert(op.start, op.end, op)
        done = 0
        try:
            # A request already sent must be accounted for: shield it, so the inode's size
            # and contents match what reached the backing.
            with anyio.CancelScope(shield=True):
                while pos + done < end:
                    chunk = src[pos + done - base : end - base]
                    try:
                        got = await ino._backing_write(pos + done, [chunk])
                    except Exception as exc:
                        raise BackingError(f"write-through at {pos + done} failed: {exc}") from exc
                    if got <= 0:
                        raise BackingError(
                            f"write-through at {pos + done} made no progress"
                        ) from OSError(errno.EIO, "zero-length write")
                    done += got
                    ino._svc.counters.writethrough_bytes += got
        finally:
            ino._inflight.remove(op.start, op.end)
            op.event.set()
            if done:
                ino._grow_locked(pos + done)
        await anyio.lowlevel.checkpoint()
        return pos + done
