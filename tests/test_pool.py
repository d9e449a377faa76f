"""Tests for aiocache_inode.pool: the extent allocator over mmap arenas."""

from __future__ import annotations

import errno
import mmap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import note
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from aiocache_inode import pool as pool_module
from aiocache_inode.errors import CacheError, ClosedError
from aiocache_inode.pool import MemoryPool, PoolStatistics
from aiocache_inode.ranges import PAGE_SIZE

if TYPE_CHECKING:
    from collections.abc import Callable

P = PAGE_SIZE

needs_madvise = pytest.mark.skipif(
    not hasattr(mmap, "MADV_DONTNEED"), reason="freed pages are zeroed only with MADV_DONTNEED"
)


def _status_bytes(field: str) -> int:
    """A ``kB`` field of /proc/self/status, in bytes; skips the test where there is none."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        pytest.skip("no /proc/self/status")
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    pytest.skip(f"/proc/self/status has no {field}")


def _fill(pool: MemoryPool, offset: int, length: int, value: int) -> None:
    with pool.view(offset, length) as view:
        view[:] = bytes([value]) * length


def _read(pool: MemoryPool, offset: int, length: int) -> bytes:
    with pool.view(offset, length) as view:
        return view.tobytes()


def _refuse(error: BaseException) -> Callable[..., mmap.mmap]:
    def refuse(*args: Any, **kwargs: Any) -> mmap.mmap:
        raise error

    return refuse


class TestMemoryPool:
    @pytest.mark.parametrize("arena_size", [0, -P, 100, P + 1])
    def test_arena_size_must_be_positive_page_multiple(self, arena_size: int) -> None:
        with pytest.raises(ValueError, match="arena_size"):
            MemoryPool(arena_size=arena_size)

    @pytest.mark.parametrize("length", [0, -P, 1, P + 1])
    def test_allocate_rejects_bad_lengths(self, length: int) -> None:
        with MemoryPool(arena_size=4 * P) as pool:
            with pytest.raises(ValueError, match="multiple"):
                pool.allocate(length)
            assert pool.statistics().allocations == 0
            pool.check_invariants()

    def test_maps_lazily_and_serves_one_extent(self) -> None:
        with MemoryPool(arena_size=8 * P) as pool:
            assert pool.arena_bytes == 0
            assert pool.allocate(3 * P) == [(0, 3 * P)]
            assert pool.allocate(5 * P) == [(3 * P, 5 * P)]
            assert (pool.used_bytes, pool.arena_bytes) == (8 * P, 8 * P)
            assert pool.statistics() == PoolStatistics(
                used_bytes=8 * P,
                arena_bytes=8 * P,
                free_bytes=0,
                arenas=1,
                free_extents=0,
                allocations=2,
                frees=0,
                madvise_calls=0,
                deferred_unmaps=0,
            )
            pool.check_invariants()

    def test_opens_new_arena_rather_than_scatter(self) -> None:
        with MemoryPool(arena_size=4 * P) as pool:
            pool.allocate(4 * P)
            pool.free(0, P)
            pool.free(2 * P, P)
            # Two free pages exist, but not contiguous: a new arena gives one extent.
            assert pool.allocate(2 * P) == [(4 * P, 2 * P)]
            assert pool.statistics().arenas == 2
            pool.check_invariants()

    def test_large_allocation_spans_arenas(self) -> None:
        with MemoryPool(arena_size=4 * P) as pool:
            extents = pool.allocate(10 * P)
            assert [n for _, n in extents] == [4 * P, 4 * P, 2 * P]
            assert len({offset // (4 * P) for offset, _ in extents}) == 3
            assert pool.statistics().arenas == 3
            pool.check_invariants()

    def test_best_fit_takes_the_smallest_hole(self) -> None:
        with MemoryPool(arena_size=16 * P) as pool:
            pool.allocate(16 * P)
            pool.free(P, 3 * P)
            pool.free(6 * P, 2 * P)
            pool.free(10 * P, 4 * P)
            assert pool.allocate(2 * P) == [(6 * P, 2 * P)]
            assert pool.allocate(3 * P) == [(P, 3 * P)]
            assert pool.allocate(3 * P) == [(10 * P, 3 * P)]
            assert pool.statistics().free_extents == 1
            pool.check_invariants()

    def test_free_coalesces_neighbours(self) -> None:
        with MemoryPool(arena_size=8 * P) as pool:
            pool.allocate(8 * P)
            expected_extents = [1, 2, 1, 1]  # after freeing pages 1, 3, 2, then 0
            for page, expected in zip([1, 3, 2, 0], expected_extents, strict=True):
                pool.free(page * P, P)
                assert pool.statistics().free_extents == expected
                pool.check_invariants()
            assert pool.allocate(4 * P) == [(0, 4 * P)]

    def test_free_may_span_neighbouring_allocations(self) -> None:
        with MemoryPool(arena_size=8 * P) as pool:
            [(a, _)] = pool.allocate(2 * P)
            [(b, _)] = pool.allocate(2 * P)
            assert b == a + 2 * P
            pool.free(a + P, 2 * P)  # the tail of one and the head of the other
            assert pool.used_bytes == 2 * P
            _fill(pool, a, P, 1)
            _fill(pool, b + P, P, 2)
            pool.check_invariants()

    def test_double_free_raises_and_changes_nothing(self) -> None:
        with MemoryPool(arena_size=8 * P) as pool:
            [(a, n)] = pool.allocate(4 * P)
            [(b, _)] = pool.allocate(2 * P)
            _fill(pool, b, 2 * P, 7)
            pool.free(a, n)
            before = pool.statistics()
            with pytest.raises(ValueError, match="double free"):
                pool.free(a, n)
            with pytest.raises(ValueError, match="double free"):
                pool.free(a + P, P)
            with pytest.raises(ValueError, match="double free"):
                pool.free(a + 3 * P, 2 * P)  # half free, half allocated
            assert pool.statistics() == before
            assert _read(pool, b, 2 * P) == bytes([7]) * 2 * P
            pool.check_invariants()

    @pytest.mark.parametrize(
        ("offset", "length", "match"),
        [
            (1, P, "page-aligned"),
            (0, P + 1, "page-aligned"),
            (0, 0, "page-aligned"),
            (-P, P, "page-aligned"),
            (3 * P, 2 * P, "one mapped arena"),  # crosses into arena 1, both allocated
            (8 * P, P, "one mapped arena"),
            (1 << 40, P, "one mapped arena"),
        ],
    )
    def test_free_rejects_bad_ranges(self, offset: int, length: int, match: str) -> None:
        with MemoryPool(arena_size=4 * P) as pool:
            pool.allocate(8 * P)
            before = pool.statistics()
            with pytest.raises(ValueError, match=match):
                pool.free(offset, length)
            assert pool.statistics() == before
            pool.check_invariants()

    @pytest.mark.parametrize(
        ("offset", "length", "match"),
        [
            (-1, 1, "outside"),
            (0, -1, "negative"),
            (3 * P, 2 * P, "crosses"),  # both pages allocated, but in two arenas
            (6 * P, 1, "unallocated"),
            (5 * P + 1, P, "unallocated"),  # ends one byte into a free page
            (8 * P, 1, "outside"),
            (1 << 40, P, "outside"),
        ],
    )
    def test_view_rejects_bad_ranges(self, offset: int, length: int, match: str) -> None:
        with MemoryPool(arena_size=4 * P) as pool:
            pool.allocate(4 * P)
            pool.allocate(2 * P)
            with pytest.raises(ValueError, match=match):
                pool.view(offset, length)
            with pytest.raises(ValueError, match=match):
                pool.fill_zero(offset, length)

    @pytest.mark.parametrize(
        ("offset", "length"), [(0, 4 * P), (4 * P + 5, 2 * P - 5), (3 * P + 100, 10), (P, 0)]
    )
    def test_view_accepts_allocated_ranges(self, offset: int, length: int) -> None:
        with MemoryPool(arena_size=4 * P) as pool:
            pool.allocate(4 * P)
            pool.allocate(2 * P)
            with pool.view(offset, length) as view:
                assert view.nbytes == length
                assert not view.readonly

    def test_views_are_zero_copy(self) -> None:
        with MemoryPool(arena_size=4 * P) as pool:
            [(a, _)] = pool.allocate(2 * P)
            with pool.view(a, 2 * P) as whole, pool.view(a + P + 10, 4) as part:
                whole[P + 10 : P + 14] = b"abcd"
                assert part.tobytes() == b"abcd"
                part[:] = b"wxyz"
                assert whole[P + 10 : P + 14].tobytes() == b"wxyz"

    def test_fill_zero(self) -> None:
        with MemoryPool(arena_size=256 * P) as pool:
            [(a, n)] = pool.allocate(256 * P)
            _fill(pool, a, n, 0xFF)
            start, length = a + 100, 3 * (64 << 10) + 17  # several zero chunks and a tail
            pool.fill_zero(start, length)
            data = _read(pool, a, n)
            assert data[:100] == b"\xff" * 100
            assert data[100 : 100 + length] == bytes(length)
            assert data[100 + length :] == b"\xff" * (n - 100 - length)

    @needs_madvise
    def test_freed_pages_are_dropped_and_read_zero(self) -> None:
        with MemoryPool(arena_size=4 * P) as pool:
            [(a, _)] = pool.allocate(P)
            [(b, _)] = pool.allocate(P)
            _fill(pool, a, P, 0xAB)
            _fill(pool, b, P, 0xCD)
            pool.free(a, P)
            assert pool.statistics().madvise_calls == 1
            assert pool.allocate(P) == [(a, P)]
            # Zero only if the page really went back to the OS (a MAP_SHARED arena keeps it).
            assert _read(pool, a, P) == bytes(P)
            assert _read(pool, b, P) == b"\xcd" * P

    @needs_madvise
    def test_warm_reserve_keeps_the_newest_frees_resident_and_drops_the_oldest(self) -> None:
        with MemoryPool(arena_size=8 * P, warm_bytes=2 * P) as pool:
            pages = [off for off, _ in (pool.allocate(P)[0] for _ in range(4))]
            for i, off in enumerate(pages):
                _fill(pool, off, P, 0x10 + i)
            for off in pages[:3]:
                pool.free(off, P)
            # Three frees into a two-page reserve: only the oldest went back to the OS.
            stats = pool.statistics()
            assert (stats.warm_bytes, stats.madvise_calls) == (2 * P, 1)
            assert pool.allocate(P) == [(pages[0], P)]  # best fit: lowest address first
            assert _read(pool, pages[0], P) == bytes(P)  # dropped: the OS zeroed it
            assert pool.allocate(P) == [(pages[1], P)]
            assert _read(pool, pages[1], P) == b"\x11" * P  # warm: still resident
            # Dropping the reserve gives back only what is still free (pages[2]).
            assert pool.drop_warm() == 2 * P
            assert pool.statistics().madvise_calls == 2
            assert _read(pool, pages[1], P) == b"\x11" * P
            assert _read(pool, pages[3], P) == b"\x13" * P
            pool.check_invariants()

    def test_warm_bytes_must_be_a_non_negative_int(self) -> None:
        for bad in (-1, 1.5):
            with pytest.raises(ValueError, match="warm_bytes"):
                MemoryPool(arena_size=8 * P, warm_bytes=bad)  # type: ignore[arg-type]

    def test_populate_writes_nothing_and_survives_a_refusing_kernel(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        with MemoryPool(arena_size=8 * P) as pool:
            [(a, n)] = pool.allocate(2 * P, populate=True)
            assert _read(pool, a, n) == bytes(n)
            # An advice number no kernel knows: the real madvise fails with EINVAL, as
            # MADV_POPULATE_WRITE does before Linux 5.14.
            monkeypatch.setattr(pool_module, "_MADV_POPULATE_WRITE", 0x7FFF)
            [(b, _)] = pool.allocate(P, populate=True)  # refused: a hint only, still allocated
            assert not pool._populate  # not asked again
            [(c, _)] = pool.allocate(P, populate=True)
            assert len({a, b, c}) == 3
            pool.check_invariants()

    def test_empty_arena_is_unmapped_unless_it_is_the_last(self) -> None:
        with MemoryPool(arena_size=4 * P) as pool:
            [(a, _)] = pool.allocate(4 * P)
            [(b, _)] = pool.allocate(4 * P)
            pool.free(a, 4 * P)
            assert (pool.statistics().arenas, pool.arena_bytes) == (1, 4 * P)
            pool.check_invariants()
            pool.free(b, 4 * P)
            assert (pool.statistics().arenas, pool.arena_bytes) == (1, 4 * P)
            pool.check_invariants()
            # Arena 1 has room; then the vacant slot 0 is reused for a new arena.
            assert pool.allocate(P) == [(b, P)]
            assert pool.allocate(4 * P) == [(0, 4 * P)]
            pool.check_invariants()

    def test_held_view_defers_unmap_until_released(self) -> None:
        with MemoryPool(arena_size=4 * P) as pool:
            [(a, _)] = pool.allocate(4 * P)
            [(b, _)] = pool.allocate(4 * P)
            held = pool.view(b, P)
            pool.free(b, 4 * P)  # must not crash on BufferError
            stats = pool.statistics()
            assert (stats.arenas, stats.deferred_unmaps) == (2, 1)
            pool.check_invariants()
            if hasattr(mmap, "MADV_DONTNEED"):
                assert held.tobytes() == bytes(P)
            assert pool.trim() == 0  # still held
            held.release()
            pool.free(a, P)  # any later free retries the unmap
            stats = pool.statistics()
            assert (stats.arenas, stats.deferred_unmaps, pool.arena_bytes) == (1, 0, 4 * P)
            pool.check_invariants()

    def test_trim_unmaps_after_views_are_released(self) -> None:
        with MemoryPool(arena_size=4 * P) as pool:
            pool.allocate(4 * P)
            [(b, _)] = pool.allocate(4 * P)
            held = pool.view(b + P, 10)
            pool.free(b, 4 * P)
            assert pool.arena_bytes == 8 * P
            held.release()
            assert pool.trim() == 1
            assert pool.arena_bytes == 4 * P
            pool.check_invariants()

    @pytest.mark.parametrize(
        "error", [OSError(errno.ENOMEM, "Cannot allocate memory"), MemoryError()]
    )
    def test_os_refusal_raises_and_changes_nothing(
        self, monkeypatch: pytest.MonkeyPatch, error: BaseException
    ) -> None:
        with MemoryPool(arena_size=4 * P) as pool:
            [(a, _)] = pool.allocate(3 * P)
            _fill(pool, a, 3 * P, 0x5A)
            before = pool.statistics()
            monkeypatch.setattr(mmap, "mmap", _refuse(error))
            with pytest.raises(CacheError, match="refused") as info:
                pool.allocate(2 * P)
            assert info.value.__cause__ is error
            assert pool.statistics() == before
            pool.check_invariants()
            assert _read(pool, a, 3 * P) == b"\x5a" * 3 * P
            # What fits in mapped space still works without the OS.
            assert pool.allocate(P) == [(3 * P, P)]

    def test_os_refusal_midway_unmaps_the_arenas_it_opened(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        with MemoryPool(arena_size=4 * P) as pool:
            pool.allocate(2 * P)
            before = pool.statistics()
            real_mmap = mmap.mmap
            calls = 0

            def flaky(*args: Any, **kwargs: Any) -> mmap.mmap:
                nonlocal calls
                calls += 1
                if calls == 3:
                    raise OSError(errno.ENOMEM, "Cannot allocate memory")
                return real_mmap(*args, **kwargs)

            monkeypatch.setattr(mmap, "mmap", flaky)
            with pytest.raises(CacheError):
                pool.allocate(16 * P)  # four arena-sized chunks; the third mmap fails
            assert calls == 3
            assert pool.statistics() == before
            pool.check_invariants()

    def test_os_refusal_falls_back_to_fragments(self, monkeypatch: pytest.MonkeyPatch) -> None:
        with MemoryPool(arena_size=4 * P) as pool:
            pool.allocate(4 * P)
            pool.free(0, P)
            pool.free(2 * P, P)
            monkeypatch.setattr(mmap, "mmap", _refuse(OSError(errno.ENOMEM, "no memory")))
            assert sorted(pool.allocate(2 * P)) == [(0, P), (2 * P, P)]
            assert pool.statistics().arenas == 1
            pool.check_invariants()

    def test_close_releases_everything_and_later_calls_raise(self) -> None:
        pool = MemoryPool(arena_size=4 * P)
        [(a, _)] = pool.allocate(4 * P)
        pool.allocate(4 * P)
        held = pool.view(a, P)  # a caller's leftover view must not make close() crash
        pool.close()
        pool.close()
        assert pool.closed
        stats = pool.statistics()
        assert (stats.used_bytes, stats.arena_bytes, stats.arenas) == (0, 0, 0)
        assert stats.allocations == 2
        pool.check_invariants()
        calls: list[Callable[[], object]] = [
            lambda: pool.allocate(P),
            lambda: pool.free(a, P),
            lambda: pool.view(a, 1),
            lambda: pool.fill_zero(a, 1),
            pool.trim,
        ]
        for call in calls:
            with pytest.raises(ClosedError):
                call()
        held[0] = 1  # still a valid buffer until released
        held.release()

    @pytest.mark.skipif(not hasattr(mmap, "MADV_DONTNEED"), reason="needs MADV_DONTNEED")
    def test_resident_memory_falls_after_free(self) -> None:
        size = 64 << 20
        with MemoryPool(arena_size=size) as pool:
            [(offset, length)] = pool.allocate(size)
            before = _status_bytes("RssAnon")
            chunk = b"\xa5" * (1 << 20)
            with pool.view(offset, length) as view:
                for pos in range(0, length, len(chunk)):
                    view[pos : pos + len(chunk)] = chunk
            written = _status_bytes("RssAnon")
            # Private anonymous memory, resident once written (a MAP_SHARED arena would count as
            # RssShmem, and MADV_DONTNEED would not free it).
            assert written - before >= size * 0.9
            pool.free(offset, length)
            after = _status_bytes("RssAnon")
            assert pool.arena_bytes == size  # the only arena stays mapped: madvise freed it
            assert written - after >= size * 0.9

    def test_address_space_falls_when_an_arena_empties(self) -> None:
        size = 64 << 20
        with MemoryPool(arena_size=size) as pool:
            pool.allocate(size)
            [(b, _)] = pool.allocate(size)
            mapped = _status_bytes("VmSize")
            pool.free(b, size)
            assert mapped - _status_bytes("VmSize") >= size * 0.9


class PoolMachine(RuleBasedStateMachine):
    """Random allocate/free/view sequences against a model: a dict of allocated pages."""

    ARENA_PAGES = 8
    ARENA = ARENA_PAGES * P
    #: Offsets drawn for wrong frees and views fall in this many arenas.
    SPAN_ARENAS = 5

    #: Freed bytes the pool keeps resident; the warm variant below sets it.
    WARM = 0

    def __init__(self) -> None:
        super().__init__()
        self.pool = MemoryPool(arena_size=self.ARENA, warm_bytes=self.WARM)
        # Allocated page offset -> the byte every byte of that page holds.
        self.pages: dict[int, int] = {}
        # Extents the test owns (pieces of allocations); together exactly the pages above.
        self.held: list[tuple[int, int]] = []
        self.ever_allocated = False
        self.stamp = 0

    def teardown(self) -> None:
        self.pool.close()

    def _write(self, offset: int, length: int) -> None:
        for page in range(offset, offset + length, P):
            self.stamp = self.stamp % 255 + 1
            _fill(self.pool, page, P, self.stamp)
            self.pages[page] = self.stamp

    def _forget(self, start: int, end: int) -> None:
        for page in range(start, end, P):
            del self.pages[page]
        kept: list[tuple[int, int]] = []
        for offset, length in self.held:
            if offset < start:
                kept.append((offset, min(offset + length, start) - offset))
            if offset + length > end:
                tail = max(offset, end)
                kept.append((tail, offset + length - tail))
        self.held = kept

    def _free(self, start: int, end: int) -> None:
        note(f"free({start:#x}, {end - start:#x})")
        self.pool.free(start, end - start)
        self._forget(start, end)

    @rule(pages=st.integers(1, 2 * ARENA_PAGES + 3))
    def allocate(self, pages: int) -> None:
        extents = self.pool.allocate(pages * P)
        note(f"allocate({pages * P:#x}) -> {[(hex(o), hex(n)) for o, n in extents]}")
        self.ever_allocated = True
        assert sum(n for _, n in extents) == pages * P
        assert len(extents) == -(-pages // self.ARENA_PAGES)  # as few as possible
        for offset, length in extents:
            assert length > 0
            assert offset % P == 0
            assert length % P == 0
            assert offset // self.ARENA == (offset + length - 1) // self.ARENA
            assert not any(page in self.pages for page in range(offset, offset + length, P))
            self._write(offset, length)
            self.held.append((offset, length))

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def free_part_of_extent(self, data: st.DataObject) -> None:
        offset, length = data.draw(st.sampled_from(self.held), label="extent")
        count = length // P
        first = data.draw(st.integers(0, count - 1), label="first page")
        last = data.draw(st.integers(first + 1, count), label="end page")
        self._free(offset + first * P, offset + last * P)

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def free_whole_extent(self, data: st.DataObject) -> None:
        offset, length = data.draw(st.sampled_from(self.held), label="extent")
        self._free(offset, offset + length)

    @precondition(lambda self: self.pages)
    @rule(data=st.data())
    def free_across_allocations(self, data: st.DataObject) -> None:
        page = data.draw(st.sampled_from(sorted(self.pages)), label="page")
        arena_start = page - page % self.ARENA
        lo = page
        while lo > arena_start and lo - P in self.pages:
            lo -= P
        hi = page + P
        while hi < arena_start + self.ARENA and hi in self.pages:
            hi += P
        start = data.draw(st.integers(lo // P, page // P), label="first page") * P
        end = data.draw(st.integers(page // P + 1, hi // P), label="end page") * P
        self._free(start, end)

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def double_free(self, data: st.DataObject) -> None:
        offset, length = data.draw(st.sampled_from(self.held), label="extent")
        self._free(offset, offset + length)
        before = self.pool.statistics()
        # The arena may have been unmapped, which free() reports as such.
        with pytest.raises(ValueError, match=r"double free|mapped arena"):
            self.pool.free(offset, length)
        assert self.pool.statistics() == before

    @rule(data=st.data())
    def wrong_free(self, data: st.DataObject) -> None:
        first = data.draw(st.integers(0, self.SPAN_ARENAS * self.ARENA_PAGES - 1), label="page")
        count = data.draw(st.integers(1, 4), label="pages")
        start, end = first * P, (first + count) * P
        if start // self.ARENA == (end - 1) // self.ARENA and all(
            page in self.pages for page in range(start, end, P)
        ):
            note("range is allocated; nothing wrong to test")
            return
        before = self.pool.statistics()
        with pytest.raises(ValueError, match=r"double free|mapped arena"):
            self.pool.free(start, end - start)
        assert self.pool.statistics() == before

    @rule(data=st.data())
    def view_any(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(0, self.SPAN_ARENAS * self.ARENA - 1), label="offset")
        length = data.draw(st.integers(1, 3 * P), label="length")
        end = offset + length
        touched = range(offset - offset % P, end, P)
        allowed = offset // self.ARENA == (end - 1) // self.ARENA and all(
            page in self.pages for page in touched
        )
        note(f"view({offset:#x}, {length:#x}), allowed={allowed}")
        if not allowed:
            with pytest.raises(ValueError, match=r"outside|crosses|unallocated"):
                self.pool.view(offset, length)
            return
        expected = b"".join(bytes([self.pages[page]]) * P for page in touched)
        skip = offset % P
        assert _read(self.pool, offset, length) == expected[skip : skip + length]

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def fill_zero(self, data: st.DataObject) -> None:
        offset, length = data.draw(st.sampled_from(self.held), label="extent")
        count = length // P
        first = data.draw(st.integers(0, count - 1), label="first page")
        last = data.draw(st.integers(first + 1, count), label="end page")
        self.pool.fill_zero(offset + first * P, (last - first) * P)
        for page in range(offset + first * P, offset + last * P, P):
            self.pages[page] = 0

    @invariant()
    def pool_matches_model(self) -> None:
        pool = self.pool
        pool.check_invariants()
        stats = pool.statistics()
        assert stats.used_bytes == pool.used_bytes == len(self.pages) * P
        in_use = {page // self.ARENA for page in self.pages}
        # Empty arenas are unmapped, except the last one standing.
        assert stats.arenas == max(len(in_use), 1 if self.ever_allocated else 0)
        assert stats.arena_bytes == pool.arena_bytes == stats.arenas * self.ARENA
        assert stats.deferred_unmaps == 0
        held_pages = {
            page for offset, length in self.held for page in range(offset, offset + length, P)
        }
        assert held_pages == set(self.pages)
        # Data written through views survives every other allocation and free.
        for page, value in self.pages.items():
            assert _read(pool, page, P) == bytes([value]) * P


TestPoolMachine = PoolMachine.TestCase


class WarmPoolMachine(PoolMachine):
    """The same model with a warm reserve of 3 pages: dropping warm pages (on every free past
    the reserve, and on ``drop_warm``) must never touch a page allocated again since, with the
    pages of one freed range reused wholly, partly or not at all."""

    WARM = 3 * P

    @rule()
    def drop_warm(self) -> None:
        held = self.pool.statistics().warm_bytes
        assert self.pool.drop_warm() == held
        assert self.pool.statistics().warm_bytes == 0

    @rule(pages=st.integers(1, 4))
    def allocate_populated(self, pages: int) -> None:
        extents = self.pool.allocate(pages * P, populate=True)
        note(f"allocate({pages * P:#x}, populate) -> {extents}")
        self.ever_allocated = True
        for offset, length in extents:
            assert not any(page in self.pages for page in range(offset, offset + length, P))
            self._write(offset, length)
            self.held.append((offset, length))

    @invariant()
    def warm_within_its_limit(self) -> None:
        assert 0 <= self.pool.statistics().warm_bytes <= self.WARM


TestWarmPoolMachine = WarmPoolMachine.TestCase
