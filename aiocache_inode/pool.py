"""The memory pool: page-aligned extents carved from anonymous ``mmap`` arenas.

This is the library's "MemoryFile" (gVisor ``pkg/sentry/pgalloc``): every cached page of every
inode lives in one :class:`MemoryPool`. Pool offsets are global; arena ``i`` covers
``[i * arena_size, (i + 1) * arena_size)``, so an offset names its arena by one division.

Allocation is address-ordered best fit over a free-extent index (Wilson et al., "Dynamic Storage
Allocation: A Survey", 1995, found it among the least fragmenting policies): the smallest free
extent that fits, lowest address first, carved from its low end. A request no free extent fits
opens a new arena rather than being scattered over small holes, so callers get one contiguous
extent whenever the request fits in an arena.

Freed space goes back to the OS with ``madvise(MADV_DONTNEED)`` so resident memory really falls,
and an arena that becomes entirely free is unmapped (unless it is the last one) so address space
falls too. Up to ``warm_bytes`` of the most recently freed space is kept resident first (a warm
reserve, dropped oldest first): writing into a page the OS must fault in and zero cost 3.7 us
per 4 KiB page here, into a resident one 0.56 us, and best fit hands out the small holes
eviction leaves before untouched space, so in a full cache most fills and appends land on warm
pages. :meth:`drop_warm` gives the reserve back at once (``CacheStore.shrink`` and host memory
pressure call it). pgalloc instead decommits from a background goroutine; here ``madvise`` of a
few pages costs microseconds, less than the bookkeeping of deferring it further.
``allocate(..., populate=True)`` faults fresh pages in with one ``MADV_POPULATE_WRITE`` (Linux
5.14+) instead of one fault per page: 2.2 us per page plus a 0.56 us copy against 3.7 us, for
callers about to write the pages on this thread anyway (the append reservation). The arenas are
``MAP_PRIVATE | MAP_ANONYMOUS`` on purpose: Python's default for ``mmap(-1, n)`` is ``MAP_SHARED``,
whose pages live in shmem, and ``MADV_DONTNEED`` on a shared mapping only drops the page-table
entries while the memory stays allocated (it would need ``MADV_REMOVE``). ``MADV_FREE`` was
rejected too: it frees only under pressure, so resident memory would not visibly fall.

Not thread-safe: every method is synchronous and runs in the event-loop thread (the
:class:`~aiocache_inode.store.CacheStore` owns the pool), so each call is atomic with respect to
other tasks. Views handed out are plain buffers and may be filled from worker threads.
"""

from __future__ import annotations

import collections
import mmap
from dataclasses import dataclass
from typing import Final, final

from sortedcontainers import SortedDict, SortedList

from .errors import CacheError, ClosedError
from .ranges import PAGE_MASK, PAGE_SIZE

__all__ = ["DEFAULT_ARENA_SIZE", "MemoryPool", "PoolStatistics"]

# Tunables.
#: Bytes per arena. Large enough that a cache of a few GiB needs few arenas (the ``view`` hot path
#: indexes a list of them), small enough that unmapping an empty one returns a useful amount.
DEFAULT_ARENA_SIZE: Final = 64 << 20  # 64 MiB
#: Zeros written per slice assignment by ``fill_zero``: one reusable buffer, no per-call bytes.
_ZERO_CHUNK: Final = 64 << 10  # 64 KiB

_PAGE_SHIFT: Final = PAGE_SIZE.bit_length() - 1
# madvise wants starts aligned to the host page, which may exceed PAGE_SIZE (arm64 with 16 KiB or
# 64 KiB pages); on x86-64 the two are equal and the rounding below is a no-op.
_HOST_PAGE_MASK: Final = max(mmap.PAGESIZE, PAGE_SIZE) - 1
_MADV_DONTNEED: Final[int | None] = getattr(mmap, "MADV_DONTNEED", None)
# Linux 5.14's MADV_POPULATE_WRITE; Python 3.11's mmap module does not name it.
_MADV_POPULATE_WRITE: Final[int | None] = (
    getattr(mmap, "MADV_POPULATE_WRITE", 23) if _MADV_DONTNEED is not None else None
)
_MAP_FLAGS: Final[int | None] = (
    mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    if hasattr(mmap, "MAP_PRIVATE") and hasattr(mmap, "MAP_ANONYMOUS")
    else None
)
_ZEROS: Final = memoryview(bytes(_ZERO_CHUNK))


@final
@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """A snapshot of a :class:`MemoryPool`'s accounting."""

    #: Bytes handed out by ``allocate`` and not yet freed.
    used_bytes: int
    #: Bytes of mapped arenas (``used_bytes + free_bytes``).
    arena_bytes: int
    #: Bytes of mapped arenas not allocated.
    free_bytes: int
    #: Arenas currently mapped.
    arenas: int
    #: Maximal free extents (a fragmentation measure: 1 per arena is ideal).
    free_extents: int
    #: Successful ``allocate`` calls since the pool was created.
    allocations: int
    #: Successful ``free`` calls since the pool was created.
    frees: int
    #: ``madvise(MADV_DONTNEED)`` calls made to give freed pages back to the OS.
    madvise_calls: int
    #: Entirely free arenas kept mapped because a caller still holds a view into them.
    deferred_unmaps: int
    #: Freed bytes kept resident for reuse (an upper bound: some may be allocated again).
    warm_bytes: int = 0


@final
class _Arena:
    """One anonymous mapping and the bookkeeping of its free space.

    Invariants (checked by :meth:`MemoryPool.check_invariants`):
        ``pages[p] == 0`` exactly for the pages ``p`` covered by ``free``;
        ``free_bytes == sum(free.values())``; ``free`` is coalesced (no two extents touch).
    """

    __slots__ = ("base", "free", "free_bytes", "index", "mm", "pages", "view")

    def __init__(self, index: int, base: int, mm: mmap.mmap, size: int) -> None:
        # Immutable after __init__.
        self.index = index
        self.base = base
        self.mm = mm
        # Our own view of the whole mapping, sliced by MemoryPool.view; released before closing,
        # because a live memoryview makes mmap.close() raise BufferError.
        self.view = memoryview(mm)
        # Free extents: pool offset -> length, coalesced.
        self.free = SortedDict({base: size})
        self.free_bytes = size
        # One byte per page, 1 where allocated: lets view() check "allocated" with one C-level
        # bytearray.find instead of an O(log n) walk of `free` in Python (about 3x cheaper).
        self.pages = bytearray(size >> _PAGE_SHIFT)


@final
class MemoryPool:
    """Page-aligned extents of anonymous memory, allocated and freed by pool offset.

    The pool maps no memory until the first :meth:`allocate`. Contents of newly allocated space
    are unspecified (zero on Linux, where freed pages are dropped with ``MADV_DONTNEED``).

    Example:
        >>> pool = MemoryPool(arena_size=1 << 20)
        >>> [(offset, length)] = pool.allocate(8192)
        >>> pool.view(offset, 5)[:] = b"hello"
        >>> bytes(pool.view(offset, 5))
        b'hello'
        >>> pool.free(offset, length)
        >>> pool.close()
    """

    __slots__ = (
        "_allocations",
        "_arena_size",
        "_arenas",
        "_by_size",
        "_closed",
        "_deferred",
        "_frees",
        "_live",
        "_madvise_calls",
        "_mapped",
        "_one_pages",
        "_populate",
        "_used",
        "_warm",
        "_warm_bytes",
        "_warm_limit",
        "_zero_pages",
    )

    # Invariants (executable in check_invariants):
    #   _used + sum(a.free_bytes for live arenas a) == _mapped == _live * _arena_size
    #   _by_size == {(length, offset) for every free extent of every live arena}
    #   an entirely free arena is the only live one, or its index is in _deferred
    #   not _arenas or _arenas[-1] is not None
    #   _warm_bytes == sum(end - start for start, end in _warm) <= _warm_limit

    def __init__(self, *, arena_size: int = DEFAULT_ARENA_SIZE, warm_bytes: int = 0) -> None:
        """Create an empty pool whose arenas are ``arena_size`` bytes each.

        ``warm_bytes`` of the most recently freed space stay resident for reuse (0: every free
        gives its pages back at once).

        Raises:
            ValueError: ``arena_size`` is not a positive multiple of ``PAGE_SIZE``, or
                ``warm_bytes`` is negative.
        """
        if arena_size <= 0 or arena_size & PAGE_MASK:
            raise ValueError(f"arena_size {arena_size} is not a positive multiple of {PAGE_SIZE}")
        if not isinstance(warm_bytes, int) or warm_bytes < 0:
            raise ValueError(f"warm_bytes {warm_bytes!r} is not a non-negative integer")
        self._warm_limit = warm_bytes
        # Immutable after __init__.
        self._arena_size = arena_size
        self._zero_pages = memoryview(bytes(arena_size >> _PAGE_SHIFT))
        self._one_pages = memoryview(b"\x01" * (arena_size >> _PAGE_SHIFT))
        # Arena i covers pool offsets [i * arena_size, (i + 1) * arena_size); None once unmapped.
        self._arenas: list[_Arena | None] = []
        # Every free extent of every arena as (length, offset): best fit is one bisect.
        self._by_size = SortedList()
        # Indices of entirely free arenas whose unmapping failed (a caller holds a view); retried
        # by free() and trim(). May hold arenas allocated from since (no longer entirely free);
        # trim() drops those.
        self._deferred: set[int] = set()
        self._used = 0
        self._mapped = 0
        self._live = 0
        self._allocations = 0
        self._frees = 0
        self._madvise_calls = 0
        # Freed ranges (start, end) whose pages were not given back yet, oldest first. A range
        # may since have been allocated again, wholly or partly; dropping it later madvises only
        # what is still free then, so the reserve never drops a page in use.
        self._warm: collections.deque[tuple[int, int]] = collections.deque()
        self._warm_bytes = 0
        # False once the kernel refused MADV_POPULATE_WRITE (older than 5.14).
        self._populate = _MADV_POPULATE_WRITE is not None
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self._live} arenas"
        return f"<MemoryPool {state}, {self._used} of {self._mapped} bytes used>"

    def __enter__(self) -> MemoryPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------
    # Accounting

    @property
    def arena_size(self) -> int:
        """Bytes per arena; no extent is longer. Complexity: O(1)."""
        return self._arena_size

    @property
    def used_bytes(self) -> int:
        """Bytes allocated and not yet freed. Complexity: O(1)."""
        return self._used

    @property
    def arena_bytes(self) -> int:
        """Bytes of mapped arenas, allocated or free. Complexity: O(1)."""
        return self._mapped

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called. Complexity: O(1)."""
        return self._closed

    def statistics(self) -> PoolStatistics:
        """A snapshot of the pool's accounting; works after :meth:`close` too.

        Complexity: O(d); d arenas whose unmapping was deferred (normally 0).
        """
        size = self._arena_size
        arenas = self._arenas
        deferred = sum(
            1
            for index in self._deferred
            if (arena := arenas[index]) is not None and arena.free_bytes == size
        )
        return PoolStatistics(
            used_bytes=self._used,
            arena_bytes=self._mapped,
            free_bytes=self._mapped - self._used,
            arenas=self._live,
            free_extents=len(self._by_size),
            allocations=self._allocations,
            frees=self._frees,
            madvise_calls=self._madvise_calls,
            deferred_unmaps=deferred,
            warm_bytes=self._warm_bytes,
        )

    # ------------------------------------------------------------------------------------------
    # Allocation

    def allocate(self, length: int, *, populate: bool = False) -> list[tuple[int, int]]:
        """Allocate ``length`` bytes as few ``(pool_offset, length)`` extents as possible.

        ``populate`` faults the pages in now, with one ``madvise`` per extent, for a caller about
        to write them on this thread (pages already resident cost nothing more).

        A request of at most ``arena_size`` bytes gets one extent: the best-fitting free extent,
        or a new arena when none fits. A larger request is served in ``arena_size`` chunks, one
        extent each, ``ceil(length / arena_size)`` in all. Only when the OS refuses a new arena
        are the remaining bytes gathered from smaller free extents (largest first), if enough
        free space exists; that is better than failing with memory to spare.

        Complexity: O(e log n); e extents returned, n free extents (plus an ``mmap`` per new
        arena, and O(k) ``bytearray`` work over the k pages allocated).

        Raises:
            ValueError: ``length`` is not a positive multiple of ``PAGE_SIZE``.
            CacheError: the OS refused memory (the ``OSError`` or ``MemoryError`` is
                ``__cause__``); the pool is unchanged.
            ClosedError: the pool was closed.
        """
        self._check_open()
        if length <= 0 or length & PAGE_MASK:
            raise ValueError(f"length {length} is not a positive multiple of {PAGE_SIZE}")
        size = self._arena_size
        extents: list[tuple[int, int]] = []
        opened: list[_Arena] = []
        remaining = length
        try:
            while remaining:
                chunk = min(remaining, size)
                extent = self._take_best_fit(chunk)
                if extent is None:
                    try:
                        arena = self._open_arena()
                    except CacheError:
                        if self._mapped - self._used < remaining:
                            raise
                        self._take_fragments(remaining, extents)
                        break
                    opened.append(arena)
                    self._carve(arena, arena.base, size, chunk)
                    extent = (arena.base, chunk)
                extents.append(extent)
                remaining -= chunk
        except BaseException:
            # Roll back: give the carved space back (it was never written, so no madvise) and
            # unmap the arenas this call opened. Free extents are kept coalesced, so the index
            # ends up exactly as before.
            for offset, n in extents:
                owner = self._arenas[offset // size]
                assert owner is not None
                self._release(owner, offset, n)
            for arena in reversed(opened):
                self._close_arena(arena)
            raise
        self._allocations += 1
        if populate and self._populate:
            self._populate_extents(extents)
        return extents

    def _populate_extents(self, extents: list[tuple[int, int]]) -> None:
        """Fault ``extents`` in with MADV_POPULATE_WRITE; stop trying if the kernel refuses."""
        assert _MADV_POPULATE_WRITE is not None
        size = self._arena_size
        for offset, n in extents:
            arena = self._arenas[offset // size]
            assert arena is not None
            try:
                arena.mm.madvise(_MADV_POPULATE_WRITE, offset - arena.base, n)
            except OSError:
                # EINVAL before Linux 5.14; ENOMEM under memory pressure. Only a hint either
                # way: the pages fault in when written.
                self._populate = False
                return

    def _take_best_fit(self, length: int) -> tuple[int, int] | None:
        """Carve ``length`` bytes from the smallest free extent that fits, or return None.

        Complexity: O(log n); n free extents.
        """
        by_size = self._by_size
        i = by_size.bisect_left((length, -1))
        if i == len(by_size):
            return None
        found_length: int
        found_offset: int
        found_length, found_offset = by_size[i]
        arena = self._arenas[found_offset // self._arena_size]
        assert arena is not None
        self._carve(arena, found_offset, found_length, length)
        return (found_offset, length)

    def _take_fragments(self, length: int, extents: list[tuple[int, int]]) -> None:
        """Carve ``length`` bytes from the largest free extents, appending them to ``extents``.

        Requires: at least ``length`` free bytes. Complexity: O(e log n).
        """
        by_size = self._by_size
        size = self._arena_size
        while length:
            found_length: int
            found_offset: int
            found_length, found_offset = by_size[-1]
            n = min(found_length, length)
            arena = self._arenas[found_offset // size]
            assert arena is not None
            self._carve(arena, found_offset, found_length, n)
            extents.append((found_offset, n))
            length -= n

    def _carve(self, arena: _Arena, offset: int, free_length: int, length: int) -> None:
        """Mark the low ``length`` bytes of the free extent ``(offset, free_length)`` allocated.

        Complexity: O(log n + k); k pages.
        """
        free = arena.free
        by_size = self._by_size
        del free[offset]
        by_size.remove((free_length, offset))
        if free_length > length:
            free[offset + length] = free_length - length
            by_size.add((free_length - length, offset + length))
        first = (offset - arena.base) >> _PAGE_SHIFT
        count = length >> _PAGE_SHIFT
        arena.pages[first : first + count] = self._one_pages[:count]
        arena.free_bytes -= length
        self._used += length

    def _open_arena(self) -> _Arena:
        """Map a new arena in the lowest unused slot.

        Complexity: O(a); a arena slots (plus the ``mmap`` call).

        Raises:
            CacheError: ``mmap`` failed; nothing changed.
        """
        size = self._arena_size
        arenas = self._arenas
        # Reuse the lowest vacant slot so pool offsets stay small and the list short.
        index = next((i for i, arena in enumerate(arenas) if arena is None), len(arenas))
        try:
            if _MAP_FLAGS is None:
                mm = mmap.mmap(-1, size)
            else:
                mm = mmap.mmap(-1, size, flags=_MAP_FLAGS)
        except (OSError, MemoryError) as exc:
            raise CacheError(f"the OS refused a {size}-byte memory arena: {exc!r}") from exc
        arena = _Arena(index, index * size, mm, size)
        if index == len(arenas):
            arenas.append(arena)
        else:
            arenas[index] = arena
        self._by_size.add((size, arena.base))
        self._mapped += size
        self._live += 1
        return arena

    # ------------------------------------------------------------------------------------------
    # Freeing

    def free(self, offset: int, length: int) -> None:
        """Return ``[offset, offset + length)`` to the pool and its pages to the OS.

        The range may be any page-aligned part of allocated space inside one arena: a whole
        extent, part of one, or neighbouring extents together. It is coalesced with free
        neighbours and dropped with ``madvise(MADV_DONTNEED)``; an arena left entirely free is
        unmapped unless it is the only one (or, if a caller still holds a view into it, as soon
        as a later :meth:`free` or :meth:`trim` finds the view gone). Views into freed space stay
        valid buffers but read zeros (on Linux), later the bytes of whoever allocates the space.

        Complexity: O(log n + k); n free extents, k pages freed (plus one ``madvise``).

        Raises:
            ValueError: the range is not page-aligned, not inside one mapped arena, or not
                entirely allocated (a double free); nothing changed.
            ClosedError: the pool was closed.
        """
        self._check_open()
        if length <= 0 or offset < 0 or (offset | length) & PAGE_MASK:
            raise ValueError(f"free({offset:#x}, {length:#x}): not a page-aligned range")
        size = self._arena_size
        index, start = divmod(offset, size)
        arena = self._arenas[index] if index < len(self._arenas) else None
        if arena is None or start + length > size:
            raise ValueError(f"free({offset:#x}, {length:#x}): not inside one mapped arena")
        first = start >> _PAGE_SHIFT
        if arena.pages.find(0, first, first + (length >> _PAGE_SHIFT)) >= 0:
            raise ValueError(f"free({offset:#x}, {length:#x}): not allocated (double free?)")
        free_start, free_end = self._release(arena, offset, length)
        self._frees += 1
        if arena.free_bytes == size and self._live > 1:
            # Entirely free: unmap it, now or (if a caller holds a view) on a later retry.
            self._deferred.add(index)
        if self._deferred:
            self.trim()
        if arena.mm.closed:
            return
        if not self._warm_limit:
            self._madvise(arena, offset, offset + length, free_start, free_end)
            return
        self._warm.append((offset, offset + length))
        self._warm_bytes += length
        while self._warm_bytes > self._warm_limit:
            self._drop_oldest_warm()

    def _drop_oldest_warm(self) -> None:
        """Give back the still-free pages of the oldest warm range. Complexity: O(log n + k)."""
        start, end = self._warm.popleft()
        self._warm_bytes -= end - start
        index = start // self._arena_size
        arena = self._arenas[index] if index < len(self._arenas) else None
        if arena is None or arena.mm.closed:
            return  # unmapped since: nothing resident left
        free = arena.free
        i = free.bisect_right(start) - 1
        if i < 0:
            i = 0
        keys = free.keys()
        while i < len(keys):
            f_start: int = keys[i]
            f_end = f_start + free[f_start]
            if f_start >= end:
                break
            if f_end > start:
                self._madvise(arena, max(start, f_start), min(end, f_end), f_start, f_end)
            i += 1

    def drop_warm(self) -> int:
        """Give every warm page back to the OS now; returns the bytes the reserve held.

        Complexity: O(w (log n + k)); w warm ranges.

        Raises:
            ClosedError: the pool was closed.
        """
        self._check_open()
        held = self._warm_bytes
        while self._warm:
            self._drop_oldest_warm()
        return held

    def _release(self, arena: _Arena, offset: int, length: int) -> tuple[int, int]:
        """Mark ``[offset, offset + length)`` free, coalescing; return the merged free extent.

        Requires: the range is allocated. Complexity: O(log n + k); k pages.
        """
        free = arena.free
        by_size = self._by_size
        start = offset
        end = offset + length
        i = free.bisect_right(offset)
        if i:
            prev_start: int
            prev_length: int
            prev_start, prev_length = free.peekitem(i - 1)
            if prev_start + prev_length == offset:
                del free[prev_start]
                by_size.remove((prev_length, prev_start))
                start = prev_start
        next_length: int | None = free.pop(end, None)
        if next_length is not None:
            by_size.remove((next_length, end))
            end += next_length
        free[start] = end - start
        by_size.add((end - start, start))
        first = (offset - arena.base) >> _PAGE_SHIFT
        count = length >> _PAGE_SHIFT
        arena.pages[first : first + count] = self._zero_pages[:count]
        arena.free_bytes += length
        self._used -= length
        return start, end

    def _madvise(self, arena: _Arena, start: int, end: int, free_start: int, free_end: int) -> None:
        """Drop the host pages of freed ``[start, end)``, part of free ``[free_start, free_end)``.

        Complexity: O(1) Python steps; the kernel's work is O(k) in pages.
        """
        if _MADV_DONTNEED is None:
            return
        mask = _HOST_PAGE_MASK
        base = arena.base
        # Widen to host pages that are entirely free, so nothing allocated is ever dropped.
        lo = max(free_start, start & ~mask) - base
        hi = min(free_end, (end + mask) & ~mask) - base
        lo = (lo + mask) & ~mask
        hi &= ~mask
        if lo >= hi:
            return
        try:
            arena.mm.madvise(_MADV_DONTNEED, lo, hi - lo)
        except OSError:
            # Only a hint: the pages stay resident, contents are still correct.
            return
        self._madvise_calls += 1

    def trim(self) -> int:
        """Retry unmapping entirely free arenas that callers' views kept mapped.

        :meth:`free` retries on its own; call this after releasing long-held views to give the
        address space back sooner. Returns how many arenas were unmapped.

        Complexity: O(d + a); d deferred arenas, a arena slots.

        Raises:
            ClosedError: the pool was closed.
        """
        self._check_open()
        size = self._arena_size
        unmapped = 0
        for index in sorted(self._deferred):
            self._deferred.discard(index)
            arena = self._arenas[index] if index < len(self._arenas) else None
            if arena is None or arena.free_bytes != size or self._live <= 1:
                continue
            if self._close_arena(arena):
                unmapped += 1
            else:
                self._deferred.add(index)
        return unmapped

    def _close_arena(self, arena: _Arena) -> bool:
        """Unmap an entirely free arena; False (arena still mapped) if a view holds it.

        Complexity: O(a); a arena slots (trailing empty slots are dropped).
        """
        try:
            arena.view.release()
            arena.mm.close()
        except BufferError:
            # A caller's view (a slice of ours) keeps the mapping exported; keep the arena usable.
            arena.view = memoryview(arena.mm)
            return False
        size = self._arena_size
        self._by_size.remove((size, arena.base))
        arenas = self._arenas
        arenas[arena.index] = None
        while arenas and arenas[-1] is None:
            arenas.pop()
        self._mapped -= size
        self._live -= 1
        return True

    # ------------------------------------------------------------------------------------------
    # Access

    def view(self, offset: int, length: int) -> memoryview:
        """A writable, zero-copy view of the pool bytes ``[offset, offset + length)``.

        The bytes must lie inside one arena and every page they touch must be allocated; they
        need not be page-aligned. Release the view (``with`` or ``.release()``) when done: a
        view held after its space is freed keeps that arena mapped.

        Hot path: called for every cache hit; no helper calls on success, attributes bound to
        locals. Complexity: O(1) Python steps plus a C-level scan of one byte per page touched.

        Raises:
            ValueError: the range is outside every arena, crosses arenas, or touches
                unallocated pages.
            ClosedError: the pool was closed.
        """
        size = self._arena_size
        index, start = divmod(offset, size)
        end = start + length
        arenas = self._arenas
        if 0 <= index < len(arenas) and length >= 0 and end <= size:
            arena = arenas[index]
            if (
                arena is not None
                and arena.pages.find(0, start >> _PAGE_SHIFT, (end + PAGE_MASK) >> _PAGE_SHIFT) < 0
            ):
                return arena.view[start:end]
        raise self._access_error("view", offset, length)

    def locate(self, offset: int) -> tuple[memoryview, int]:
        """The whole arena holding ``offset`` as a memoryview, and ``offset``'s place in it.

        Unchecked: for callers that hold the pages by invariant (the cache hit path keeps the
        result for a cached segment and forgets it when the segment is dropped), so a hit costs
        one slice instead of a checked :meth:`view`. Complexity: O(1).

        Raises:
            ValueError: no arena holds ``offset``.
        """
        index, start = divmod(offset, self._arena_size)
        arenas = self._arenas
        if 0 <= index < len(arenas):
            arena = arenas[index]
            if arena is not None:
                return arena.view, start
        raise self._access_error("locate", offset, 0)

    def fill_zero(self, offset: int, length: int) -> None:
        """Write zeros over ``[offset, offset + length)``, which must be allocated.

        Complexity: O(length) byte copies, in ``_ZERO_CHUNK`` slices.

        Raises:
            ValueError: as for :meth:`view`.
            ClosedError: the pool was closed.
        """
        target = self.view(offset, length)
        with target:
            zeros = _ZEROS
            for pos in range(0, length, _ZERO_CHUNK):
                n = min(_ZERO_CHUNK, length - pos)
                target[pos : pos + n] = zeros[:n]

    def _access_error(self, what: str, offset: int, length: int) -> Exception:
        """The exception for a rejected access (cold path of :meth:`view`)."""
        if self._closed:
            return ClosedError("the memory pool is closed")
        where = f"{what}({offset:#x}, {length:#x})"
        if length < 0:
            return ValueError(f"{where}: negative length")
        size = self._arena_size
        index, start = divmod(offset, size)
        if offset < 0 or index >= len(self._arenas) or self._arenas[index] is None:
            return ValueError(f"{where}: outside every mapped arena")
        if start + length > size:
            return ValueError(f"{where}: crosses an arena boundary")
        return ValueError(f"{where}: touches unallocated pages")

    # ------------------------------------------------------------------------------------------
    # Lifecycle and checking

    def close(self) -> None:
        """Unmap every arena; later calls other than observers raise :class:`ClosedError`.

        Idempotent. An arena a caller still holds a view into cannot be unmapped now; it is
        dropped from the pool and unmapped by CPython when the last view goes. The counters and
        :meth:`statistics` stay readable (zero bytes used and mapped).

        Complexity: O(a); a arenas.
        """
        if self._closed:
            return
        self._closed = True
        for arena in self._arenas:
            if arena is None:
                continue
            try:
                arena.view.release()
                arena.mm.close()
            except BufferError:
                # A caller's view holds it; the mmap object unmaps itself when that view dies.
                pass
        self._arenas = []
        self._by_size.clear()
        self._deferred.clear()
        self._warm.clear()
        self._warm_bytes = 0
        self._used = 0
        self._mapped = 0
        self._live = 0

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the memory pool is closed")

    def check_invariants(self) -> None:
        """Check every bookkeeping invariant; for tests.

        Free and allocated space are disjoint and together cover every arena (the page map agrees
        with the free index), free extents are coalesced, and the counters match.

        Complexity: O(n log n + p); n free extents, p pages in all arenas.

        Raises:
            AssertionError: an invariant does not hold.
        """

        def check(ok: bool, message: str) -> None:
            if not ok:
                raise AssertionError(message)

        size = self._arena_size
        arenas = self._arenas
        check(not arenas or arenas[-1] is not None, "trailing empty arena slot")
        live = [arena for arena in arenas if arena is not None]
        check(len(live) == self._live, f"{len(live)} arenas mapped, counter says {self._live}")
        check(self._mapped == self._live * size, "arena_bytes does not match the arena count")
        check(not self._closed or not live, "closed pool still holds arenas")
        expected_by_size: list[tuple[int, int]] = []
        used = 0
        for arena in live:
            i = arena.index
            check(arenas[i] is arena and arena.base == i * size, f"arena {i} misplaced")
            check(not arena.mm.closed and len(arena.mm) == size, f"arena {i} not mapped")
            check(arena.view.nbytes == size and not arena.view.readonly, f"arena {i} view")
            check(len(arena.pages) == size >> _PAGE_SHIFT, f"arena {i} page map size")
            total = 0
            previous_end = -1
            for start, n in arena.free.items():
                end = start + n
                check(n > 0 and not (start | n) & PAGE_MASK, f"bad free extent {start:#x}+{n:#x}")
                check(arena.base <= start and end <= arena.base + size, "free extent escapes arena")
                check(start > previous_end, f"free extents at {start:#x} overlap or touch")
                first = (start - arena.base) >> _PAGE_SHIFT
                check(
                    arena.pages.find(1, first, first + (n >> _PAGE_SHIFT)) < 0,
                    f"free extent {start:#x}+{n:#x} overlaps allocated pages",
                )
                expected_by_size.append((n, start))
                total += n
                previous_end = end
            check(total == arena.free_bytes, f"arena {i} free_bytes {arena.free_bytes} != {total}")
            # Every page not covered by a free extent must be marked allocated.
            check(
                arena.pages.count(0) << _PAGE_SHIFT == total,
                f"arena {i} page map disagrees with its free extents",
            )
            check(
                total < size or self._live == 1 or i in self._deferred,
                f"arena {i} is entirely free but still mapped",
            )
            used += size - total
        check(used == self._used, f"used_bytes {self._used} != allocated {used}")
        check(
            list(self._by_size) == sorted(expected_by_size), "size index disagrees with free lists"
        )
        for index in self._deferred:
            check(index < len(arenas) and arenas[index] is not None, "deferred arena unmapped")
        warm = sum(end - start for start, end in self._warm)
        check(warm == self._warm_bytes, f"warm_bytes {self._warm_bytes} != its ranges' {warm}")
        check(self._warm_bytes <= self._warm_limit, "warm reserve over its limit")
