"""The flusher and writer throttling: expiry, the background threshold, coalesced runs, the
hard dirty limit, and a failing backing that must not hang writers (issue 3)."""

from __future__ import annotations

import random
from typing import Any

import anyio
import pytest

from aiocache_inode import PAGE_SIZE, CacheStore, FaultInjector, MemoryBacking, Range

KiB = 1 << 10
MiB = 1 << 20
#: Flusher settings that never fire on their own within a test.
NEVER = 3600.0


def pattern(size: int, seed: int = 0) -> bytes:
    block = bytes((i * 7 + seed * 13 + 1) & 0xFF for i in range(251))
    return (block * (size // len(block) + 1))[:size]


def store(limit: int = 16 * MiB, **kwargs: Any) -> CacheStore:
    return CacheStore(limit, registry=False, write_back=True, **kwargs)


async def flusher_passes(s: CacheStore, n: int, *, idle: bool = False) -> None:
    """Wait until the flusher has completed ``n`` passes that started after this call.

    A periodic flusher may be mid-pass now (that pass does not count); an ``idle`` one (woken
    by the caller just before) is not. The deadline is only a hang guard.
    """
    with anyio.fail_after(20):
        for _ in range(n if idle else n + 1):
            await s._flusher.progress.wait()


async def wait_until(predicate: Any) -> None:
    """Poll ``predicate`` until true; the deadline is only a generous hang guard."""
    with anyio.fail_after(20):
        while not predicate():  # noqa: ASYNC110 - state of the store, not an event we own
            await anyio.sleep(0.005)


# -------------------------------------------------------------------------------------------
# Expiry
# -------------------------------------------------------------------------------------------


async def test_expired_dirty_data_is_written_back() -> None:
    backing = MemoryBacking()
    data = pattern(40 * KiB)
    async with (
        store(dirty_expire=0.02, writeback_interval=0.01) as s,
        s.open("k", backing) as inode,
    ):
        await inode.write(0, data)
        assert inode.dirty_bytes == len(data)
        await wait_until(lambda: inode.dirty_bytes == 0)
        assert backing.data == data
        assert s.dirty_bytes == 0
        assert s.statistics().writeback_bytes == len(data)
        assert inode.cached_bytes == len(data)  # written back, still cached


async def test_unexpired_dirty_data_stays_dirty() -> None:
    backing = MemoryBacking()
    async with (
        store(dirty_expire=NEVER, writeback_interval=0.005) as s,
        s.open("k", backing) as inode,
    ):
        await inode.write(0, pattern(40 * KiB))
        await flusher_passes(s, 5)
        assert inode.dirty_bytes == 40 * KiB
        assert backing.stats.writes == 0


async def test_redirtied_inode_is_flushed_again() -> None:
    backing = MemoryBacking()
    async with (
        store(dirty_expire=0.02, writeback_interval=0.005) as s,
        s.open("k", backing) as inode,
    ):
        await inode.write(0, b"1" * PAGE_SIZE)
        await wait_until(lambda: inode.dirty_bytes == 0)
        await inode.write(0, b"2" * PAGE_SIZE)  # a cached page: dirty again, a new age
        assert inode.dirty_bytes == PAGE_SIZE
        await wait_until(lambda: inode.dirty_bytes == 0)
        assert backing.data == b"2" * PAGE_SIZE
        assert s.statistics().writeback_bytes == 2 * PAGE_SIZE


# -------------------------------------------------------------------------------------------
# The background threshold
# -------------------------------------------------------------------------------------------


async def test_background_threshold_wakes_the_flusher() -> None:
    backing = MemoryBacking()
    threshold = 64 * KiB
    async with (
        store(dirty_background_bytes=threshold, dirty_expire=NEVER, writeback_interval=NEVER) as s,
        s.open("k", backing) as inode,
    ):
        await inode.write(0, pattern(32 * KiB))
        s._wake_flusher()  # a pass under the threshold writes nothing unexpired
        await flusher_passes(s, 1, idle=True)
        assert inode.dirty_bytes == 32 * KiB
        assert backing.stats.writes == 0
        await inode.write(32 * KiB, pattern(64 * KiB, seed=1))  # now over it
        await wait_until(lambda: s.dirty_bytes <= threshold)
        assert backing.stats.written_bytes >= 96 * KiB - threshold
        await inode.write_out()
        assert backing.data == pattern(32 * KiB) + pattern(64 * KiB, seed=1)


# -------------------------------------------------------------------------------------------
# Coalesced runs
# -------------------------------------------------------------------------------------------


async def test_write_out_coalesces_page_writes_into_one_request() -> None:
    backing = MemoryBacking()
    npages = 64
    order = list(range(npages))
    random.Random(1).shuffle(order)
    async with (
        store(dirty_expire=NEVER, writeback_interval=NEVER) as s,
        s.open("k", backing) as inode,
    ):
        for p in order:
            await inode.write(p * PAGE_SIZE, pattern(PAGE_SIZE, seed=p))
        assert inode.dirty_ranges() == [Range(0, npages * PAGE_SIZE)]
        await inode.write_out()
    assert backing.stats.writes == 1
    assert backing.stats.written_bytes == npages * PAGE_SIZE
    assert backing.data == b"".join(pattern(PAGE_SIZE, seed=p) for p in range(npages))


async def test_flusher_runs_are_capped_at_writeback_max_run() -> None:
    backing = MemoryBacking()
    async with (
        store(writeback_max_run=64 * KiB, dirty_expire=0.01, writeback_interval=0.005) as s,
        s.open("k", backing) as inode,
    ):
        await inode.write(0, pattern(256 * KiB))  # one write: one dirty segment at once
        await wait_until(lambda: inode.dirty_bytes == 0)
    assert backing.stats.writes == 4
    assert backing.data == pattern(256 * KiB)


async def test_flusher_writes_a_threshold_crossing_in_one_run() -> None:
    backing = MemoryBacking()
    npages = 64
    order = list(range(npages))
    random.Random(2).shuffle(order)
    async with (
        store(
            dirty_background_bytes=npages * PAGE_SIZE - 1,
            dirty_expire=NEVER,
            writeback_interval=NEVER,
        ) as s,
        s.open("k", backing) as inode,
    ):
        for p in order:  # only the last write crosses the threshold
            await inode.write(p * PAGE_SIZE, pattern(PAGE_SIZE, seed=p))
        await wait_until(lambda: inode.dirty_bytes == 0)
        assert backing.stats.writes == 1
        assert s.statistics().writeback_runs == 1


async def test_eviction_writes_back_whole_dirty_segments() -> None:
    backing = MemoryBacking()
    async with (
        store(dirty_expire=NEVER, writeback_interval=NEVER) as s,
        s.open("k", backing) as inode,
    ):
        await inode.write(0, pattern(MiB))
        assert await s.shrink(0) == 0
    # 16 chunks evicted, one request: the first chunk's write-back took its whole segment.
    assert backing.stats.writes == 1
    assert backing.data == pattern(MiB)


# -------------------------------------------------------------------------------------------
# Throttling
# -------------------------------------------------------------------------------------------


async def test_writers_are_throttled_above_the_dirty_limit() -> None:
    backing = MemoryBacking(latency=0.01)
    limit = 64 * KiB
    piece = 16 * KiB
    nwriters = 4
    peak = 0
    async with store(dirty_limit_bytes=limit, dirty_expire=NEVER, writeback_interval=NEVER) as s:
        assert s.tunables.dirty_background_bytes > limit  # the default: 1 MiB

        async def writer(w: int) -> None:
            nonlocal peak
            async with s.open("k", backing) as inode:
                for i in range(8):
                    off = (w * 8 + i) * piece
                    await inode.write(off, pattern(piece, seed=w * 8 + i))
                    peak = max(peak, s.dirty_bytes)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for w in range(nwriters):
                    tg.start_soon(writer, w)
        stats = s.statistics()
        assert stats.throttled_seconds > 0
        assert backing.stats.writes > 0  # writers waited for the flusher, not for exit
        # Each writer can add one piece past the limit before it is throttled again.
        assert peak <= limit + nwriters * piece
        async with s.open("k", backing) as inode:
            await inode.write_out()
    assert backing.data == b"".join(pattern(piece, seed=i) for i in range(nwriters * 8))


async def test_no_throttling_under_the_limit() -> None:
    backing = MemoryBacking(latency=0.01)
    async with store(dirty_limit_bytes=MiB, dirty_expire=NEVER, writeback_interval=NEVER) as s:
        async with s.open("k", backing) as inode:
            for i in range(8):
                await inode.write(i * 16 * KiB, pattern(16 * KiB, seed=i))
        assert s.statistics().throttled_seconds == 0
        assert backing.stats.writes == 0


async def test_failing_backing_does_not_hang_writers() -> None:
    inner = MemoryBacking()
    faulty = FaultInjector(inner, seed=9)
    data = pattern(512 * KiB)
    async with (
        store(dirty_limit_bytes=64 * KiB, dirty_expire=NEVER, writeback_interval=NEVER) as s,
        s.open("k", faulty) as inode,
    ):
        faulty.error_rate = 1.0
        with anyio.fail_after(30):
            for off in range(0, len(data), 16 * KiB):
                await inode.write(off, data[off : off + 16 * KiB])
        stats = s.statistics()
        assert stats.writeback_errors > 0
        # Nothing lost: every byte is dirty, cached and readable.
        assert inode.dirty_bytes == len(data)
        assert await inode.read(0, len(data)) == data
        faulty.error_rate = 0.0
        await inode.write_out()
        assert inner.data == data


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_bad_flusher_tunables(bad: float) -> None:
    with pytest.raises(ValueError, match="dirty_expire"):
        CacheStore(MiB, registry=False, dirty_expire=bad)
