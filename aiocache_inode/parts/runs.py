"""Write-back runs: dirty cached pages to the backing, zero copy, and the inode's write-out.

A run clears its pages' dirty state when it starts (Linux's clear_page_dirty_for_io) and puts
back whatever it did not write; every run holds the data lock shared, so no truncate can move
EOF under it (seed section 8.9).
"""

from __future__ import annotations

import errno
import time
from typing import final

import anyio
import anyio.lowlevel

from ..attrs import AttrMask
from ..errors import BackingError, WritebackError
from ..ranges import MAX_OFFSET, Range
from .core import WRITEBACK, InodeCore, Op, advance_views

__all__ = ["WritebackRuns"]


@final
class WritebackRuns:
    """The write-back of one inode: runs, their errors, and ``write_out``."""

    __slots__ = ("_ino",)

    def __init__(self, inode: InodeCore) -> None:
        # The inode served, whose shared state (core.py) this part works on, and the parts
        # it calls. Immutable after __init__.
        self._ino = inode

    async def write_back(self, start: int, end: int, *, max_run: int | None = None) -> int:
        """The body of :meth:`CachingInode.write_back`, which states the contract."""
        ino = self._ino
        if not ino._dirty and not ino._inflight:
            return 0
        written = 0
        svc = ino._svc
        async with ino._data_lock.read_locked():
            # Dirty bytes can only lie below the size (writes grow it as they dirty, truncate
            # cleans past it); drop any that a size change left behind, they are not data.
            ino._dirty.keep_clean(ino._size, MAX_OFFSET)
            pos = start
            # After the first pass only unkept pieces are written again: a kept piece (mapped
            # writable) stays dirty however often it is written, and two write-backs re-writing
            # it in turn, each waiting for the other's run, would never end.
            again = False
            while True:
                size = ino._size
                hi = min(end, size)
                pieces = ino._dirty.dirty_ranges(pos, hi) if pos < hi else []
                if again:
                    pieces = [p for p in pieces if not p[2]]
                if not pieces:
                    # Another task's write-back over the range took its pages out of the dirty
                    # set when it started: wait for it (Linux's filemap_write_and_wait waits on
                    # pages under writeback too), then look again from the start, since what
                    # it failed to write is dirty again and ours to write (or report).
                    other = ino._writeback_op_in(start, hi)
                    if other is None:
                        break
                    await other.event.wait()
                    pos = start
                    again = True
                    continue
                ds, de, _keep = pieces[0]
                if max_run is not None and de - ds > max_run:
                    de = ds + max_run
                busy = next(iter(ino._inflight.overlapping(ds, de)), None)
                if busy is not None:
                    await busy[2].event.wait()
                    continue
                written += await self.writeback_run(ds, de)
                pos = de
        if written:
            svc.counters.writeback_runs += 1
        return written

    async def writeback_run(self, ds: int, de: int) -> int:
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
        ino = self._ino
        svc = ino._svc
        pool = svc.pool
        views = [pool.view(fr, e - s) for s, e, fr in ino._cache.clipped(ds, de)]
        # An internal bug check, not a condition a caller can handle.
        assert sum(len(v) for v in views) == de - ds, f"dirty [{ds}, {de}) is not fully cached"
        op = Op(WRITEBACK, ds, de)
        ino._inflight.insert(ds, de, op)
        # What this run takes out of the dirty set (non-kept pieces), to put back on failure.
        taken = [(s, e) for s, e, keep in ino._dirty.dirty_ranges(ds, de) if not keep]
        taken_bytes = sum(e - s for s, e in taken)
        ino._dirty.mark_clean(ds, de)
        ino._writeback_bytes += taken_bytes
        done = 0
        t0 = time.perf_counter()
        try:
            while views:
                try:
                    # A request already sent must be accounted for (its bytes may land).
                    with anyio.CancelScope(shield=True):
                        got = await ino._backing_write(ds + done, views)
                except Exception as exc:
                    raise self.writeback_error(ds + done, exc) from exc
                if got <= 0:
                    err = OSError(errno.EIO, "backing wrote 0 bytes")
                    raise self.writeback_error(ds + done, err) from err
                done += got
                advance_views(views, got)
                await anyio.lowlevel.checkpoint()
        finally:
            ino._inflight.remove(ds, de)
            op.event.set()
            ino._writeback_bytes -= taken_bytes
            unwritten = ds + done
            for s, e in taken:
                if e > unwritten:
                    ino._dirty.mark_dirty(max(s, unwritten), e)
            if done:
                svc.counters.writeback_bytes += done
                svc.observe_writeback(time.perf_counter() - t0)
            ino._report()
        return done

    def writeback_error(self, at: int, exc: BaseException) -> WritebackError:
        """Count a failed write-back request at ``at`` and name every range still dirty."""
        ino = self._ino
        ino._svc.counters.writeback_errors += 1
        # Raised from inside the run, before it puts its unwritten part back: name that too.
        still = [Range(s, e) for s, e, _k in ino._dirty.segments()]
        if not still or still[-1].end < at:
            still.append(Range(at, max(at + 1, ino._op_end_at(at))))
        return WritebackError(f"write-back at offset {at} failed: {exc}", still)

    async def write_out(self) -> None:
        """The body of :meth:`CachingInode.write_out`, which states the contract."""
        ino = self._ino
        async with ino._attr_lock:
            ino._check_open()
            await self.write_dirty_pages_and_attrs_locked()
        try:
            await ino._backing.sync()
        except Exception as exc:
            raise BackingError(f"sync failed: {exc}") from exc

    async def write_dirty_pages_and_attrs_locked(self) -> None:
        """Write back every dirty byte, then the dirty attributes (``write_out`` without the sync).

        Checkpoint: when anything is dirty. Cancellation: what was not written stays dirty and
        the attribute mask stays set. Requires: _attr_lock held.
        """
        ino = self._ino
        await self.write_back(0, MAX_OFFSET)
        if ino._dirty_attr:
            mask = AttrMask(ino._dirty_attr)
            try:
                await ino._backing.set_attributes(mask, ino.attrs, False)
            except Exception as exc:
                raise BackingError(f"writing attributes {mask} failed: {exc}") from exc
            # Only what was sent is clean: a touch during the await stays dirty.
            # Nothing can touch the mask meanwhile: _attr_lock is held (and the write fast
            # path stands aside while it is).
            ino._dirty_attr &= ~mask.value
