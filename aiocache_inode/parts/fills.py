"""Fills and readahead: the read-miss path, from a gap of the cache map to cached pages.

A fill reserves pool pages for a page-aligned gap, records a FILL op in the in-flight table (so
readers of the range wait on one backing read), reads into the pages with no lock held, and
caches them in one synchronous completion. Readahead keeps a sliding window of speculative
fills in flight ahead of a sequential reader, never waiting for memory: the window is topped up
each time the reader crosses the trigger (one request's worth consumed) and before a reader waits
on data still in flight, and a completing readahead fill issues the next request itself. The
window sizes itself to the bandwidth-delay product (measured round trip times the reader's
consumption rate), doubles on a reader stall, halves when readahead is wasted or memory is short,
and is bounded by the reader's fair share of the store's cap on speculative bytes in flight.
"""

from __future__ import annotations

from typing import final

import anyio
import anyio.lowlevel

from ..errors import BackingError, CacheError
from ..ranges import MAX_OFFSET, PAGE_MASK, PAGE_SIZE, page_round_down, page_round_up
from .core import FILL, InodeCore, Op, advance_views

#: The weight of the newest sample in the store's round-trip estimate (an EWMA).
_RTT_WEIGHT = 0.25
#: The window covers this many round trips of consumption: one to hide the latency, one of slack
#: for the variance of request times and reader bursts.
_BDP_FACTOR = 2.0

__all__ = ["Fills"]


@final
class Fills:
    """The fill, direct-read and readahead logic of one inode."""

    __slots__ = (
        "_frontier",
        "_ino",
        "_issued_end",
        "_limit",
        "_sample_pos",
        "_sample_time",
        "_spec_inflight",
        "_wasted_seen",
        "_window",
    )

    def __init__(self, inode: InodeCore) -> None:
        # The inode served, whose shared state (core.py) this part works on. Immutable after
        # __init__.
        self._ino = inode
        # Readahead's own state (the hot path's part of it, where a sequential reader goes next
        # and the trigger offset, is in the core). All protected by: loop atomicity.
        # The window: bytes kept issued ahead of the reader; 0 = no sequential stream.
        self._window = 0
        # How far this stream's readahead has been issued (page-aligned); reset with the stream,
        # so a new sequential pass over an evicted file reads ahead again from where it is.
        self._issued_end = 0
        # Where the reader's latest read ends, counted from when it starts (a reader blocked in
        # a read is already there): the base a landing fill tops the window up from.
        self._frontier = 0
        # Where a prefetch hint said the reader stops (page-aligned): the window issues nothing
        # past it until a read goes beyond it, or a jump, ends it. MAX_OFFSET = no hint.
        self._limit = MAX_OFFSET
        # Speculative bytes of this inode in flight (a reader with any counts for the share).
        self._spec_inflight = 0
        # The reader's position and the clock at the last rate sample (bandwidth-delay sizing).
        self._sample_pos = 0
        self._sample_time = 0.0
        # The inode's wasted-readahead count when the window last looked (waste shrinks it).
        self._wasted_seen = 0

    def after_hit(self, offset: int, end: int) -> None:
        """Policy access and readahead bookkeeping for a read served from the cache."""
        ino = self._ino
        ino._access_chunks(offset, end)
        self.after_read(offset, end)

    def after_read(self, offset: int, end: int) -> None:
        """Readahead bookkeeping after any read: the sequential trigger, or a jump.

        Used readahead is counted lazily: a sequential run only extends ``[_ra_mark,
        _ra_next)``, settled at the next top-up, jump or drop (a per-read split of the
        unused-range map was most of a 4 KiB hit's cost).
        """
        ino = self._ino
        if offset == ino._ra_next:
            ino._ra_next = end
            if end >= ino._ra_trigger:
                self.readahead_async(end - offset)
        else:
            self.jump(offset, end)

    def jump(self, offset: int, end: int) -> None:
        """A non-sequential read ``[offset, end)``: settle used readahead, end the stream."""
        ino = self._ino
        ino._ra_flush()
        if ino._ra_unused:
            ino._ra_consume(offset, end)
        ino._ra_next = ino._ra_mark = end
        self._limit = MAX_OFFSET
        if self._window:
            self.end_stream()

    def end_stream(self) -> None:
        """Forget the sequential stream: no window, no trigger, no high-water mark.

        Also called when the inode closes (it gives up its share of the cap). Synchronous.
        """
        if self._window:
            self._ino._svc.readahead_streams -= 1
        self._window = 0
        self._issued_end = 0
        self._frontier = 0
        self._ino._ra_trigger = MAX_OFFSET

    async def read_slow(self, offset: int, end: int, out: memoryview) -> int:
        """The read path for anything not a single-segment hit.

        Whether the read is sequential is decided once, at its start (a read continuing where
        the last one ended, whatever its size); a sequential reader about to wait on data still
        in flight tops the readahead up first, so the next requests are on the wire while it
        waits.

        Checkpoint: yes. Cancellation: ``out`` may hold part of the data; a fill this reader
        runs is discarded, a fill it waits for goes on.
        """
        ino = self._ino
        svc = ino._svc
        counters = svc.counters
        sequential = offset == ino._ra_next
        # A read counts as one stall however many pieces it waits for.
        stall = sequential and self._window > 0
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
                if sequential and svc.tunables.readahead_max:
                    # A stall: the window did not cover the round trip. Grow it and put the
                    # next requests out before waiting, never after.
                    self.readahead_async(end - offset, reader=end, stalled=stall)
                    stall = False
                await ino._wait_op(op, pos)
                continue
            got = await self.fill_for_read(pos, end, out, offset, sequential, stall)
            stall = False
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
        if n:
            ino._access_chunks(offset, pos)
            self.after_read(offset, pos)
        await anyio.lowlevel.checkpoint()
        return n

    async def fill_for_read(
        self,
        pos: int,
        end: int,
        out: memoryview,
        base: int,
        sequential: bool = False,
        stalled: bool = False,
    ) -> int:
        """Fill the gap at ``pos`` and wait for the part the read needs.

        The gap goes out as parallel requests of at most ``readahead_request`` bytes (a 4 MiB
        read is 16 requests in flight at once, not one long one); this task runs the first and
        the rest run as background fills the read loop then waits on. A sequential reader also
        starts or tops up readahead beyond the read (``stalled``: the first wait of a read whose
        stream was already running); a random one fills only what it asked for.
        Returns 0 to make the caller re-scan, or the bytes copied by a direct read when the
        pool has no room.

        Checkpoint: yes. Cancellation: the fill this task runs completes with nothing cached
        (its waiters re-scan); the background ones go on; ``out`` may hold part of a direct read.
        """
        ino = self._ino
        svc = ino._svc
        t = svc.tunables
        if ino._resizing is not None:
            await ino._resizing.wait()
            return 0  # re-scan under the new size
        start = page_round_down(pos)
        limit = ino._gap_limit(pos)
        req_end = min(page_round_up(end), limit)
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
        request = t.readahead_request if svc.running else req_end - start
        op = self.start_fill(start, min(req_end, start + request), speculative=False)
        if op is None:
            return await self.read_direct(pos, min(end, limit), out, base)
        try:
            piece = op.end
            while piece < req_end:
                more = self.start_fill(piece, min(req_end, piece + request), speculative=False)
                if more is None:
                    break  # the pool is short: the read loop re-scans what is left
                svc.spawn(self.run_fill, more)
                piece = more.end
            if sequential and t.readahead_max:
                # A sequential read that had to go to the backing: readahead was short
                # (``stalled``), or this is the stream's start.
                self._issued_end = max(self._issued_end, piece)
                self.readahead_async(end - base, reader=end, stalled=stalled)
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
            self._spec_inflight += end - start
        return op

    def readahead_async(
        self, read_len: int = 0, *, reader: int = -1, stalled: bool = False
    ) -> None:
        """Top the sequential window up: issue readahead up to ``window`` bytes past the reader.

        Synchronous: it only reserves pages and spawns background fills of at most
        ``readahead_request`` bytes each (each one, when it lands, issues the next request
        itself). ``reader`` is where the reader's current read ends (default: where the last
        one did); ``stalled`` says a reader is about to wait on (or fetch) data readahead should
        have had in the cache. The window starts at ``readahead_initial`` (at least twice the
        read size), grows to the bandwidth-delay product, doubles on a stall, halves when
        readahead was wasted or the pool had no clean room, and never passes this reader's
        fair share of ``readahead_cap`` (the cap over the inodes with readahead in flight) nor
        ``readahead_max``. It stops at EOF, at the cap, and when the pool has no clean room:
        readahead never waits for memory and never goes over budget.
        """
        ino = self._ino
        svc = ino._svc
        t = svc.tunables
        if not t.readahead_max or not svc.running or ino._resizing is not None:
            return
        ino._ra_flush()
        if reader < 0:
            reader = ino._ra_next
        if reader >= ino._size and not self._window:
            # The reader reached EOF after its stream ended there: nothing to issue (this call
            # only settled the used count).
            ino._ra_trigger = MAX_OFFSET
            return
        if reader == self._limit and not self._window:
            # The reader reached the hinted end, all of it issued: only the used count to
            # settle (done above); a read beyond the end starts a stream.
            ino._ra_trigger = reader + 1
            return
        self._frontier = reader
        if reader > self._limit:
            self._limit = MAX_OFFSET  # read past the hinted end: ordinary readahead from here
        now = svc.monotonic()
        window = self._window
        if not window:
            svc.readahead_streams += 1
            window = max(t.readahead_initial, 2 * page_round_up(read_len))
            self._sample_pos = reader
            self._sample_time = now
            self._wasted_seen = ino._ra_wasted
        else:
            consumed = reader - self._sample_pos
            if consumed >= t.readahead_request:
                # The bandwidth-delay product: what the reader consumes in one round trip.
                elapsed = now - self._sample_time
                rtt = svc.readahead_rtt
                if rtt > 0:
                    bdp = _BDP_FACTOR * rtt * consumed / elapsed if elapsed > 0 else t.readahead_cap
                    if bdp > window:
                        window = int(bdp)
                self._sample_pos = reader
                self._sample_time = now
            if stalled:
                window *= 2
            if ino._ra_wasted != self._wasted_seen:
                # Readahead was dropped before it was read: it ran too far ahead for memory.
                self._wasted_seen = ino._ra_wasted
                window //= 2
        window = max(min(window, t.readahead_max, self._share()), t.readahead_request)
        self._window = window & ~PAGE_MASK
        self._issued_end = max(self._issued_end, page_round_up(reader))
        self._issue(reader)

    def _issue(self, reader: int) -> None:
        """Issue the window past ``reader`` (up to EOF or the hinted end), then set the trigger.

        Synchronous; each request runs in a ``_stream`` task of its own.
        """
        ino = self._ino
        svc = ino._svc
        window = self._window
        eof = page_round_up(ino._size)
        stop = min(eof, self._limit)
        target = min(page_round_up(reader + window), stop)
        while self._issued_end < target:
            op = self._next_request(target)
            if op is None:
                break
            svc.spawn(self._stream, op)
        if self._issued_end >= stop:
            # Issued to EOF (or the hinted end): the stream is done and gives its share back.
            # A reader that goes on after the file grew misses and starts a new one. The
            # trigger stays at EOF (or the hinted end), where the read that gets there settles
            # the used count.
            self.end_stream()
            ino._ra_trigger = ino._size if stop >= eof else stop
        else:
            # Top up again once the reader has consumed one more request's worth.
            ino._ra_trigger = max(
                reader + 1, self._issued_end - window + svc.tunables.readahead_request
            )

    def prefetch(self, offset: int, end: int) -> int:
        """Make the sequential stream at ``offset`` cover ``[offset, end)`` at once.

        A range continuing where the last read ended (a client fetching an object as
        consecutive ranged GETs) extends that stream and leaves it unbounded, so readahead
        runs on past the range as for any sequential reader. Any other range starts a new
        stream bounded by the range's end. The body of :meth:`CachingInode.prefetch`, which
        states the contract. Returns the bytes of readahead issued. Synchronous.
        """
        ino = self._ino
        svc = ino._svc
        t = svc.tunables
        end = min(end, ino._size)
        if not t.readahead_max or not svc.running or ino._resizing is not None or offset >= end:
            return 0
        start = page_round_down(offset)
        # Continuing: the last read ended here, and not inside a hinted range it did not finish
        # (which also rules out a position set by a hint alone, with no read since).
        if offset == ino._ra_next and offset > 0 and offset >= self._limit_or_zero():
            ino._ra_flush()
            self._limit = MAX_OFFSET
        else:
            self.jump(offset, offset)  # a new stream from here: the old one (if any) ends
            self._limit = page_round_up(end)
        issued = svc.counters.readahead_bytes
        if not self._window:
            svc.readahead_streams += 1
            self._sample_pos = offset
            self._sample_time = svc.monotonic()
            self._wasted_seen = ino._ra_wasted
            self._issued_end = start
            window = t.readahead_initial if self._limit == MAX_OFFSET else 0
        else:
            window = self._window
        window = min(max(window, page_round_up(end) - start), t.readahead_max, self._share())
        self._window = max(window, t.readahead_request) & ~PAGE_MASK
        self._frontier = max(self._frontier, offset)
        self._issued_end = max(self._issued_end, start)
        self._issue(offset)
        return svc.counters.readahead_bytes - issued

    def _limit_or_zero(self) -> int:
        """The hinted end, or 0 without a hint (any position is then past it)."""
        return 0 if self._limit == MAX_OFFSET else self._limit

    def _share(self) -> int:
        """This stream's fair share of the store's cap: the cap over the active streams."""
        svc = self._ino._svc
        t = svc.tunables
        return max(t.readahead_cap // max(svc.readahead_streams, 1), t.readahead_request)

    def _next_request(self, target: int) -> Op | None:
        """Record the next readahead fill at ``_issued_end`` (below ``target``), or None.

        Skips what is cached or in flight. None when the cap or this stream's share of it, the
        pool or EOF stops it (a memory shortage also halves the window). The pages come from
        free room or clean data, never from readahead nobody has read yet (another stream's
        next data). Synchronous.
        """
        ino = self._ino
        svc = ino._svc
        t = svc.tunables
        pos = self._issued_end
        share = self._share()
        if pos + t.readahead_request > target and target < min(
            page_round_up(ino._size), self._limit
        ):
            return None  # less than a request of room: wait for the reader (no small requests)
        while pos < target:
            if svc.readahead_inflight >= t.readahead_cap or self._spec_inflight >= share:
                break
            if ino._cache.find(pos) is not None or ino._op_at(pos) is not None:
                nxt = min(
                    ino._next_boundary(ino._cache, pos),
                    ino._next_boundary(ino._inflight, pos),
                    target,
                )
                # A write-back's bounds are byte-granular (dirty bytes are): step to the next
                # page boundary, so the next fill starts on one (the page holding such a bound
                # is cached, since a write-back writes only cached bytes).
                pos = max(page_round_up(nxt), pos + PAGE_SIZE)
                continue
            stop = min(target, ino._gap_limit(pos), pos + t.readahead_request)
            if not svc.reserve_speculative(stop - pos):
                self._window = max(self._window // 2, t.readahead_request) & ~PAGE_MASK
                break
            op = self.start_fill(pos, stop, speculative=True)
            if op is None:
                break
            self._issued_end = stop
            return op
        self._issued_end = max(self._issued_end, min(pos, target))
        return None

    async def _stream(self, op: Op) -> None:
        """Run readahead fills one after another: each, when it lands, issues the next itself.

        A completion that spawned a new task instead would only see it start after the whole
        burst of completions, keeping the window one round trip behind. Also measures the
        round trip (the store-wide estimate the windows size themselves with).

        Checkpoint: yes. Cancellation: the current fill completes with nothing cached; no
        further request is issued.
        """
        ino = self._ino
        svc = ino._svc
        while True:
            began = svc.monotonic()
            await self.run_fill(op)
            if op.error is not None or op.invalid or ino._closed or not self._window:
                return
            sample = svc.monotonic() - began
            rtt = svc.readahead_rtt
            svc.readahead_rtt = sample if rtt <= 0 else rtt + _RTT_WEIGHT * (sample - rtt)
            reader = max(ino._ra_next, self._frontier)
            target = min(
                page_round_up(reader + self._window), page_round_up(ino._size), self._limit
            )
            nxt = self._next_request(target)
            if nxt is None:
                return
            op = nxt

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
            self._spec_inflight -= op.end - op.start
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
                if not ino._ra_unused:
                    # Nothing was unused before: what the pending run covered cannot have
                    # used these pages, so the lazy count starts afresh here.
                    ino._ra_mark = ino._ra_next
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
