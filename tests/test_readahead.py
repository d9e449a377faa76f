"""Readahead's schedule, checked step by step with a backing whose requests wait for the test.

Every request to :class:`GatedBacking` is recorded and held until the test releases it, and the
tests look only after ``wait_all_tasks_blocked()``: what is in flight at each step is decided by
the code, never by timing. Each test here failed on the previous design (a window issued only
after a read completed, judged at the gap's position, one request per demand read, a high-water
mark kept across a reset, one reader taking the whole cap).
"""

from __future__ import annotations

import contextlib
import random
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from prometheus_client import CollectorRegistry

from aiocache_inode import CacheStore, ClosedError, MemoryBacking
from aiocache_inode.backing.delegating import DelegatingBacking

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from aiocache_inode import CachingInode

KiB = 1 << 10
MiB = 1 << 20
REQ = 256 * KiB


def pattern(n: int) -> bytes:
    return random.Random(n).randbytes(n)


def store(limit: int = 64 * MiB, **kw: Any) -> CacheStore:
    kw.setdefault("readahead_request", REQ)
    return CacheStore(limit, registry=CollectorRegistry(), **kw)


class GatedBacking(DelegatingBacking[MemoryBacking]):
    """A memory backing whose reads wait until the test releases them (or the gate opens)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(MemoryBacking(data))
        # Every read request as (start, end), in issue order (the tests also log their own
        # events here); the held ones and their gates.
        self.requests: list[object] = []
        self.held: dict[tuple[int, int], anyio.Event] = {}
        self.open = False

    async def read_into(self, offset: int, buffers: Sequence[memoryview]) -> int:
        key = (offset, offset + sum(memoryview(b).nbytes for b in buffers))
        self.requests.append(key)
        if not self.open:
            gate = anyio.Event()
            self.held[key] = gate
            try:
                await gate.wait()
            finally:
                self.held.pop(key, None)
        return await self.inner.read_into(offset, buffers)

    def release(self, which: Callable[[tuple[int, int]], bool] = lambda _k: True) -> None:
        for key, gate in list(self.held.items()):
            if which(key):
                gate.set()

    def held_end(self) -> int:
        """The furthest byte a held request reaches (0 when none is held)."""
        return max((e for _s, e in self.held), default=0)


@contextlib.asynccontextmanager
async def opened_at_exit(*backings: GatedBacking) -> AsyncIterator[None]:
    """Let every held request go on the way out, so a failing test ends instead of hanging."""
    try:
        yield
    finally:
        for b in backings:
            b.open = True
            b.release()


async def settle() -> None:
    await anyio.wait_all_tasks_blocked()


async def read_all(inode: CachingInode, size: int, read_size: int) -> bytes:
    out = bytearray()
    off = 0
    while off < size:
        chunk = await inode.read(off, read_size)
        assert chunk, off
        out += chunk
        off += len(chunk)
        await settle()  # readahead that can land does, before the next read
    return bytes(out)


async def test_reads_of_any_size_are_sequential() -> None:
    """4 and 8 MiB reads (larger than the initial window and the request) keep the stream.

    After the first read every read is a hit: readahead always ran ahead of the reader.
    """
    for read_size, size in ((64 * KiB, 2 * MiB), (1 * MiB, 8 * MiB), (4 * MiB, 24 * MiB),
                            (8 * MiB, 32 * MiB)):  # fmt: skip
        data = pattern(size)
        async with store(256 * MiB, readahead_initial=1 * MiB) as s:
            async with s.open("k", MemoryBacking(data)) as inode:
                assert await read_all(inode, size, read_size) == data
            st = s.statistics()
        assert st.cache_misses == 1, (read_size, st.cache_misses)
        assert st.readahead_bytes >= size - 2 * read_size, read_size


async def test_random_reads_issue_no_readahead() -> None:
    size = 16 * MiB
    rng = random.Random(7)
    async with store() as s, s.open("k", MemoryBacking(pattern(size))) as inode:
        for _ in range(64):
            off = rng.randrange(1, size // (64 * KiB)) * 64 * KiB
            await inode.read(off, 64 * KiB)
            await settle()
        assert s.statistics().readahead_bytes == 0


async def test_a_large_demand_read_goes_out_as_parallel_requests() -> None:
    backing = GatedBacking(pattern(4 * MiB))
    async with (
        store(readahead_max=0) as s,
        opened_at_exit(backing),
        s.open("k", backing) as inode,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(inode.read, 0, 1 * MiB)
        await settle()
        # Four requests of the request size on the wire at once, not one of 1 MiB.
        assert sorted(backing.held) == [(i * REQ, (i + 1) * REQ) for i in range(4)]
        backing.release()


async def test_the_top_up_goes_out_before_the_reader_waits() -> None:
    backing = GatedBacking(pattern(32 * MiB))
    async with (
        store(readahead_initial=1 * MiB) as s,
        opened_at_exit(backing),
        s.open("k", backing) as inode,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(inode.read, 0, REQ)
        await settle()
        # The demand request and the first window behind it.
        window_end = backing.held_end()
        assert window_end == REQ + 1 * MiB
        backing.release(lambda k: k[0] == 0)  # only the demand request lands
        await settle()
        # The next read reaches readahead still in flight: before it waits, the window
        # grows (a stall) and the next requests go out.
        tg.start_soon(inode.read, REQ, REQ)
        await settle()
        assert backing.held_end() > window_end
        backing.open = True
        backing.release()


async def test_a_landing_readahead_fill_issues_the_next_request_itself() -> None:
    """The fill a stalled reader waits for issues the next request before the reader resumes."""
    backing = GatedBacking(pattern(32 * MiB))
    log: list[object] = backing.requests  # requests and reads done, in order

    async def read(inode: CachingInode, off: int) -> None:
        await inode.read(off, REQ)
        log.append(("read done", off))

    async with (
        store(readahead_initial=2 * REQ, readahead_cap=2 * REQ) as s,
        opened_at_exit(backing),
        s.open("k", backing) as inode,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(read, inode, 0)
        await settle()
        # The cap allows two speculative requests behind the demand one.
        assert sorted(backing.held) == [(0, REQ), (REQ, 2 * REQ), (2 * REQ, 3 * REQ)]
        backing.release(lambda k: k[0] in (0, REQ))
        await settle()
        await read(inode, REQ)  # a hit; the top-up behind it takes the free half of the cap
        await settle()
        assert (3 * REQ, 4 * REQ) in backing.held
        tg.start_soon(read, inode, 2 * REQ)  # waits for the request still held
        await settle()
        assert ("read done", 2 * REQ) not in log
        backing.release(lambda k: k[0] == 2 * REQ)
        await settle()
        # The landed fill issued the window's next request itself, before the reader it
        # woke returned (and could have issued it).
        assert log.index((4 * REQ, 5 * REQ)) < log.index(("read done", 2 * REQ))
        backing.open = True
        backing.release()


async def test_a_second_pass_after_eviction_reads_ahead_again() -> None:
    size = 8 * MiB
    data = pattern(size)
    async with store(readahead_initial=1 * MiB) as s, s.open("k", MemoryBacking(data)) as inode:
        assert await read_all(inode, size, REQ) == data
        first = s.statistics()
        await s.shrink(0)
        assert await read_all(inode, size, REQ) == data
        second = s.statistics()
    # The first read of the second pass is a jump back (a miss); the stream then starts anew
    # from where the reader is, not from the old high-water mark at EOF.
    assert second.readahead_bytes - first.readahead_bytes >= size - 2 * REQ
    assert second.cache_misses - first.cache_misses <= 2


async def test_readers_share_the_cap() -> None:
    cap = 4 * REQ
    one, two = GatedBacking(pattern(32 * MiB)), GatedBacking(pattern(32 * MiB))
    async with (
        store(readahead_initial=4 * MiB, readahead_cap=cap) as s,
        opened_at_exit(one, two),
        s.open("one", one) as a,
        s.open("two", two) as b,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(a.read, 0, REQ)
        await settle()
        assert len(one.held) == 1 + 4  # alone, the first reader gets the whole cap
        one.release(lambda k: k[0] == 0)
        await settle()
        tg.start_soon(b.read, 0, REQ)
        await settle()
        assert len(two.held) == 1  # the cap is taken: only its demand request
        two.release()
        one.release(lambda k: k[0] in (REQ, 2 * REQ))
        await settle()
        # Two of the first reader's requests landed; with two streams its share is half the
        # cap, so it issued no more, leaving the room to the second reader's next read.
        assert len(one.held) == 2
        tg.start_soon(b.read, REQ, REQ)
        await settle()
        assert len(two.held) == 1 + 2  # its demand request and its share, two requests
        one.open = two.open = True
        one.release()
        two.release()


async def test_readahead_does_not_evict_unread_readahead() -> None:
    """A second stream's readahead finds no room rather than evicting the first's next data."""
    size = 8 * MiB
    limit = 4 * MiB
    async with (
        store(limit, readahead_initial=2 * MiB, pool_warm_bytes=0) as s,
        s.open("one", MemoryBacking(pattern(size))) as a,
    ):
        await a.read(0, REQ)
        await settle()
        ahead = s.statistics().readahead_bytes
        assert ahead > 0
        async with s.open("two", MemoryBacking(pattern(size))) as b:
            for off in range(0, 2 * MiB, REQ):  # fill the rest of the budget, then stream
                await b.read(off, REQ)
                await settle()
        # Everything the first reader's readahead fetched is still there for it to read.
        assert s.statistics().readahead_wasted_bytes == 0
        before = s.statistics().cache_misses
        off = REQ
        while off < REQ + ahead:
            await a.read(off, REQ)
            off += REQ
        assert s.statistics().cache_misses == before


async def test_sequential_views_read_ahead() -> None:
    """A server streaming windows through pinned views gets readahead as a reader would."""
    size = 8 * MiB
    data = pattern(size)
    async with store(readahead_initial=1 * MiB) as s, s.open("k", MemoryBacking(data)) as inode:
        got = bytearray()
        for off in range(0, size, 1 * MiB):
            async with inode.view(off, 1 * MiB) as views:
                for v in views:
                    got += v
            await settle()
        assert bytes(got) == data
        st = s.statistics()
    assert st.readahead_bytes >= size - 2 * MiB
    assert st.readahead_used_bytes >= size - 2 * MiB


async def test_writable_views_do_not_read_ahead() -> None:
    size = 4 * MiB
    async with store() as s, s.open("k", MemoryBacking(pattern(size))) as inode:
        for off in range(0, size, 1 * MiB):
            async with inode.view(off, 1 * MiB, writable=True):
                pass
            await settle()
        assert s.statistics().readahead_bytes == 0


async def test_a_reader_reaching_eof_settles_the_used_count() -> None:
    size = 4 * MiB + 1000  # ends inside a page
    data = pattern(size)
    async with store(readahead_initial=1 * MiB) as s, s.open("k", MemoryBacking(data)) as inode:
        assert await read_all(inode, size, 64 * KiB) == data
        st = s.statistics()
    assert st.readahead_bytes > 0
    # Everything but the last page's bytes past EOF (filled, never readable) was counted used.
    assert st.readahead_bytes - st.readahead_used_bytes == 4096 - 1000
    assert st.readahead_wasted_bytes == 0


async def test_prefetch_puts_the_whole_range_in_flight_and_nothing_past_it() -> None:
    """A hinted range goes out at once; reads of it are hits; nothing is read past its end."""
    size, hint = 32 * MiB, 16 * MiB
    data = pattern(size)
    backing = GatedBacking(data)
    async with (
        store(256 * MiB, readahead_cap=64 * MiB) as s,
        opened_at_exit(backing),
        s.open("k", backing) as inode,
    ):
        assert inode.prefetch(0, hint) == hint
        await settle()
        assert sorted(backing.held) == [(i, i + REQ) for i in range(0, hint, REQ)]
        backing.release()
        await settle()
        got = bytearray()
        for off in range(0, hint, MiB):
            got += await inode.read(off, MiB)
            await settle()
        assert got == data[:hint]
        st = s.statistics()
        assert (st.cache_misses, st.readahead_bytes, st.readahead_used_bytes) == (0, hint, hint)
        assert max(k[1] for k in backing.requests) == hint  # type: ignore[index]
        # A read going on past the range is sequential: ordinary readahead starts there.
        backing.open = True
        assert await inode.read(hint, MiB) == data[hint : hint + MiB]
        await settle()
        assert s.statistics().readahead_bytes > hint


async def test_prefetch_keeps_to_the_cap_and_tops_up_to_the_end_of_the_range() -> None:
    size, hint, cap = 32 * MiB, 8 * MiB, 2 * MiB
    data = pattern(size)
    backing = GatedBacking(data)
    async with (
        store(256 * MiB, readahead_cap=cap) as s,
        opened_at_exit(backing),
        s.open("k", backing) as inode,
    ):
        assert inode.prefetch(0, hint) == cap
        await settle()
        assert backing.held_end() == cap
        got = bytearray()
        for off in range(0, hint, REQ):
            backing.release()
            await settle()
            got += await inode.read(off, REQ)
            await settle()
            assert sum(e - b for b, e in backing.held) <= cap
        backing.release()
        await settle()
        assert got == data[:hint]
        ends = [k[1] for k in backing.requests]  # type: ignore[index]
        assert max(ends) == hint, "read past the hinted end"
        assert s.statistics().cache_misses == 0


async def test_a_read_elsewhere_ends_the_hinted_stream() -> None:
    size = 32 * MiB
    data = pattern(size)
    backing = GatedBacking(data)
    backing.open = True
    async with store(256 * MiB) as s, s.open("k", backing) as inode:
        inode.prefetch(0, 4 * MiB)
        await settle()
        # A jump: the hint's end no longer bounds readahead; a sequential run from 16 MiB
        # reads ahead past 20 MiB as any stream would.
        for off in range(16 * MiB, 20 * MiB, MiB):
            assert await inode.read(off, MiB) == data[off : off + MiB]
            await settle()
        assert max(k[1] for k in backing.requests) > 20 * MiB  # type: ignore[index]


async def test_prefetch_checks_its_arguments_and_does_nothing_with_readahead_off() -> None:
    backing = GatedBacking(pattern(4 * MiB))
    async with opened_at_exit(backing):
        async with store(readahead_max=0) as s, s.open("k", backing) as inode:
            assert inode.prefetch(0, 4 * MiB) == 0
            await settle()
            assert backing.requests == []
        async with store() as s, s.open("k", backing) as inode:
            with pytest.raises(ValueError, match="non-negative"):
                inode.prefetch(-1, 10)
            with pytest.raises(ValueError, match="non-negative"):
                inode.prefetch(0, -10)
            assert inode.prefetch(4 * MiB, MiB) == 0  # at EOF: nothing to read
            assert inode.prefetch(0, 0) == 0
            await settle()
            assert backing.requests == []
            await inode.release()
            with pytest.raises(ClosedError):
                inode.prefetch(0, MiB)


async def test_consecutive_hinted_ranges_read_ahead_past_each_other() -> None:
    """Ranged GETs of an object in order: the first range is bounded, the next ones continue
    the stream, so readahead runs on past them and the later ranges are hits."""
    size, part = 32 * MiB, 1 * MiB
    data = pattern(size)
    backing = GatedBacking(data)
    backing.open = True
    async with store(256 * MiB) as s, s.open("k", backing) as inode:
        inode.prefetch(0, part)
        assert await inode.read(0, part) == data[:part]
        await settle()
        assert max(k[1] for k in backing.requests) == part  # type: ignore[index]
        for off in range(part, 8 * part, part):
            inode.prefetch(off, part)
            assert await inode.read(off, part) == data[off : off + part]
            await settle()
        assert max(k[1] for k in backing.requests) > 8 * part  # type: ignore[index]
        misses = s.statistics().cache_misses
        assert misses <= 2, misses  # the first two ranges wait; readahead covers the rest


async def test_a_repeated_hint_without_a_read_stays_bounded() -> None:
    """A hint sets where a stream starts, not where a read ended: hinting the same range
    again does not count as continuing it."""
    backing = GatedBacking(pattern(8 * MiB))
    async with (
        store(readahead_initial=1 * MiB) as s,
        opened_at_exit(backing),
        s.open("k", backing) as inode,
    ):
        assert inode.prefetch(3 * KiB * 4, 100) == 4 * KiB
        assert inode.prefetch(3 * KiB * 4, 100) == 0  # in flight already; nothing more
        await settle()
        assert sorted(backing.held) == [(12 * KiB, 16 * KiB)]


class WriteGatedBacking(GatedBacking):
    """A gated backing whose writes can also be held, at one gate, until the test opens it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.write_gate: anyio.Event | None = None
        self.write_entered = anyio.Event()

    async def write_from(self, offset: int, buffers: Sequence[memoryview]) -> int:
        if self.write_gate is not None:
            self.write_entered.set()
            await self.write_gate.wait()
        return await self.inner.write_from(offset, buffers)


async def test_readahead_steps_over_a_write_back_of_part_of_a_page() -> None:
    """A write-back in flight covers a byte range (dirty bytes are byte-granular); readahead
    stepping over it must land on the next page boundary, not on the write-back's end plus a
    page, or the next fill starts mid-page (found by the concurrent model over local files)."""
    page = 4 * KiB
    data = pattern(8 * page)
    backing = WriteGatedBacking(data)
    backing.open = True
    async with (
        store(MiB, write_back=True, readahead_request=2 * page, readahead_max=8 * page) as s,
        opened_at_exit(backing),
        s.open("k", backing) as inode,
    ):
        await inode.write(0, data[: 3 * page])  # pages 0-2 cached
        await inode.write_out()
        await inode.write(page + 1000, b"x" * 1000)  # dirty [P+1000, P+2000), inside page 1
        backing.write_gate = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(inode.write_out)
            await backing.write_entered.wait()  # the write-back of [P+1000, P+2000) in flight
            try:
                # Pages 3-7 go out as two-page requests starting at page 3.
                assert inode.prefetch(0, 8 * page) == 5 * page
                await settle()
            finally:
                backing.write_gate.set()  # the write-back is shielded: let it end whatever
        assert len(backing.requests) == 3
        assert set(backing.requests) == {
            (3 * page, 5 * page),
            (5 * page, 7 * page),
            (7 * page, 8 * page),
        }
        want = data[: page + 1000] + b"x" * 1000 + data[page + 2000 :]
        assert await inode.read(0, 8 * page) == want
        assert s.statistics().cache_misses == 0
