"""Fills and readahead: the read-miss path, from a gap of the cache map to cached pages.

A fill reserves pool pages for a page-aligned gap, records a FILL op in the in-flight table (so
readers of the range wait on one backing read), reads into the pages with no lock held, and
caches them in one synchronous completion. Readahead issues speculative fills beyond a
sequential reader, never waiting for memory.
"""

from __future__ import annotations

from typing import final

import anyio
import anyio.lowlevel

from ..errors import BackingError, CacheError
from ..ranges import MAX_OFFSET, PAGE_MASK, PAGE_SIZE, page_round_down, page_round_up
from .core import FILL, InodeCore, Op, advance_views

__all__ = ["Fills"]


@final
class Fills:
    """The fill, direct-read and readahead logic of one inode."""

    __slots__ = ("_ino", "_reserved_end", "_window")

    def __init__(self, inode: InodeCore) -> None:
        # The inode served, whose shared state (core.py) this part works on. Immutable after
        # __init__.
        self._ino = inode
        # Readahead's own state (the hot path's part of it, where a sequential reader goes next
        # and the trigger offset, is in the core): the current window, and how far readahead
        # has been issued. Protected by: loop atomicity.
        self._window = 0
        self._reserved_end = 0

    def after_hit(self, offset: int, end: int) -> None:
        """Policy access and readahead bookkeeping for a read served from the cache."""
        ino = self._ino
        ino._access_chunks(offset, end)
        self.after_read(offset, end)

    def after_read(self, offset: int, end: int) -> None:
        """Readahead bookkeeping after any read: used bytes, the sequential trigger."""
        ino = self._ino
        if ino._ra_unused:
            ino._ra_consume(offset, end)
        if offset == ino._ra_next and end >= ino._ra_trigger:
            self.readahead_async()
        ino._ra_next = end

    async def read_slow(self, offset: int, end: int, out: memoryview) -> int:
        """The read path for anything not a single-segment hit.

        Checkpoint: yes. Cancellation: ``out`` may hold part of the data; a fill this reader
        runs is discarded, a fill it waits for goes on.
        """
        ino = self._ino
        svc = ino._svc
        counters = svc.counters
        pos = offset
        missed = False
        from_cache = 0
        while True:
            size = ino._size
            if end > size:
                end = size
            if pos >= end:
                break
            before = pos
            pos = ino._copy_cached(pos, end, out, offset)
            if not missed:
                from_cache += pos - before
            if pos >= end:
                break
            missed = True
            op = ino._op_at(pos)
            if op is not None:
                await ino._wait_op(op, pos)
                continue
            got = await self.fill_for_read(pos, end, out, offset)
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
            self.after_miss(offset, pos)
        elif n:
            self.after_hit(offset, pos)
        await anyio.lowlevel.checkpoint()
        return n

    def after_miss(self, offset: int, end: int) -> None:
        """Policy access and readahead bookkeeping for a read that missed."""
        ino = self._ino
        ino._access_chunks(offset, end)
        self.after_read(offset, end)

    async def fill_for_read(self, pos: int, end: int, out: memoryview, base: int) -> int:
        """Fill the gap at ``pos`` and wait for the part the read needs.

        A sequential reader also starts readahead beyond it (asynchronously); a random one
        fills only the pages it asked for. Returns 0 to make the caller re-scan, or the bytes
        copied by a direct read when the pool has no room.

        Checkpoint: yes. Cancellation: the fill, once recorded, completes with nothing cached
        (its waiters re-scan); ``out`` may hold part of a direct read.
        """
        ino = self._ino
        svc = ino._svc
        if ino._resizing is not None:
            await ino._resizing.wait()
            return 0  # re-scan under the new size
        start = page_round_down(pos)
        limit = ino._gap_limit(pos)
        req_end = min(page_round_up(end), limit)
        sequential = pos == ino._ra_next or (
            self._window > 0 and ino._ra_next <= pos < self._reserved_end
        )
        if not sequential:
            self._window = 0
            ino._ra_trigger = MAX_OFFSET
        need = req_end - start
        if not await ino._reserve(need):
            return await self.read_direct(pos, min(end, limit), out, base)
        if (
            ino._op_at(pos) is not None
            or ino._cache.find(pos) is not None
            or ino._resizing is not None
            or pos >= ino._size
        ):
            # The wait let someone else fill here, or the size change: re-scan.
            return 0
        req_end = min(req_end, ino._gap_limit(pos))
        op = self.start_fill(start, req_end, speculative=False)
        if op is None:
            return await self.read_direct(pos, min(end, limit), out, base)
        try:
            if sequential and svc.tunables.readahead_max:
                self._reserved_end = max(self._reserved_end, req_end)
                ino._ra_next = pos
                self.readahead_async()
        finally:
            # The fill is recorded: it must run (and complete) whatever happened above.
            await self.run_fill(op)
        if op.error is not None and ino._cache.find(pos) is None:
            raise BackingError(f"fill of [{op.start}, {op.end}) failed: {op.error}") from op.error
        return 0

    async def read_direct(self, pos: int, end: int, out: memoryview, base: int) -> int:
        """Read ``[pos, end)`` straight from the backing into ``out`` (no room in the pool).

        Loops on short counts, as a fill does: a short count is legal for any backing. A zero
        count is EOF: when the size did not change meanwhile, the backing ends before the
        cached size (a hole not yet written back) and the rest reads as zeros; when it did
        (a truncate), the bytes read so far are returned and the caller re-scans under the new
        size. Returns the bytes placed in ``out``, never past the current size.
        Checkpoint: yes. Cancellation: ``out`` may hold part of the data.
        """
        ino = self._ino
        end = min(end, ino._size)  # the size may have shrunk while the caller waited
        if pos >= end:
            return 0
        size_before = ino._size
        resizing = ino._resizing is not None
        dst = out[pos - base : end - base]
        done = 0
        try:
            while done < len(dst):
                got = await ino._backing_read(pos + done, [dst[done:]])
                if got <= 0:
                    break
                done += got
        except Exception as exc:
            raise BackingError(f"direct read at {pos} failed: {exc}") from exc
        if done < len(dst):
            if resizing or ino._resizing is not None or ino._size != size_before:
                return min(done, max(0, ino._size - pos))
            dst[done:] = bytes(len(dst) - done)
            done = len(dst)
        return min(done, max(0, ino._size - pos))

    def start_fill(self, start: int, end: int, *, speculative: bool) -> Op | None:
        """Reserve pool pages for the page-aligned gap ``[start, end)`` and record a FILL op.

        Synchronous. Returns None if the pool cannot allocate (the caller reads directly).
        """
        ino = self._ino
        if start >= end:
            return None
        # Internal bug checks: fills are page-granular, and every in-flight op is too.
        assert not (start | end) & PAGE_MASK, f"fill [{start}, {end}) is not page-aligned"
        svc = ino._svc
        op = Op(FILL, start, end)
        op.speculative = speculative
        # Recorded before anything is reserved: an overlap raises with nothing to give back.
        ino._inflight.insert(start, end, op)
        try:
            op.extents = svc.pool.allocate(end - start)
        except CacheError:
            ino._inflight.remove(start, end)
            return None
        if speculative:
            svc.counters.readahead_bytes += end - start
            svc.readahead_inflight += end - start
        return op

    def readahead_async(self) -> None:
        """Issue the next readahead window beyond what is already requested.

        Synchronous: it only reserves pages and spawns background fills of at most
        ``readahead_request`` bytes each, all in flight at once. The window starts at
        ``readahead_initial`` and doubles each time the reader reaches the start of the last
        window issued (Linux's PG_readahead marker), up to ``readahead_max``. It stops at EOF,
        at the store's cap on speculative bytes in flight, and when the pool has no clean room:
        readahead never waits for memory and never goes over budget.
        """
        ino = self._ino
        svc = ino._svc
        t = svc.tunables
        if not t.readahead_max or not svc.running or ino._resizing is not None:
            return
        window = self._window
        window = t.readahead_initial if not window else min(window * 2, t.readahead_max)
        self._window = window
        eof = page_round_up(ino._size)
        pos = max(page_round_up(ino._ra_next), self._reserved_end)
        first = pos
        target = min(pos + window, eof)
        issued = False
        while pos < target:
            if svc.readahead_inflight >= t.readahead_cap:
                break
            if ino._cache.find(pos) is not None or ino._op_at(pos) is not None:
                nxt = min(
                    ino._next_boundary(ino._cache, pos),
                    ino._next_boundary(ino._inflight, pos),
                    target,
                )
                pos = max(nxt, pos + PAGE_SIZE)
                continue
            stop = min(target, ino._gap_limit(pos), pos + t.readahead_request)
            if not svc.reserve_nowait(stop - pos):
                break
            op = self.start_fill(pos, stop, speculative=True)
            if op is None:
                break
            svc.spawn(self.run_fill, op)
            issued = True
            pos = stop
        self._reserved_end = max(self._reserved_end, pos)
        if issued or pos < target:
            # The next window goes out when a read reaches the first page of this one (or,
            # when the cap or the budget stopped us, retry from there).
            ino._ra_trigger = first + PAGE_SIZE if pos > first else MAX_OFFSET
        else:
            # All of it was cached already: look again only once the reader gets there.
            ino._ra_trigger = pos

    async def run_fill(self, op: Op) -> None:
        """Read a FILL op's range from the backing into its reserved pages, then cache them.

        Bytes at or past the size (as it was when the read started) are zeroed without asking
        the backing; a backing EOF before the size zero-fills the rest (a hole). On a failure
        the page-granular prefix read so far is kept. Completion is synchronous, in ``finally``.

        Checkpoint: yes.
        Cancellation: the op completes with nothing cached; waiters re-scan.
        """
        ino = self._ino
        svc = ino._svc
        pool = svc.pool
        done = 0
        try:
            want = min(op.end, ino._size) - op.start
            if want > 0:
                views: list[memoryview] = []
                left = want
                for off, length in op.extents:
                    if left <= 0:
                        break
                    take = length if length < left else left
                    views.append(pool.view(off, take))
                    left -= take
                done = await self.read_fully(op.start, views, want)
            if want < op.end - op.start:
                # Past the size: zeros. Written, not assumed: pool pages are reused warm.
                self.zero_extents(op, max(want, 0))
            done = op.end - op.start  # everything past `done` is a hole or past EOF: zeros
        except anyio.get_cancelled_exc_class():
            done = 0
            raise
        except Exception as exc:
            op.error = exc
            done = page_round_down(done) if isinstance(done, int) else 0
        finally:
            self.complete_fill(op, done)

    def zero_extents(self, op: Op, skip: int) -> None:
        """Zero ``op``'s reserved pages from byte ``skip`` of the op on. Synchronous."""
        pool = self._ino._svc.pool
        for off, length in op.extents:
            if skip < length:
                pool.fill_zero(off + skip, length - skip)
            skip = max(skip - length, 0)

    async def read_fully(self, offset: int, views: list[memoryview], want: int) -> int:
        """Read into ``views`` until full or EOF; zero what EOF leaves.

        Returns the bytes covered (always ``want`` unless an exception propagates). A zero
        count is EOF, never a loop.

        Checkpoint: yes. Cancellation: the views may hold part of the data.
        """
        ino = self._ino
        done = 0
        while views:
            got = await ino._backing_read(offset + done, views)
            if got <= 0:
                for v in views:
                    v[:] = bytes(len(v))
                return want
            done += got
            advance_views(views, got)
        return done

    def complete_fill(self, op: Op, done: int) -> None:
        """Cache the first ``done`` bytes of ``op`` (page-granular), free the rest, wake waiters."""
        ino = self._ino
        svc = ino._svc
        pool = svc.pool
        ino._inflight.remove(op.start, op.end)
        if op.speculative:
            svc.readahead_inflight -= op.end - op.start
        if ino._resizing is not None:
            op.invalid = True  # it may have read a backing that already shrank
        keep_end = op.start + (0 if op.invalid or ino._closed else page_round_up(done))
        size_end = page_round_up(ino._size)
        if keep_end > size_end:
            keep_end = max(op.start, size_end)
        pos = op.start
        for off, length in op.extents:
            piece_end = pos + length
            if pos < keep_end:
                cut = min(piece_end, keep_end)
                # Zero what lies past the size in the kept pages (EOF rounding, seed Fill).
                tail = ino._size
                if tail < cut:
                    z = max(tail, pos)
                    pool.fill_zero(off + (z - pos), cut - z)
                ino._cache.insert(pos, cut, off)
                if cut < piece_end:
                    pool.free(off + (cut - pos), piece_end - cut)
            else:
                pool.free(off, length)
            pos = piece_end
        op.extents = []
        if keep_end > op.start:
            if op.speculative:
                ino._ra_unused.assign(op.start, keep_end, True)
            # Pages being filled were not evictable when the evictor last looked: wake it now
            # that they are, rather than at its next poll.
            if svc.pool.used_bytes > svc.evict_above:
                svc.wake_evictor()
        ino._report()
        op.event.set()

    async def ensure_cached(self, start: int, end: int, window_end: int) -> BaseException | None:
        """Make ``[start, end)`` (page-aligned, within pgend(size)) cached.

        Gaps are filled up to ``window_end``. Returns the first fill error that left part of
        the range uncached, or None when all of it is cached at return (synchronously with the
        caller's next step).

        Checkpoint: when anything is missing.
        Cancellation: fills already started finish or are discarded; nothing else changes.
        """
        ino = self._ino
        svc = ino._svc
        while True:
            gap = ino._cache.first_gap_from(start, end)
            if gap is None:
                return None
            pos = gap[0]
            op = ino._op_at(pos)
            if op is not None:
                await op.event.wait()
                if (
                    op.error is not None
                    and ino._cache.find(pos) is None
                    and ino._inflight.find(pos) is None
                ):
                    return op.error
                continue
            if ino._resizing is not None:
                await ino._resizing.wait()
                continue
            limit = ino._gap_limit(pos)
            if pos >= limit:
                return None  # past EOF now (a concurrent truncate): nothing to fill
            fill_end = min(limit, max(gap[1], min(window_end, limit)))
            need = fill_end - pos
            # Pinned pages must live in the pool: without room, go over budget rather than fail.
            await ino._reserve(need)
            if (
                ino._inflight.find(pos) is not None
                or ino._cache.find(pos) is not None
                or ino._resizing is not None
            ):
                continue
            # Re-checked after the wait: a truncate may have moved EOF below pos meanwhile.
            fill_end = min(fill_end, ino._gap_limit(pos))
            if fill_end <= pos:
                return None
            op = self.start_fill(pos, fill_end, speculative=False)
            if op is None:
                raise CacheError(f"the pool cannot allocate {fill_end - pos} bytes")
            svc.counters.cache_misses += 1
            await self.run_fill(op)
            if op.error is not None and ino._cache.find(pos) is None:
                return op.error
