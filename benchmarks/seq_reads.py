"""Hot 1 MiB sequential reads through ``CachingInode.readinto`` against a plain memoryview copy.

A 64 MiB file is fully cached; the subject reads it front to back in 1 MiB ``readinto`` calls
(several passes per repetition). The baseline copies the same 1 MiB slices out of a 64 MiB
``bytearray`` into the same destination with ``dst[:] = src[a:b]``: the memory traffic of the
read with none of the cache's bookkeeping. The source is an anonymous ``mmap`` like the pool's
arenas (same kind of pages; a heap ``bytearray`` lands wherever malloc puts it, and its placement
alone moved the copy time by 10-20% between runs here). Target: at least 0.95x.
"""

from __future__ import annotations

import mmap

import anyio

from aiocache_inode import CacheStore, MemoryBacking

from ._baselines import data_bytes
from ._harness import (
    MIB,
    REPEATS,
    Result,
    now_ns,
    print_results,
    ratio_result,
    run_interleaved,
    summarize,
)

WORKLOAD = "seq_reads"
FILE_SIZE = 64 * MIB
READ_SIZE = 1 * MIB
PASSES = 16
#: Repetitions are cheap here (~0.1 s a round), and 2 cores shared with other work are noisy.
CHEAP_REPEATS = 11


async def _measure() -> list[Result]:
    data = data_bytes(FILE_SIZE, salt=2)
    src_map = mmap.mmap(-1, FILE_SIZE)
    src_map[:] = data
    src = memoryview(src_map)
    dst = bytearray(READ_SIZE)
    dst_view = memoryview(dst)
    offsets = list(range(0, FILE_SIZE, READ_SIZE)) * PASSES
    async with (
        CacheStore(memory_limit=2 * FILE_SIZE, registry=False) as store,
        store.open("seq", MemoryBacking(data)) as inode,
    ):
        for off in range(0, FILE_SIZE, READ_SIZE):
            await inode.readinto(off, dst)
        assert inode.cached_bytes == FILE_SIZE, inode.cached_bytes
        segments = len(inode.cached_ranges())
        counters = store._counters
        misses_before = counters.cache_misses

        async def subject() -> float:
            readinto = inode.readinto
            t0 = now_ns()
            for off in offsets:
                await readinto(off, dst)
            return (now_ns() - t0) / len(offsets)

        async def mv_copy() -> float:
            t0 = now_ns()
            for off in offsets:
                dst_view[:] = src[off : off + READ_SIZE]
            return (now_ns() - t0) / len(offsets)

        samples = await run_interleaved(
            {"CachingInode.readinto": subject, "memoryview copy": mv_copy},
            repeats=max(REPEATS, CHEAP_REPEATS),
        )
        assert counters.cache_misses == misses_before, "hot reads missed"
    src.release()
    src_map.close()
    subj = samples["CachingInode.readinto"]
    base = samples["memoryview copy"]
    gib_s = READ_SIZE / summarize(subj).median  # bytes per ns == GB/s
    return [
        ratio_result(
            WORKLOAD,
            "hot 1M sequential read",
            subj,
            "memoryview copy 1 MiB",
            base,
            unit="ns/read",
            target=0.95,
            higher_is_better=False,
            note=f"{gib_s:.2f} GB/s through the cache; {segments} cached range(s) after warm-up",
        )
    ]


def run() -> list[Result]:
    """Measure the workload on the asyncio backend; return its results."""
    return anyio.run(_measure, backend="asyncio")


if __name__ == "__main__":
    print_results(run(), "hot 1 MiB sequential reads (64 MiB file, all cached)")
