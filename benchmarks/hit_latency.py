"""Hit latency while misses are in flight on the same inode.

One inode over ``MemoryBacking(latency=20 ms, bandwidth=100 MB/s)``: its first 4 MiB are cached,
the rest is not. A reader times every 4 KiB hit at random offsets in the cached part
(``perf_counter_ns`` around each ``await inode.readinto``), once with nothing else running and
once while 8 tasks keep a miss each in flight to other (uncached, never repeated) ranges of the
same inode. A miss must not stall hits: the p99 hit latency with misses in flight must be at
most 2x the p99 without. Measured on asyncio, and on trio as well.
"""

from __future__ import annotations

import statistics

import anyio

from aiocache_inode import CacheStore, MemoryBacking

from ._baselines import data_bytes
from ._harness import (
    KIB,
    MIB,
    Result,
    info_result,
    now_ns,
    print_results,
    rng,
    run_interleaved,
    summarize,
)

WORKLOAD = "hit_latency"
FILE_SIZE = 64 * MIB
HOT_SIZE = 4 * MIB
COLD_START = 8 * MIB
READ_SIZE = 4 * KIB
HITS = 40_000
MISS_TASKS = 8
LATENCY = 0.020
BANDWIDTH = 100e6


async def _measure(backend: str) -> list[Result]:
    data = data_bytes(FILE_SIZE, salt=4)
    r = rng(4)
    hot = [r.randrange(HOT_SIZE // READ_SIZE) * READ_SIZE for _ in range(HITS)]
    cold_pages = list(range(COLD_START // READ_SIZE, FILE_SIZE // READ_SIZE))
    r.shuffle(cold_pages)
    cold = iter(p * READ_SIZE for p in cold_pages)
    backing = MemoryBacking(data, latency=LATENCY, bandwidth=BANDWIDTH)
    lat_by_case: dict[str, list[int]] = {"idle": [], "misses": []}
    misses_done = [0]
    async with (
        CacheStore(memory_limit=2 * FILE_SIZE, registry=False) as store,
        store.open("lat", backing) as inode,
    ):
        big = bytearray(HOT_SIZE)
        await inode.readinto(0, big)
        assert inode.cached_bytes >= HOT_SIZE

        async def hit_loop(case: str) -> float:
            buf = bytearray(READ_SIZE)
            readinto = inode.readinto
            lat = [0] * len(hot)
            for i, off in enumerate(hot):
                t0 = now_ns()
                await readinto(off, buf)
                lat[i] = now_ns() - t0
            lat_by_case[case].extend(lat)
            return summarize(lat).p99

        async def idle() -> float:
            return await hit_loop("idle")

        async def with_misses() -> float:
            stop = False

            async def miss_worker() -> None:
                buf = bytearray(READ_SIZE)
                while not stop:
                    await inode.readinto(next(cold), buf)
                    misses_done[0] += 1

            async with anyio.create_task_group() as tg:
                for _ in range(MISS_TASKS):
                    tg.start_soon(miss_worker)
                # Let every worker get its miss in flight before timing starts.
                for _ in range(1000):
                    if backing._active >= MISS_TASKS:
                        break
                    await anyio.sleep(0.001)
                p99 = await hit_loop("misses")
                stop = True
            return p99

        samples = await run_interleaved({"idle": idle, "misses": with_misses})
    base = summarize(samples["idle"])
    all_idle = summarize(lat_by_case["idle"])
    all_miss = summarize(lat_by_case["misses"])
    return [
        info_result(
            WORKLOAD,
            f"p99 4K hit, 8 misses in flight ({backend})",
            summarize([v / 1e3 for v in samples["misses"]]),
            unit="us (p99)",
            ratio=statistics.median(
                m / i for m, i in zip(samples["misses"], samples["idle"], strict=True)
            ),
            ratio_desc="median over rounds of paired p99 hit latency ratios, misses / idle",
            baseline=f"p99 4K hit, idle ({backend})",
            baseline_median=base.median / 1e3,
            target=2,
            target_kind="max",
            note=(
                f"all hits: idle median {all_idle.median / 1e3:.2f} us, p99 "
                f"{all_idle.p99 / 1e3:.2f} us, max {all_idle.max / 1e3:.0f} us; with misses "
                f"median {all_miss.median / 1e3:.2f} us, p99 {all_miss.p99 / 1e3:.2f} us, max "
                f"{all_miss.max / 1e3:.0f} us; {misses_done[0]} misses completed"
            ),
        )
    ]


def run() -> list[Result]:
    """Measure the workload on asyncio and on trio; return its results."""
    out = anyio.run(_measure, "asyncio", backend="asyncio")
    out += anyio.run(_measure, "trio", backend="trio")
    return out


if __name__ == "__main__":
    print_results(run(), "4 KiB hit latency while misses are in flight")
