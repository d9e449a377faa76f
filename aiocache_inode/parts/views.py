"""Views, mappings and translation: pool pages handed out by reference.

A view maps its range, translates it (filling what is missing), pins the pool pages it hands out
and unpins them on exit; a truncate that drops a pinned page defers its free until then, so a
view never sees reused memory. ``translate`` is the seed's Translate over the pool.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, final

import anyio
import anyio.lowlevel

from ..errors import CacheError
from ..ranges import PAGE_MASK, Range, page_round_down, page_round_up

if TYPE_CHECKING:
    from types import TracebackType

    from ..mappings import MappingSpace
    from .core import (
        InodeCore,
    )
    from .fills import Fills


__all__ = [
    "SEED_FILL_WINDOW",
    "TranslateError",
    "Translation",
    "View",
    "Views",
    "aligned_range",
    "check_offset",
    "max_fill_range",
]

#: The seed's maxFillRange window for translate (64 KiB).
SEED_FILL_WINDOW: Final = 64 << 10


def max_fill_range(required: Range, optional: Range) -> Range:
    """The seed's readahead clamp: at most ``max(64 KiB, len(required))``. Complexity: O(1)."""
    if required.length >= SEED_FILL_WINDOW:
        return required
    if optional.length <= SEED_FILL_WINDOW:
        return optional
    if optional.end - required.start <= SEED_FILL_WINDOW:
        return Range(required.start, optional.end)
    return Range(required.start, required.start + SEED_FILL_WINDOW)


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
class View:
    """``async with inode.view(...)``: pins pages and yields memoryviews into the pool."""

    __slots__ = (
        "_inode",
        "_length",
        "_offset",
        "_ops",
        "_pinned",
        "_pr",
        "_space",
        "_views",
        "_writable",
    )

    def __init__(
        self, inode: InodeCore, ops: Views, offset: int, length: int, writable: bool
    ) -> None:
        self._inode = inode
        self._ops = ops
        self._offset = offset
        self._length = length
        self._writable = writable
        self._space = _ViewSpace()
        self._pr: Range | None = None
        self._pinned: list[tuple[int, int]] = []
        self._views: list[memoryview] = []

    async def __aenter__(self) -> list[memoryview]:
        """Map, translate and pin the range. Checkpoint: always. Cancellation: nothing mapped."""
        inode = self._inode
        inode._check_open()
        end = min(self._offset + self._length, inode._size)
        if end <= self._offset:
            return []
        pr = Range(page_round_down(self._offset), page_round_up(end))
        if not self._writable:
            self._ops.read_starting(self._offset, end)
        await self._ops.add_mapping(self._space, pr.start, pr.end, pr.start, self._writable)
        self._pr = pr
        try:
            ts = await self._ops.translate(pr, pr, self._writable)
        except BaseException:
            await self._unmap()
            raise
        if not self._writable:
            self._ops.read_done(self._offset, end)
        # Synchronous from here on: pin the pool pages so a truncate that drops them defers the
        # free until this view is released (the bytes stay valid memory, never reused).
        pool = inode._svc.pool
        lo, hi = self._offset, min(end, inode._size)
        for t in ts:
            self._ops.pin(t.pool_offset, t.source.length)
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
        """Release the views, unpin, unmap. Checkpoint: always. Cancellation: shielded unmap."""
        for v in self._views:
            v.release()
        self._views.clear()
        for off, length in self._pinned:
            self._ops.unpin(off, length)
        self._pinned.clear()
        await self._unmap()

    async def _unmap(self) -> None:
        pr = self._pr
        if pr is None:
            return
        self._pr = None
        # Must finish even when the holder is being cancelled: a leaked mapping pins pages forever.
        with anyio.CancelScope(shield=True):
            await self._ops.remove_mapping(self._space, pr.start, pr.end, pr.start, self._writable)


def aligned_range(start: int, end: int) -> Range:
    """``[start, end)`` as a Range, checked non-empty and page-aligned (ValueError if not)."""
    r = Range(start, end)
    if not r or not r.is_page_aligned():
        raise ValueError(f"mapping range [{start}, {end}) must be non-empty and page-aligned")
    return r


def check_offset(offset: int) -> None:
    """Raise ValueError unless ``offset`` is a non-negative page-aligned file offset."""
    if offset < 0 or offset & PAGE_MASK:
        raise ValueError(f"mapping offset {offset} must be page-aligned and non-negative")


@final
class Views:
    """Mappings, pins and translation of one inode."""

    __slots__ = (
        "_fills",
        "_ino",
    )

    def __init__(self, inode: InodeCore, fills: Fills) -> None:
        # The inode served, whose shared state (core.py) this part works on, and the parts
        # it calls. Immutable after __init__.
        self._ino = inode
        self._fills = fills

    def pin(self, pool_offset: int, length: int) -> None:
        """Pin pool pages a view hands out: dropped from the cache, they stay allocated."""
        ino = self._ino
        ino._pins.increment(pool_offset, pool_offset + length)

    def unpin(self, pool_offset: int, length: int) -> None:
        """Drop a pin; free what a drop deferred once its last pin is gone."""
        ino = self._ino
        released = ino._pins.decrement(pool_offset, pool_offset + length)
        if not ino._deferred_free or not released:
            return
        pool = ino._svc.pool
        for s, e in released:
            for ds, de, _ in ino._deferred_free.remove(s, e):
                pool.free(ds, de - ds)

    async def add_mapping(
        self, space: MappingSpace, start: int, end: int, offset: int, writable: bool
    ) -> None:
        """The body of :meth:`CachingInode.add_mapping`, which states the contract."""
        ino = self._ino
        ar = aligned_range(start, end)
        check_offset(offset)
        async with ino._map_lock:
            ino._check_open()
            ino._maps.add_mapping(space, ar, offset, writable)
            ino._report()

    async def remove_mapping(
        self, space: MappingSpace, start: int, end: int, offset: int, writable: bool
    ) -> None:
        """The body of :meth:`CachingInode.remove_mapping`, which states the contract."""
        ino = self._ino
        ar = aligned_range(start, end)
        async with ino._map_lock:
            unmapped = ino._maps.remove_mapping(space, ar, offset, writable)
            for r in unmapped:
                ino._dirty.allow_clean(r.start, r.end)
            ino._report()

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
        """The body of :meth:`CachingInode.copy_mapping`, which states the contract."""
        aligned_range(src_start, src_end)
        await self.add_mapping(space, dst_start, dst_end, offset, writable)

    def read_starting(self, offset: int, end: int) -> None:
        """A read-only view of ``[offset, end)`` is about to fill: readahead, if sequential.

        Views are how a server streams a file without copying, one window after another, so
        they read ahead as reads do: a view continuing where the last read ended tops the
        window up before it waits (as a stall when part of it is missing). Synchronous.
        """
        ino = self._ino
        if offset == ino._ra_next and ino._svc.tunables.readahead_max:
            missing = ino._cache.first_gap_from(page_round_down(offset), page_round_up(end))
            self._fills.readahead_async(end - offset, reader=end, stalled=missing is not None)

    def read_done(self, offset: int, end: int) -> None:
        """Readahead bookkeeping once a read-only view is pinned (as after a read)."""
        self._fills.after_read(offset, end)

    async def translate(self, required: Range, optional: Range, write: bool) -> list[Translation]:
        """The body of :meth:`CachingInode.translate`, which states the contract."""
        ino = self._ino
        if not (required and required.is_page_aligned() and optional.is_page_aligned()):
            raise ValueError("translate needs non-empty, page-aligned ranges")
        if not optional.is_superset_of(required):
            raise ValueError("optional must contain required")
        ino._check_open()
        pgend = page_round_up(ino._size)
        if required.start >= pgend:
            await anyio.lowlevel.checkpoint()
            raise TranslateError("translate past EOF", [])
        beyond_eof = required.end > pgend
        if beyond_eof:
            required = Range(required.start, pgend)
        optional = Range(optional.start, min(optional.end, pgend))
        window = max_fill_range(required, optional)
        fill_err = await self._fills.ensure_cached(required.start, required.end, window.end)
        await anyio.lowlevel.checkpoint()
        # Synchronous from here: the walk sees the cache exactly as the fill left it.
        out: list[Translation] = []
        pos = required.start
        while pos < required.end:
            seg = ino._cache.find(pos)
            if seg is None:
                break
            s, e, fr = seg
            src_s = max(s, optional.start)
            src_e = min(e, optional.end)
            out.append(Translation(Range(src_s, src_e), fr + (src_s - s), write))
            if write and src_s < ino._size:
                # Bytes past EOF in the last page are not file data: stores there are lost, as
                # with mmap, so they are never dirty (they could not be written back).
                ino._dirty.keep_dirty(src_s, min(src_e, ino._size))
            pos = e
        translated_end = out[-1].source.end if out else required.start
        ino._report()
        if translated_end < required.end:
            if fill_err is not None:
                raise TranslateError(f"fill failed: {fill_err}", out) from fill_err
            raise TranslateError("range not cached (evicted or truncated meanwhile)", out)
        if beyond_eof:
            raise TranslateError("translate reaches past EOF", out)
        return out
