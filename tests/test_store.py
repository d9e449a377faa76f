"""CacheStore: the inode table, lifecycle, shrink, write-back mode and memory bounds (issue 3)."""

from __future__ import annotations

import ctypes
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest

from aiocache_inode import (
    PAGE_SIZE,
    Attrs,
    BackingError,
    CacheError,
    CacheStore,
    CachingInode,
    ClosedError,
    FaultInjector,
    MemoryBacking,
    NotFoundError,
    WritebackError,
)
from aiocache_inode.attrs import now_ns
from aiocache_inode.backing.delegating import DelegatingBacking

if TYPE_CHECKING:
    import mmap
    from collections.abc import Sequence

    from aiocache_inode import AttrMask

KiB = 1 << 10
MiB = 1 << 20
#: The store's eviction unit (inode.CHUNK_SIZE); tests reason in chunks where eviction matters.
CHUNK = 64 * KiB


def pattern(size: int, seed: int = 0) -> bytes:
    """Deterministic, position-dependent bytes (cheap for MiBs)."""
    block = bytes((i * 7 + seed * 13 + 1) & 0xFF for i in range(251))
    reps = size // len(block) + 1
    return (block * reps)[:size]


def store(limit: int = 4 * MiB, **kwargs: Any) -> CacheStore:
    """A store with no Prometheus registry (the metrics have their own tests)."""
    return CacheStore(limit, registry=False, **kwargs)


class SyntheticBacking:
    """A read-only backing that makes its bytes up (0xA5) instead of holding them.

    The RSS test needs a backing whose own memory does not hide the pool's.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.reads = 0

    async def get_attributes(self) -> Attrs:
        now = now_ns()
        return Attrs(size=self.size, usage=self.size, atime=now, mtime=now, ctime=now)

    async def read_into(self, offset: int, buffers: Sequence[memoryview]) -> int:
        await anyio.lowlevel.checkpoint()
        done = 0
        for buf in buffers:
            take = max(0, min(len(buf), self.size - offset - done))
            buf[:take] = b"\xa5" * take
            done += take
        self.reads += 1
        return done

    async def write_from(self, offset: int, buffers: Sequence[memoryview]) -> int:
        raise OSError("read-only")

    async def set_attributes(self, mask: AttrMask, attrs: Attrs, force_timestamps: bool) -> None:
        await anyio.lowlevel.checkpoint()

    async def allocate(self, offset: int, length: int) -> None:
        await anyio.lowlevel.checkpoint()

    async def sync(self) -> None:
        await anyio.lowlevel.checkpoint()

    def fd(self) -> int:
        return -1


class SamplingBacking(DelegatingBacking[MemoryBacking]):
    """Wraps a MemoryBacking and samples ``store.usage`` as every backing read starts and ends
    (the moments a fill holds its reserved pages)."""

    def __init__(self, inner: MemoryBacking, sample: Any) -> None:
        super().__init__(inner)
        self._sample = sample

    async def read_into(self, offset: int, buffers: Sequence[memoryview]) -> int:
        self._sample()
        n = await self.inner.read_into(offset, buffers)
        self._sample()
        return n


def mapped_resident(maps: list[mmap.mmap]) -> int:
    """Resident bytes of these anonymous mappings, from ``/proc/self/smaps`` (Linux)."""
    starts = {ctypes.addressof(ctypes.c_char.from_buffer(m)) for m in maps}
    total = 0
    current = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split(maxsplit=1)[0]
        if "-" in head and not head.endswith(":"):
            current = int(head.split("-")[0], 16) in starts
        elif current and head == "Rss:":
            total += int(line.split()[1]) * KiB
    return total


class TestCacheStore:
    # ---------------------------------------------------------------------------------------
    # The inode table
    # ---------------------------------------------------------------------------------------

    async def test_open_same_key_twice_gives_same_inode(self) -> None:
        first = MemoryBacking(pattern(3 * PAGE_SIZE))
        second = MemoryBacking(b"other")
        async with store() as s:
            async with s.open("k", first) as a, s.open("k", second) as b:
                assert a is b
                assert isinstance(a, CachingInode)
                assert a.backing is first
                # Cached pages keep the inode resident after the last user leaves.
                assert await a.read(0, 5) == first.data[:5]
            async with s.open("k", second) as c:
                assert c is a
                assert await c.read(0, 5) == first.data[:5]
            assert second.stats.get_attributes == 0
            assert first.stats.get_attributes == 1
            assert s.get("k") is a
            assert "k" in s
            assert list(s.keys()) == ["k"]

    async def test_distinct_keys_give_distinct_inodes(self) -> None:
        async with store() as s:
            async with (
                s.open(("a", 1), MemoryBacking(b"A")) as a,
                s.open(("a", 2), MemoryBacking(b"B")) as b,
            ):
                assert a is not b
                assert await a.read(0, 1) == b"A"
                assert await b.read(0, 1) == b"B"
            assert sorted(s.keys()) == [("a", 1), ("a", 2)]  # type: ignore[type-var]

    async def test_concurrent_opens_of_one_key_create_one_inode(self) -> None:
        release = anyio.Event()
        calls = 0
        backing = MemoryBacking(b"payload")

        async def factory() -> MemoryBacking:
            nonlocal calls
            calls += 1
            await release.wait()
            return backing

        got: list[CachingInode] = []
        all_in = anyio.Event()

        async def opener() -> None:
            # Each holds the inode until all are in: an idle one would leave the table.
            async with s.open("k", factory) as inode:
                got.append(inode)
                if len(got) == 10:
                    all_in.set()
                await all_in.wait()

        async with store() as s:
            async with anyio.create_task_group() as tg:
                for _ in range(10):
                    tg.start_soon(opener)
                await anyio.wait_all_tasks_blocked()
                assert calls == 1  # the others wait for the first open
                release.set()
            assert len(got) == 10
            assert all(inode is got[0] for inode in got)
            assert calls == 1
            assert backing.stats.get_attributes == 1
            # Unused and caching nothing, it left the table, and its backing was closed.
            assert list(s.keys()) == []
            # The store closes it in a task of its own: let that run.
            await anyio.wait_all_tasks_blocked()
            assert backing.closed

    async def test_backing_given_as_async_callable(self) -> None:
        calls = 0

        async def factory() -> MemoryBacking:
            nonlocal calls
            calls += 1
            return MemoryBacking(b"from factory")

        async def must_not_be_called() -> MemoryBacking:
            raise AssertionError("backing factory called for a resident key")

        async with store() as s:
            async with s.open("k", factory) as inode:
                assert await inode.read(0, 100) == b"from factory"
            async with s.open("k", must_not_be_called) as again:
                assert again is inode
            assert calls == 1

    async def test_backing_factory_failure_is_backing_error_and_not_resident(self) -> None:
        cause = OSError(5, "cannot open")

        async def broken() -> MemoryBacking:
            raise cause

        async with store() as s:
            with pytest.raises(BackingError) as info:
                async with s.open("k", broken):
                    pytest.fail("opened a broken backing")
            assert info.value.__cause__ is cause
            assert "k" not in s
            # The key is not poisoned: a working backing opens it afterwards.
            async with s.open("k", MemoryBacking(b"ok")) as inode:
                assert await inode.read(0, 2) == b"ok"

    async def test_failing_get_attributes_is_backing_error(self) -> None:
        faulty = FaultInjector(MemoryBacking(b"x"), seed=1, error_rate=1.0)
        async with store() as s:
            with pytest.raises(BackingError) as info:
                async with s.open("k", faulty):
                    pytest.fail("opened")
            assert isinstance(info.value.__cause__, OSError)
            assert "k" not in s

    async def test_open_rejects_bad_arguments(self) -> None:
        async with store() as s:
            with pytest.raises(TypeError):
                s.open(["not", "hashable"], MemoryBacking())  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                s.open("k", 42)  # type: ignore[arg-type]
        with pytest.raises(ClosedError):
            async with s.open("k", MemoryBacking()):
                pytest.fail("opened on a closed store")

    async def test_closed_inode_keeps_its_pages(self) -> None:
        data = pattern(8 * PAGE_SIZE)
        backing = MemoryBacking(data)
        async with store() as s:
            async with s.open("k", backing) as inode:
                assert await inode.read(0, len(data)) == data
            reads = backing.stats.reads
            usage = s.usage
            assert usage == len(data)
            assert s.get("k").cached_bytes == len(data)
            async with s.open("k", backing) as again:
                assert again is inode
                assert await again.read(0, len(data)) == data
            assert backing.stats.reads == reads  # served from the kept pages
            assert s.usage == usage

    async def test_open_never_returns_an_inode_retired_while_it_yields(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # open() of a resident key checkpoints before it returns. If eviction takes the idle
        # inode's last pages in that yield, the store retires (closes) it; open must then make a
        # fresh inode, not hand out the closed one (reads of it raised ClosedError, which cut
        # GET responses short in the gateway's load test).
        data = pattern(8 * PAGE_SIZE)
        backing = MemoryBacking(data)
        real_checkpoint = anyio.lowlevel.checkpoint
        shrinks: list[int] = []
        armed = [True]

        async def checkpoint_while_shrinking() -> None:
            if armed.pop() if armed else False:  # once: shrink checkpoints too
                shrinks.append(await s.shrink(0))
            await real_checkpoint()

        async with store() as s:
            async with s.open("k", backing) as first:
                assert await first.read(0, len(data)) == data
            assert "k" in s  # idle but resident: it holds clean pages
            monkeypatch.setattr(anyio.lowlevel, "checkpoint", checkpoint_while_shrinking)
            async with s.open("k", backing) as again:
                monkeypatch.undo()
                assert shrinks == [0]
                assert first.closed  # retired during open's checkpoint
                assert not again.closed
                assert await again.read(0, len(data)) == data

    async def test_forget_writes_back_then_releases(self) -> None:
        backing = MemoryBacking(pattern(4 * PAGE_SIZE))
        async with store(write_back=True) as s:
            async with s.open("k", backing) as inode:
                await inode.write(PAGE_SIZE, b"new bytes")
                assert inode.dirty_bytes == 9
            assert backing.data[PAGE_SIZE : PAGE_SIZE + 9] != b"new bytes"
            await s.forget("k")
            assert backing.data[PAGE_SIZE : PAGE_SIZE + 9] == b"new bytes"
            assert backing.stats.syncs >= 1
            assert "k" not in s
            assert inode.closed
            assert s.usage == 0
            assert s.dirty_bytes == 0
            assert s.statistics().evicted_bytes["release"] == PAGE_SIZE  # the one filled page
            with pytest.raises(NotFoundError):
                s.get("k")
            with pytest.raises(ClosedError):
                await inode.read(0, 1)
            async with s.open("k", backing) as fresh:
                assert fresh is not inode
                assert await fresh.read(PAGE_SIZE, 9) == b"new bytes"

    async def test_forget_unknown_key_raises_not_found(self) -> None:
        async with store() as s:
            with pytest.raises(NotFoundError) as info:
                await s.forget("nope")
            assert isinstance(info.value, LookupError)
            assert isinstance(info.value, CacheError)
            with pytest.raises(NotFoundError):
                s.get("nope")

    async def test_forget_with_failing_backing_keeps_inode_and_data(self) -> None:
        inner = MemoryBacking(bytes(2 * PAGE_SIZE))
        faulty = FaultInjector(inner, seed=3)
        async with store(write_back=True) as s:
            async with s.open("k", faulty) as inode:
                await inode.write(0, b"precious")
            faulty.error_rate = 1.0
            with pytest.raises(WritebackError):
                await s.forget("k")
            assert "k" in s
            assert not inode.closed
            assert inode.dirty_bytes == 8
            assert await inode.read(0, 8) == b"precious"
            faulty.error_rate = 0.0
            await s.forget("k")
            assert inner.data[:8] == b"precious"

    # ---------------------------------------------------------------------------------------
    # Exit
    # ---------------------------------------------------------------------------------------

    async def test_exit_writes_everything_back(self) -> None:
        backings = [MemoryBacking(bytes(4 * PAGE_SIZE)) for _ in range(3)]
        async with store(write_back=True) as s:
            for i, b in enumerate(backings):
                async with s.open(i, b) as inode:
                    await inode.write(i * 100, bytes([i + 1]) * 5000)
            assert s.dirty_bytes == 15000
        for i, b in enumerate(backings):
            want = bytearray(4 * PAGE_SIZE)
            want[i * 100 : i * 100 + 5000] = bytes([i + 1]) * 5000
            assert b.data == bytes(want)
            assert b.stats.syncs >= 1
        assert s.usage == 0

    async def test_exit_writes_back_dirty_cached_pages_in_write_through_mode(self) -> None:
        backing = MemoryBacking(pattern(2 * PAGE_SIZE))
        async with store() as s, s.open("k", backing) as inode:
            await inode.read(0, 2 * PAGE_SIZE)
            await inode.write(10, b"dirty")
            assert inode.dirty_bytes == 5
            assert backing.data[10:15] != b"dirty"
        assert backing.data[10:15] == b"dirty"

    async def test_exit_with_failing_backing_raises_writeback_error_naming_key(self) -> None:
        good = MemoryBacking(bytes(2 * PAGE_SIZE))
        inner = MemoryBacking(bytes(2 * PAGE_SIZE))
        bad = FaultInjector(inner, seed=7)
        s = store(write_back=True)

        async def run() -> None:
            async with s:
                async with s.open("good-key", good) as g, s.open("bad-key", bad) as b:
                    await g.write(0, b"G" * PAGE_SIZE)
                    await b.write(0, b"B" * PAGE_SIZE)
                bad.error_rate = 1.0
                # Nothing is lost before the exit: the data is cached, dirty and readable.
                assert await b.read(0, PAGE_SIZE) == b"B" * PAGE_SIZE
                assert b.dirty_bytes == PAGE_SIZE
                assert s.dirty_bytes == 2 * PAGE_SIZE

        with pytest.raises(WritebackError) as info:
            await run()
        message = str(info.value)
        assert repr("bad-key") in message
        assert "good-key" not in message
        assert isinstance(info.value, CacheError)
        # The healthy key was written back; the failing backing was left untouched.
        assert good.data[:PAGE_SIZE] == b"G" * PAGE_SIZE
        assert inner.data == bytes(2 * PAGE_SIZE)

    async def test_exit_with_body_exception_keeps_it_and_logs_writeback_failure(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        bad = FaultInjector(MemoryBacking(bytes(PAGE_SIZE)), seed=7)
        s = store(write_back=True)

        async def run() -> None:
            async with s:
                async with s.open("bad-key", bad) as b:
                    await b.write(0, b"B" * 10)
                bad.error_rate = 1.0
                raise RuntimeError("boom")

        with (
            caplog.at_level(logging.ERROR, logger="aiocache_inode.store"),
            pytest.raises(RuntimeError, match="boom"),
        ):
            await run()
        assert any("bad-key" in r.getMessage() for r in caplog.records)

    async def test_exit_writes_back_when_the_body_is_cancelled(self) -> None:
        backing = MemoryBacking(latency=0.001)
        with anyio.CancelScope() as scope:
            async with store(write_back=True) as s, s.open("k", backing) as inode:
                await inode.write(0, b"c" * (2 * PAGE_SIZE))
                scope.cancel()
                await anyio.sleep_forever()
        assert scope.cancelled_caught
        # The final write-back is shielded: it ran although the body was cancelled.
        assert backing.data == b"c" * (2 * PAGE_SIZE)

    async def test_store_is_entered_once(self) -> None:
        s = store()
        async with s:
            with pytest.raises(CacheError):
                await s.__aenter__()
        with pytest.raises(CacheError):
            async with s:
                pytest.fail("re-entered a closed store")

    # ---------------------------------------------------------------------------------------
    # Budget: shrink, usage, dirty_bytes, memory_limit
    # ---------------------------------------------------------------------------------------

    async def test_usage_dirty_bytes_and_memory_limit(self) -> None:
        a = MemoryBacking(pattern(3 * PAGE_SIZE))
        b = MemoryBacking(pattern(5 * PAGE_SIZE, seed=1))
        async with store(2 * MiB) as s:
            assert s.memory_limit == 2 * MiB
            assert s.usage == 0
            assert s.dirty_bytes == 0
            async with s.open("a", a) as ia, s.open("b", b) as ib:
                await ia.read(0, 3 * PAGE_SIZE)
                await ib.read(0, PAGE_SIZE + 1)
                await anyio.wait_all_tasks_blocked()  # readahead fills, if any, land
                await ib.evict(2 * PAGE_SIZE, 5 * PAGE_SIZE)  # and are dropped
                assert ia.cached_bytes == 3 * PAGE_SIZE
                assert ib.cached_bytes == 2 * PAGE_SIZE
                assert s.usage == 5 * PAGE_SIZE
                await ia.write(5, b"12345")
                await ib.write(PAGE_SIZE, b"xy")
                await ib.write(3 * PAGE_SIZE, b"through")  # uncached: written through
                assert ia.dirty_bytes == 5
                assert ib.dirty_bytes == 2
                assert s.dirty_bytes == ia.dirty_bytes + ib.dirty_bytes == 7
                assert b.data[3 * PAGE_SIZE : 3 * PAGE_SIZE + 7] == b"through"
                await ia.write_out()
                assert s.dirty_bytes == 2
            assert s.memory_limit == 2 * MiB

    async def test_shrink_writes_back_first_and_returns_usage(self) -> None:
        a = MemoryBacking(bytes(16 * PAGE_SIZE))
        b = MemoryBacking(pattern(16 * PAGE_SIZE))
        async with store(write_back=True) as s:
            async with s.open("a", a) as ia, s.open("b", b) as ib:
                await ia.write(0, pattern(16 * PAGE_SIZE, seed=5))
                await ib.read(0, 16 * PAGE_SIZE)
            assert s.usage == 32 * PAGE_SIZE
            assert s.dirty_bytes == 16 * PAGE_SIZE
            # A target above usage evicts nothing.
            assert await s.shrink(s.usage + PAGE_SIZE) == 32 * PAGE_SIZE
            assert s.statistics().evicted_bytes["shrink"] == 0
            after = await s.shrink(0)
            assert after == s.usage == 0
            assert s.dirty_bytes == 0
            assert a.data == pattern(16 * PAGE_SIZE, seed=5)
            assert s.statistics().evicted_bytes["shrink"] == 32 * PAGE_SIZE
            # Still readable, now from the backing.
            assert await s.get("a").read(0, 16 * PAGE_SIZE) == pattern(16 * PAGE_SIZE, seed=5)
            with pytest.raises(ValueError, match="shrink"):
                await s.shrink(-1)

    async def test_shrink_to_partial_target_stops_there(self) -> None:
        backing = MemoryBacking(pattern(32 * CHUNK))
        async with store(8 * MiB, policy="lru") as s, s.open("k", backing) as inode:
            await inode.read(0, 32 * CHUNK)
            assert s.usage == 32 * CHUNK
            target = 10 * CHUNK + 5
            after = await s.shrink(target)
            assert after == s.usage
            # Eviction works chunk by chunk: it stops at the first usage at or under target.
            assert target - CHUNK < after <= target

    async def test_shrink_skips_pinned_views(self) -> None:
        data = pattern(96 * CHUNK)
        backing = MemoryBacking(data)
        async with store(16 * MiB, policy="lru") as s, s.open("k", backing) as inode:
            # More pinned chunks than one policy scan looks at (64), oldest first.
            await inode.read(0, 80 * CHUNK)
            await inode.read(88 * CHUNK, 8 * CHUNK)
            async with inode.view(0, 80 * CHUNK) as views:
                assert s.pinned_bytes == 80 * CHUNK
                after = await s.shrink(0)
                assert after == s.usage == 80 * CHUNK
                assert b"".join(bytes(v) for v in views) == data[: 80 * CHUNK]
                assert inode.cached_ranges()[0].start == 0
                assert inode.cached_bytes == 80 * CHUNK
            assert await s.shrink(0) == 0

    async def test_shrink_skips_writable_view_then_writes_it_back(self) -> None:
        backing = MemoryBacking(pattern(4 * PAGE_SIZE))
        async with store() as s, s.open("k", backing) as inode:
            async with inode.view(PAGE_SIZE, 2 * PAGE_SIZE, writable=True) as views:
                views[0][:4] = b"VIEW"
                # Pinned pages stay (shrink may write them back, as msync would).
                assert await s.shrink(0) == 2 * PAGE_SIZE
                assert inode.cached_bytes == 2 * PAGE_SIZE
                assert bytes(views[0][:4]) == b"VIEW"
            assert await s.shrink(0) == 0
            assert backing.data[PAGE_SIZE : PAGE_SIZE + 4] == b"VIEW"

    async def test_shrink_with_failing_backing_raises_and_keeps_dirty_data(self) -> None:
        inner = MemoryBacking(bytes(8 * PAGE_SIZE))
        faulty = FaultInjector(inner, seed=11)
        clean = MemoryBacking(pattern(8 * PAGE_SIZE))
        async with (
            store(write_back=True) as s,
            s.open("bad", faulty) as bad,
            s.open("clean", clean) as ok,
        ):
            await bad.write(0, b"D" * (4 * PAGE_SIZE))
            await ok.read(0, 8 * PAGE_SIZE)
            faulty.error_rate = 1.0
            with anyio.fail_after(30), pytest.raises(WritebackError) as info:
                await s.shrink(0)  # once hung: the failed chunk was retried forever
            assert "bad" in str(info.value)
            # Everything else was evicted; the dirty data stayed dirty and cached.
            assert ok.cached_bytes == 0
            assert s.usage == bad.cached_bytes == 4 * PAGE_SIZE
            assert bad.dirty_bytes == 4 * PAGE_SIZE
            assert await bad.read(0, 4 * PAGE_SIZE) == b"D" * (4 * PAGE_SIZE)
            faulty.error_rate = 0.0
            assert await s.shrink(0) == 0
            assert inner.data[: 4 * PAGE_SIZE] == b"D" * (4 * PAGE_SIZE)

    # ---------------------------------------------------------------------------------------
    # Constructor input
    # ---------------------------------------------------------------------------------------

    @pytest.mark.parametrize("limit", [0, -1, 1.5, "1"])
    def test_bad_memory_limit(self, limit: Any) -> None:
        with pytest.raises(ValueError, match="memory_limit"):
            CacheStore(limit, registry=False)

    def test_unknown_tunable_is_type_error_naming_it(self) -> None:
        with pytest.raises(TypeError, match="no_such_knob"):
            CacheStore(MiB, registry=False, no_such_knob=1)

    def test_unknown_policy_lists_known_ones(self) -> None:
        with pytest.raises(ValueError, match="lru") as info:
            CacheStore(MiB, registry=False, policy="fifo-ish")
        assert "fifo-ish" in str(info.value)
        assert "s3fifo" in str(info.value)

    @pytest.mark.parametrize(
        ("tunables", "match"),
        [
            ({"low_watermark": 0.9, "high_watermark": 0.8}, "watermark"),
            ({"low_watermark": 0.0}, "watermark"),
            ({"high_watermark": 1.5}, "watermark"),
            ({"readahead_initial": 0}, "readahead_initial"),
            ({"hit_yield_every": -1}, "hit_yield_every"),
            ({"dirty_expire": 0}, "dirty_expire"),
            ({"writeback_interval": -1.0}, "writeback_interval"),
            ({"pressure_poll_interval": 0}, "pressure_poll_interval"),
            ({"writeback_max_run": 100}, "writeback_max_run"),
            ({"arena_size": 1000}, "arena_size"),
        ],
    )
    def test_bad_tunables(self, tunables: dict[str, Any], match: str) -> None:
        with pytest.raises(ValueError, match=match):
            CacheStore(MiB, registry=False, **tunables)

    def test_tunables_resolve_budget_defaults(self) -> None:
        s = CacheStore(64 * MiB, registry=False, dirty_limit_bytes=123 * PAGE_SIZE)
        t = s.tunables
        assert t.dirty_limit_bytes == 123 * PAGE_SIZE
        assert t.dirty_background_bytes == 64 * MiB // 10
        assert t.readahead_cap == 16 * MiB
        assert s.write_back is False

    # ---------------------------------------------------------------------------------------
    # write_back=True
    # ---------------------------------------------------------------------------------------

    async def test_write_through_is_the_default(self) -> None:
        backing = MemoryBacking(bytes(4 * PAGE_SIZE))
        async with store() as s, s.open("k", backing) as inode:
            await inode.write(PAGE_SIZE, b"W" * PAGE_SIZE)
            assert backing.stats.writes == 1
            assert backing.data[PAGE_SIZE : 2 * PAGE_SIZE] == b"W" * PAGE_SIZE
            assert inode.cached_bytes == 0
            assert inode.dirty_bytes == 0

    async def test_write_back_whole_pages_need_no_read(self) -> None:
        data = pattern(8 * PAGE_SIZE)
        backing = MemoryBacking(data)
        async with store(write_back=True) as s, s.open("k", backing) as inode:
            await inode.write(PAGE_SIZE, b"a" * (3 * PAGE_SIZE))
            assert backing.stats.reads == 0
            assert backing.stats.writes == 0
            assert inode.cached_bytes == 3 * PAGE_SIZE
            assert inode.dirty_bytes == 3 * PAGE_SIZE
            assert s.dirty_bytes == 3 * PAGE_SIZE
            assert await inode.read(PAGE_SIZE, 3 * PAGE_SIZE) == b"a" * (3 * PAGE_SIZE)
            assert backing.stats.reads == 0
            await inode.write_out()
            want = bytearray(data)
            want[PAGE_SIZE : 4 * PAGE_SIZE] = b"a" * (3 * PAGE_SIZE)
            assert backing.data == bytes(want)
            assert backing.stats.reads == 0

    async def test_write_back_past_eof_needs_no_read(self) -> None:
        size = 2 * PAGE_SIZE  # page-aligned: everything from 8192 on is past EOF
        backing = MemoryBacking(pattern(size))
        async with store(write_back=True) as s, s.open("k", backing) as inode:
            await inode.write(size + 100, b"tail")  # partial page, but past EOF
            await inode.write(5 * PAGE_SIZE + 7, b"far")  # leaves a hole
            assert backing.stats.reads == 0
            assert inode.size == 5 * PAGE_SIZE + 10
            want = bytearray(pattern(size))
            want.extend(bytes(5 * PAGE_SIZE + 10 - size))
            want[size + 100 : size + 104] = b"tail"
            want[5 * PAGE_SIZE + 7 :] = b"far"
            # The written pages read back from the cache, with zeros around the data.
            assert await inode.read(size, PAGE_SIZE) == bytes(want[size : size + PAGE_SIZE])
            assert await inode.read(5 * PAGE_SIZE, 10) == bytes(want[5 * PAGE_SIZE :])
            assert backing.stats.reads == 0
            # The hole between them reads as zeros.
            assert await inode.read(size, 4 * PAGE_SIZE) == bytes(want[size:])
            await inode.write_out()
            assert backing.data == bytes(want)

    async def test_write_back_partial_page_inside_file_is_filled_first(self) -> None:
        data = pattern(4 * PAGE_SIZE + 100)
        backing = MemoryBacking(data)
        async with store(write_back=True) as s, s.open("k", backing) as inode:
            await inode.write(PAGE_SIZE + 10, b"mid")  # inside page 1
            assert backing.stats.reads == 1
            assert backing.stats.read_bytes == PAGE_SIZE
            # The EOF page is inside the file too: its head must come from the backing.
            await inode.write(4 * PAGE_SIZE + 50, b"eofpage")
            assert backing.stats.reads == 2
            want = bytearray(data)
            want[PAGE_SIZE + 10 : PAGE_SIZE + 13] = b"mid"
            want[4 * PAGE_SIZE + 50 : 4 * PAGE_SIZE + 57] = b"eofpage"
            assert await inode.read(PAGE_SIZE, PAGE_SIZE) == bytes(want[PAGE_SIZE : 2 * PAGE_SIZE])
            assert await inode.read(4 * PAGE_SIZE, PAGE_SIZE) == bytes(want[4 * PAGE_SIZE :])
            assert backing.stats.reads == 2
            assert inode.dirty_bytes == 3 + 7
            await inode.write_out()
            assert backing.data == bytes(want)

    async def test_write_back_straddling_write_fills_only_partial_pages(self) -> None:
        data = pattern(8 * PAGE_SIZE)
        backing = MemoryBacking(data)
        async with store(write_back=True) as s, s.open("k", backing) as inode:
            # Partial head page 1, whole pages 2..4, partial tail page 5.
            await inode.write(PAGE_SIZE + 1000, b"s" * (4 * PAGE_SIZE))
            assert backing.stats.read_bytes == 2 * PAGE_SIZE
            want = bytearray(data)
            want[PAGE_SIZE + 1000 : 5 * PAGE_SIZE + 1000] = b"s" * (4 * PAGE_SIZE)
            assert await inode.read(0, 8 * PAGE_SIZE) == bytes(want)
            await inode.write_out()
            assert backing.data == bytes(want)

    # ---------------------------------------------------------------------------------------
    # Bounds
    # ---------------------------------------------------------------------------------------

    async def test_streaming_4x_limit_keeps_usage_under_limit_plus_one_window(self) -> None:
        limit = 4 * MiB
        window = 256 * KiB  # readahead_max: the largest fill a sequential reader issues
        nfiles = 16
        fsize = 4 * limit // nfiles
        peak = 0
        samples = 0

        def sample() -> None:
            nonlocal peak, samples
            samples += 1
            peak = max(peak, s.usage)

        stop = anyio.Event()

        async def sampler() -> None:
            while not stop.is_set():
                sample()
                await anyio.lowlevel.checkpoint()

        async def reader(i: int) -> None:
            backing = SamplingBacking(MemoryBacking(pattern(fsize, i), latency=0.0005), sample)
            expect = pattern(fsize, i)
            async with s.open(i, backing) as inode:
                off = 0
                step = 48 * KiB + 512  # not aligned to pages or chunks
                while off < fsize:
                    got = await inode.read(off, step)
                    sample()
                    assert got == expect[off : off + step]
                    off += len(got)

        s = store(limit, readahead_max=window, readahead_request=window // 2)
        with anyio.fail_after(60):
            async with s:
                async with anyio.create_task_group() as outer:
                    outer.start_soon(sampler)
                    async with anyio.create_task_group() as tg:
                        for i in range(nfiles):
                            tg.start_soon(reader, i)
                    stop.set()
                stats = s.statistics()
                assert stats.read_bytes_cache + stats.read_bytes_backing == nfiles * fsize
                assert stats.evicted_bytes["pressure"] >= nfiles * fsize - limit
                assert s.usage <= limit
        assert samples > 200
        assert 0 < peak <= limit + window

    @pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
    async def test_resident_memory_falls_after_shrink(self) -> None:
        # Measured on the pool's own mappings, not the process's RssAnon: a garbage collection
        # or a malloc trim elsewhere in the process during the test must not move the numbers.
        size = 64 * MiB
        backing = SyntheticBacking(size)
        async with store(128 * MiB) as s:
            async with s.open("big", backing) as inode:
                buf = bytearray(MiB)
                off = 0
                while off < size:
                    off += await inode.readinto(off, buf)
            assert s.usage == size
            arenas = [a.mm for a in s._pool._arenas if a is not None]
            filled = mapped_resident(arenas)
            assert await s.shrink(0) == 0
            after = mapped_resident(arenas)
        # The pool's pages really were resident, and really went back to the OS.
        assert filled >= size
        assert after <= size // 64, (filled, after)
