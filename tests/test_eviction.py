"""Eviction: pressure sources (with fake cgroup and PSI files), the evictor, policies by name,
write-back before drop, pinned pages, and a no-deadlock load test against a model (issue 3)."""

from __future__ import annotations

import errno
import random
import struct
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest

from aiocache_inode import (
    PAGE_SIZE,
    BudgetPressure,
    CacheStore,
    CgroupPressure,
    FaultInjector,
    MemoryBacking,
    PsiPressure,
    WritebackError,
)
from aiocache_inode.backing.delegating import DelegatingBacking

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from aiocache_inode.eviction import PressureSource

KiB = 1 << 10
MiB = 1 << 20
CHUNK = 64 * KiB  # the eviction unit (inode.CHUNK_SIZE)


def pattern(size: int, seed: int = 0) -> bytes:
    block = bytes((i * 7 + seed * 13 + 1) & 0xFF for i in range(251))
    return (block * (size // len(block) + 1))[:size]


def store(limit: int, **kwargs: Any) -> CacheStore:
    return CacheStore(limit, registry=False, **kwargs)


class CountingSource:
    """Delegates to a pressure source and counts the evictor's polls."""

    def __init__(self, inner: PressureSource) -> None:
        self.inner = inner
        self.polls = 0
        self.polled = anyio.Event()

    def target(self, usage: int, limit: int) -> int | None:
        self.polls += 1
        self.polled.set()
        self.polled = anyio.Event()
        return self.inner.target(usage, limit)

    async def wait_polls(self, n: int) -> None:
        """Wait until the evictor has polled ``n`` more times (each poll finishes its run)."""
        for _ in range(n + 1):  # +1: the poll in progress may have read the old state
            await self.polled.wait()
        # The run that follows a poll is synchronous for clean data, or ends before the next
        # poll; one more poll proves the previous run finished.
        await self.polled.wait()


async def wait_until(predicate: Any) -> None:
    """Poll ``predicate`` until true; the deadline is only a generous hang guard."""
    with anyio.fail_after(20):
        while not predicate():  # noqa: ASYNC110 - state of the store, not an event we own
            await anyio.sleep(0.005)


# -------------------------------------------------------------------------------------------
# Pressure sources, alone
# -------------------------------------------------------------------------------------------


class TestBudgetPressure:
    def test_fires_above_high_and_targets_low(self) -> None:
        p = BudgetPressure(high=0.9, low=0.5)
        assert p.target(900, 1000) is None
        assert p.target(901, 1000) == 500
        assert p.target(5000, 1000) == 500

    @pytest.mark.parametrize(("high", "low"), [(0.5, 0.6), (1.1, 0.5), (0.9, 0.0)])
    def test_bad_watermarks(self, high: float, low: float) -> None:
        with pytest.raises(ValueError, match="low"):
            BudgetPressure(high=high, low=low)


class TestCgroupPressure:
    def write(self, d: Path, **files: str) -> None:
        for name, text in files.items():
            (d / name.replace("_", ".")).write_text(text + "\n")

    def test_no_files_no_pressure(self, tmp_path: Path) -> None:
        assert CgroupPressure(tmp_path).target(10 * MiB, 100 * MiB) is None

    def test_no_limit_no_pressure(self, tmp_path: Path) -> None:
        self.write(tmp_path, memory_current=str(90 * MiB), memory_high="max", memory_max="max")
        assert CgroupPressure(tmp_path).target(10 * MiB, 100 * MiB) is None

    def test_under_high_fraction_no_pressure(self, tmp_path: Path) -> None:
        self.write(tmp_path, memory_current=str(90 * MiB), memory_high=str(100 * MiB))
        assert CgroupPressure(tmp_path, high=0.9, low=0.8).target(10 * MiB, 100 * MiB) is None

    def test_memory_high_excess_comes_out_of_the_cache(self, tmp_path: Path) -> None:
        self.write(
            tmp_path,
            memory_current=str(95 * MiB),
            memory_high=str(100 * MiB),
            memory_max=str(200 * MiB),  # memory.high wins when set
        )
        p = CgroupPressure(tmp_path, high=0.9, low=0.8)
        # 15 MiB over 80% of memory.high: the cache gives those back.
        assert p.target(40 * MiB, 64 * MiB) == 25 * MiB
        # Never below zero.
        assert p.target(10 * MiB, 64 * MiB) == 0

    def test_memory_max_when_high_is_unlimited(self, tmp_path: Path) -> None:
        self.write(
            tmp_path, memory_current=str(100 * MiB), memory_high="max", memory_max=str(100 * MiB)
        )
        p = CgroupPressure(tmp_path, high=0.9, low=0.5)
        assert p.target(60 * MiB, 64 * MiB) == 10 * MiB

    def test_garbage_files_no_pressure(self, tmp_path: Path) -> None:
        self.write(tmp_path, memory_current="lots", memory_high=str(MiB))
        assert CgroupPressure(tmp_path).target(MiB, MiB) is None
        self.write(tmp_path, memory_current="", memory_high=str(MiB))
        assert CgroupPressure(tmp_path).target(MiB, MiB) is None

    def test_reads_the_files_every_time(self, tmp_path: Path) -> None:
        p = CgroupPressure(tmp_path, high=0.9, low=0.8)
        self.write(tmp_path, memory_current=str(50 * MiB), memory_max=str(100 * MiB))
        assert p.target(8 * MiB, 8 * MiB) is None
        self.write(tmp_path, memory_current=str(99 * MiB))
        assert p.target(30 * MiB, 64 * MiB) == 11 * MiB

    def test_bad_fractions(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="low"):
            CgroupPressure(tmp_path, high=0.5, low=0.7)


PSI_TEMPLATE = (
    "some avg10={some:.2f} avg60=1.00 avg300=0.50 total=123456\n"
    "full avg10={full:.2f} avg60=0.00 avg300=0.00 total=6543\n"
)


class TestPsiPressure:
    def test_parses_some_avg10(self, tmp_path: Path) -> None:
        f = tmp_path / "memory"
        f.write_text(PSI_TEMPLATE.format(some=12.5, full=99.0))
        assert PsiPressure(f).avg10() == 12.5

    def test_over_threshold_gives_back_a_step(self, tmp_path: Path) -> None:
        f = tmp_path / "memory"
        f.write_text(PSI_TEMPLATE.format(some=30.0, full=0.0))
        p = PsiPressure(f, threshold=10.0, step=0.25)
        assert p.target(1000, 2000) == 750
        f.write_text(PSI_TEMPLATE.format(some=10.0, full=50.0))  # at threshold, and `full` ignored
        assert p.target(1000, 2000) is None

    def test_missing_or_garbage_file_no_pressure(self, tmp_path: Path) -> None:
        f = tmp_path / "memory"
        assert PsiPressure(f).avg10() is None
        assert PsiPressure(f, threshold=0.0).target(100, 100) is None
        f.write_text("some avg10=high avg60=1\n")
        assert PsiPressure(f, threshold=0.0).target(100, 100) is None
        f.write_text("full avg10=50.00\n")
        assert PsiPressure(f, threshold=0.0).target(100, 100) is None

    @pytest.mark.parametrize(("threshold", "step"), [(-1.0, 0.1), (10.0, 0.0), (10.0, 1.5)])
    def test_bad_parameters(self, tmp_path: Path, threshold: float, step: float) -> None:
        with pytest.raises(ValueError, match="threshold"):
            PsiPressure(tmp_path / "memory", threshold=threshold, step=step)


# -------------------------------------------------------------------------------------------
# The evictor
# -------------------------------------------------------------------------------------------


async def test_evictor_brings_usage_down_to_low_watermark() -> None:
    limit = MiB
    size = 250 * PAGE_SIZE  # above the high watermark (95%), under the limit
    backing = MemoryBacking(pattern(size))  # the whole file: readahead cannot add to it
    async with store(limit, policy="lru") as s, s.open("k", backing) as inode:
        assert await inode.read(0, size) == pattern(size)  # the evictor may start meanwhile
        low = int(0.85 * limit)
        await wait_until(lambda: s.usage <= low)
        # It stops at the first chunk boundary under the low watermark, not below.
        assert low - CHUNK < s.usage <= low
        stats = s.statistics()
        assert stats.eviction_runs >= 1
        assert stats.evicted_bytes["pressure"] == size - s.usage
        # The evicted part reads back from the backing.
        assert await inode.read(0, size) == pattern(size)


async def test_evictor_sleeps_without_pressure() -> None:
    source = CountingSource(BudgetPressure(high=0.95, low=0.85))
    async with (
        store(MiB, pressure=[source], pressure_poll_interval=0.005) as s,
        s.open("k", MemoryBacking(pattern(200 * PAGE_SIZE))) as inode,
    ):
        await inode.read(0, 200 * PAGE_SIZE)  # 78%: under the high watermark
        await source.wait_polls(3)
        assert s.usage == 200 * PAGE_SIZE
        assert s.statistics().eviction_runs == 0
        assert s.statistics().evicted_bytes["pressure"] == 0


async def test_cgroup_pressure_drives_the_evictor(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text(f"{10 * MiB}\n")
    (tmp_path / "memory.high").write_text("max\n")
    (tmp_path / "memory.current").write_text(f"{5 * MiB}\n")
    source = CountingSource(CgroupPressure(tmp_path, high=0.9, low=0.8))
    data = pattern(2 * MiB)
    async with (
        store(8 * MiB, pressure=[source], pressure_poll_interval=0.005) as s,
        s.open("k", MemoryBacking(data)) as inode,
    ):
        await inode.read(0, 2 * MiB)
        await source.wait_polls(3)
        assert s.usage == 2 * MiB  # the group is fine: nothing evicted
        # The group passes 90% of memory.max: the 1.5 MiB over 80% comes out of the cache.
        (tmp_path / "memory.current").write_text(f"{19 * MiB // 2}\n")
        await wait_until(lambda: s.usage <= 2 * MiB - 3 * MiB // 2)
        assert s.statistics().eviction_runs >= 1
        # Pressure gone: the cache fills again and stays full.
        (tmp_path / "memory.current").write_text(f"{5 * MiB}\n")
        await source.wait_polls(2)
        assert await inode.read(0, 2 * MiB) == data
        assert s.usage == 2 * MiB
        evicted = s.statistics().evicted_bytes["pressure"]
        await source.wait_polls(3)
        assert s.usage == 2 * MiB
        assert s.statistics().evicted_bytes["pressure"] == evicted


async def test_psi_pressure_drives_the_evictor(tmp_path: Path) -> None:
    psi = tmp_path / "memory"
    psi.write_text(PSI_TEMPLATE.format(some=0.5, full=0.0))
    source = CountingSource(PsiPressure(psi, threshold=10.0, step=0.5))
    data = pattern(2 * MiB)
    async with (
        store(8 * MiB, pressure=[source], pressure_poll_interval=0.005) as s,
        s.open("k", MemoryBacking(data)) as inode,
    ):
        await inode.read(0, 2 * MiB)
        await source.wait_polls(3)
        assert s.usage == 2 * MiB
        psi.write_text(PSI_TEMPLATE.format(some=40.0, full=5.0))
        await wait_until(lambda: s.usage <= MiB // 4)  # halves on every poll
        assert s.statistics().eviction_runs >= 3
        psi.write_text(PSI_TEMPLATE.format(some=1.0, full=0.0))
        await source.wait_polls(2)
        assert await inode.read(0, 2 * MiB) == data
        evicted = s.statistics().evicted_bytes["pressure"]
        await source.wait_polls(3)
        assert s.usage == 2 * MiB
        assert s.statistics().evicted_bytes["pressure"] == evicted


# -------------------------------------------------------------------------------------------
# Policies by name
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["lru", "clock", "s3fifo"])
async def test_policy_by_name_bounds_the_cache(policy: str) -> None:
    data = pattern(64 * CHUNK)
    async with store(16 * CHUNK, policy=policy) as s, s.open("k", MemoryBacking(data)) as inode:
        for c in reversed(range(64)):
            assert await inode.read(c * CHUNK, CHUNK) == data[c * CHUNK : (c + 1) * CHUNK]
            assert s.usage <= 16 * CHUNK
        s._check_invariants()


def test_unknown_policy_name() -> None:
    with pytest.raises(ValueError, match="unknown eviction policy"):
        CacheStore(MiB, registry=False, policy="mru")


@pytest.mark.parametrize(("policy", "keeps_hot"), [("lru", False), ("s3fifo", True)])
async def test_scan_resistance(policy: str, keeps_hot: bool) -> None:
    """A hot set read three times survives a one-time scan of 4x the cache under S3-FIFO and
    is flushed out by it under LRU."""
    hot = MemoryBacking(pattern(4 * CHUNK))
    scan = MemoryBacking(pattern(64 * CHUNK, seed=1))
    async with (
        store(16 * CHUNK, policy=policy) as s,
        s.open("hot", hot) as h,
        s.open("scan", scan) as sc,
    ):
        for _ in range(3):
            for c in range(4):
                await h.read(c * CHUNK, CHUNK)
        before = hot.stats.reads
        for c in reversed(range(64)):  # backwards: no readahead, one fill per chunk
            await sc.read(c * CHUNK, CHUNK)
        for c in reversed(range(4)):
            await h.read(c * CHUNK, CHUNK)
        refetched = hot.stats.reads - before
    if keeps_hot:
        assert refetched == 0
    else:
        assert refetched > 0


# -------------------------------------------------------------------------------------------
# Dirty data, failures, pins
# -------------------------------------------------------------------------------------------


async def test_evictor_writes_dirty_data_back_before_dropping_it() -> None:
    limit = MiB
    backing = MemoryBacking()
    data = pattern(250 * PAGE_SIZE, seed=3)
    async with store(limit, write_back=True, policy="lru") as s, s.open("k", backing) as inode:
        await inode.write(0, data)  # past EOF, whole pages: cached dirty, no backing I/O
        assert backing.stats.writes == 0
        await wait_until(lambda: s.usage <= int(0.85 * limit))
        gone = len(data) - inode.cached_bytes
        assert gone >= len(data) - int(0.85 * limit)
        # Everything evicted reached the backing first.
        assert backing.stats.written_bytes >= gone
        assert await inode.read(0, len(data)) == data
        await inode.write_out()
        assert backing.data == data


async def test_direct_reclaim_writes_back_dirty_data() -> None:
    limit = 256 * KiB
    backing = MemoryBacking()
    data = pattern(MiB, seed=4)
    peak = 0
    async with store(limit, write_back=True) as s, s.open("k", backing) as inode:
        for off in range(0, len(data), 4 * PAGE_SIZE):
            await inode.write(off, data[off : off + 4 * PAGE_SIZE])
            peak = max(peak, s.usage)
        assert peak <= limit
        assert inode.cached_bytes <= limit
        assert await inode.read(0, len(data)) == data
        await inode.write_out()
        assert backing.data == data


async def test_failing_writeback_keeps_data_dirty_and_cached() -> None:
    limit = MiB
    inner = MemoryBacking()
    faulty = FaultInjector(inner, seed=5)
    data = pattern(250 * PAGE_SIZE, seed=6)
    source = CountingSource(BudgetPressure(0.95, 0.85))
    async with (
        store(limit, write_back=True, pressure=[source], pressure_poll_interval=0.005) as s,
        s.open("k", faulty) as inode,
    ):
        faulty.error_rate = 1.0
        await inode.write(0, data)
        await wait_until(lambda: s.statistics().writeback_errors >= 1)
        await source.wait_polls(3)
        assert s.statistics().eviction_runs >= 2
        # Nothing was dropped: all of it is still dirty, cached and readable (hits).
        assert inode.dirty_bytes == len(data)
        assert inode.cached_bytes == len(data)
        assert s.usage == len(data)
        assert await inode.read(0, len(data)) == data
        assert inner.data == b""
        with anyio.fail_after(30), pytest.raises(WritebackError):
            await s.shrink(0)
        assert inode.dirty_bytes == len(data)
        faulty.error_rate = 0.0
        assert await s.shrink(0) == 0
        assert inner.data == data


async def test_pinned_pages_are_never_evicted(tmp_path: Path) -> None:
    psi = tmp_path / "memory"
    psi.write_text(PSI_TEMPLATE.format(some=0.0, full=0.0))
    source = CountingSource(PsiPressure(psi, threshold=5.0, step=1.0))  # "drop everything"
    data = pattern(2 * MiB, seed=7)
    async with (
        store(4 * MiB, pressure=[source], pressure_poll_interval=0.005) as s,
        s.open("k", MemoryBacking(data)) as inode,
    ):
        await inode.read(0, 2 * MiB)
        lo, hi = 100 * KiB + 3, 900 * KiB + 5
        async with inode.view(lo, hi - lo) as views:
            psi.write_text(PSI_TEMPLATE.format(some=50.0, full=0.0))
            await wait_until(lambda: s.statistics().eviction_runs >= 3)
            await source.wait_polls(3)
            pinned_pages = (hi + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE
            pinned_pages -= lo // PAGE_SIZE * PAGE_SIZE
            assert s.pinned_bytes == pinned_pages
            assert inode.cached_bytes == pinned_pages == s.usage
            assert b"".join(bytes(v) for v in views) == data[lo:hi]
            assert await inode.read(lo, hi - lo) == data[lo:hi]
        await wait_until(lambda: s.usage == 0)


class GatedBacking(DelegatingBacking[MemoryBacking]):
    """A MemoryBacking whose reads and writes can be held at a gate (to order tasks exactly),
    and whose writes can be made to fail."""

    def __init__(self, inner: MemoryBacking) -> None:
        super().__init__(inner)
        self.read_gate: anyio.Event | None = None
        self.write_gate: anyio.Event | None = None
        self.read_entered = anyio.Event()
        self.write_entered = anyio.Event()
        self.fail_writes = False

    async def read_into(self, offset: int, buffers: Sequence[memoryview]) -> int:
        if self.read_gate is not None:
            self.read_entered.set()
            await self.read_gate.wait()
        return await self.inner.read_into(offset, buffers)

    async def write_from(self, offset: int, buffers: Sequence[memoryview]) -> int:
        if self.write_gate is not None:
            self.write_entered.set()
            await self.write_gate.wait()
        if self.fail_writes:
            raise OSError(errno.EIO, "gated failure")
        return await self.inner.write_from(offset, buffers)


async def test_write_back_fallback_after_failed_reclaim_rescans_the_gap() -> None:
    """A write-back-mode write whose direct reclaim fails (the only victim is dirty and its
    backing fails) falls back to write-through; a view's fill that started in the same gap
    while reclaim was writing back must not break it."""
    a = GatedBacking(MemoryBacking(bytes(64 * PAGE_SIZE)))
    b = GatedBacking(MemoryBacking(bytes(PAGE_SIZE)))
    errors: list[BaseException] = []
    # high_watermark=1.0 keeps the background evictor out of the way: only direct reclaim runs.
    async with (
        store(64 * KiB, write_back=True, high_watermark=1.0, dirty_expire=3600) as s,
        s.open("a", a) as ia,
        s.open("b", b) as ib,
    ):
        await ib.write(0, b"b" * PAGE_SIZE)  # one dirty page: the only evictable chunk
        async with ia.view(0, 15 * PAGE_SIZE):  # pins the rest of the budget
            assert s.usage == 64 * KiB
            b.write_gate = anyio.Event()
            b.fail_writes = True

            async def writer() -> None:
                try:
                    await ia.write(20 * PAGE_SIZE, b"w" * (2 * PAGE_SIZE))
                except Exception as exc:
                    errors.append(exc)

            async def viewer() -> None:
                async with ia.view(20 * PAGE_SIZE, PAGE_SIZE):
                    pass

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(writer)
                    await b.write_entered.wait()  # the writer's reclaim is writing b back
                    a.read_gate = anyio.Event()
                    tg.start_soon(viewer)
                    await a.read_entered.wait()  # the view's fill is in the writer's gap
                    b.write_gate.set()  # reclaim fails: the writer falls back
                    await anyio.wait_all_tasks_blocked()
                    a.read_gate.set()
            b.fail_writes = False
            assert not errors, errors
            assert await ia.read(20 * PAGE_SIZE, 2 * PAGE_SIZE) == b"w" * (2 * PAGE_SIZE)
        await ia.write_out()
        assert a.inner.data[20 * PAGE_SIZE : 22 * PAGE_SIZE] == b"w" * (2 * PAGE_SIZE)


# -------------------------------------------------------------------------------------------
# Load: readers, writers, views, shrink and the evictor together
# -------------------------------------------------------------------------------------------

NFILES = 4
NPAGES = 64  # per file: 4 x 256 KiB = 2x the budget below
WRITER_REGIONS = [(0, 24), (24, 48)]  # pages each write() task owns, in every file
VIEW_REGION = (48, NPAGES)  # pages the writable-view task owns


def page_bytes(f: int, p: int, v: int) -> bytes:
    """Version ``v`` of page ``p`` of file ``f``: its identity repeated over the page."""
    return struct.pack("<HHI", f, p, v) * (PAGE_SIZE // 8)


class Model:
    """Per page: the last version whose write completed, and the last one started."""

    def __init__(self) -> None:
        self.done = [[0] * NPAGES for _ in range(NFILES)]
        self.started = [[0] * NPAGES for _ in range(NFILES)]

    def check(self, f: int, off: int, got: bytes, floor: list[int]) -> None:
        """``got`` (file ``f`` from ``off``) holds, in every page, one whole version no older
        than ``floor`` (done when the read began) and no newer than any write started."""
        pos = off
        end = off + len(got)
        while pos < end:
            p = pos // PAGE_SIZE
            a = pos - p * PAGE_SIZE
            b = min(PAGE_SIZE, end - p * PAGE_SIZE)
            piece = got[pos - off : pos - off + (b - a)]
            ok = any(
                page_bytes(f, p, v)[a:b] == piece for v in range(floor[p], self.started[f][p] + 1)
            )
            assert ok, f"file {f} page {p} [{a}, {b}) is torn, stale or invented"
            pos += b - a

    def contents(self, f: int) -> bytes:
        return b"".join(page_bytes(f, p, self.done[f][p]) for p in range(NPAGES))


@pytest.mark.parametrize("write_back", [False, True], ids=["write-through", "write-back"])
async def test_no_deadlock_under_load(write_back: bool) -> None:
    model = Model()
    backings = [
        MemoryBacking(b"".join(page_bytes(f, p, 0) for p in range(NPAGES)), latency=0.0002)
        for f in range(NFILES)
    ]
    limit = 128 * KiB + 8 * PAGE_SIZE  # a fraction of the 1 MiB of data: eviction never stops
    rounds = 150

    async def reader(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(rounds):
            f = rng.randrange(NFILES)
            off = rng.randrange(NPAGES * PAGE_SIZE)
            n = rng.randrange(1, 12 * PAGE_SIZE)
            floor = list(model.done[f])
            async with s.open(f, backings[f]) as inode:
                got = await inode.read(off, n)
            assert len(got) == min(n, NPAGES * PAGE_SIZE - off)
            model.check(f, off, got, floor)

    async def writer(seed: int, region: tuple[int, int]) -> None:
        rng = random.Random(seed)
        for _ in range(rounds):
            f = rng.randrange(NFILES)
            first = rng.randrange(*region)
            last = min(region[1], first + rng.randrange(1, 5))
            versions = []
            for p in range(first, last):
                model.started[f][p] += 1
                versions.append(model.started[f][p])
            data = b"".join(
                page_bytes(f, p, v) for p, v in zip(range(first, last), versions, strict=True)
            )
            async with s.open(f, backings[f]) as inode:
                assert await inode.write(first * PAGE_SIZE, data) == len(data)
            for p, v in zip(range(first, last), versions, strict=True):
                model.done[f][p] = max(model.done[f][p], v)

    async def view_reader(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(rounds // 2):
            f = rng.randrange(NFILES)
            first = rng.randrange(NPAGES - 4)
            n = rng.randrange(1, 4) * PAGE_SIZE
            floor = list(model.done[f])
            async with s.open(f, backings[f]) as inode, inode.view(first * PAGE_SIZE, n) as vs:
                model.check(f, first * PAGE_SIZE, b"".join(bytes(v) for v in vs), floor)
                await anyio.sleep(0.001)  # stay pinned while the others evict around us
                model.check(f, first * PAGE_SIZE, b"".join(bytes(v) for v in vs), floor)

    async def view_writer(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(rounds // 2):
            f = rng.randrange(NFILES)
            p = rng.randrange(*VIEW_REGION)
            async with (
                s.open(f, backings[f]) as inode,
                inode.view(p * PAGE_SIZE, PAGE_SIZE, writable=True) as vs,
            ):
                v = model.started[f][p] = model.started[f][p] + 1
                (view,) = vs
                view[:] = page_bytes(f, p, v)  # synchronous: no torn page to see
                model.done[f][p] = v
                await anyio.lowlevel.checkpoint()

    async def shrinker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(rounds // 2):
            await s.shrink(rng.randrange(limit))
            await anyio.sleep(0.001)

    s = store(limit, write_back=write_back, pressure_poll_interval=0.005)
    with anyio.fail_after(60):  # a deadlock guard only: the run takes about a second
        async with s:
            async with anyio.create_task_group() as tg:
                for i in range(3):
                    tg.start_soon(reader, 100 + i)
                for i, region in enumerate(WRITER_REGIONS):
                    tg.start_soon(writer, 200 + i, region)
                tg.start_soon(view_reader, 300)
                tg.start_soon(view_writer, 400)
                tg.start_soon(shrinker, 500)
            s._check_invariants()
            assert s.pinned_bytes == 0
            for f in range(NFILES):
                async with s.open(f, backings[f]) as inode:
                    assert await inode.read(0, NPAGES * PAGE_SIZE) == model.contents(f)
            stats = s.statistics()
            assert stats.evicted_bytes["pressure"] + stats.evicted_bytes["shrink"] > 0
            await s.sync()
            for f in range(NFILES):
                assert backings[f].data == model.contents(f)


def test_own_cgroup_dir_reads_the_v2_line(tmp_path: Path) -> None:
    from aiocache_inode.eviction import own_cgroup_dir

    proc = tmp_path / "cgroup"
    proc.write_text("1:name=systemd:/x\n0::/user.slice/app.scope\n")
    assert own_cgroup_dir(proc, tmp_path) == tmp_path / "user.slice/app.scope"
    assert own_cgroup_dir(tmp_path / "missing", tmp_path) == tmp_path
    proc.write_text("3:memory:/v1only\n")
    assert own_cgroup_dir(proc, tmp_path) == tmp_path
