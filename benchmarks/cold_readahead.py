"""Cold sequential reads from a slow object-store model: adaptive readahead against the seed.

The backing is ``MemoryBacking(latency=20 ms, bandwidth=100 MB/s per request)``. A reader goes
through 16 MiB front to back in 64 KiB ``readinto`` calls, each repetition on a fresh store
(everything cold). Compared, on the same data and the same delay model:

- the subject: ``CachingInode.readinto`` with the default tunables (the window grows on
  sequential access, several backing requests in flight, a cap on speculative bytes);
- the seed's policy: fill only what the read requires, at most a 64 KiB window, no readahead.
  This baseline is the seed's I/O pattern written directly: one 64 KiB
  ``MemoryBacking.read_into`` per read, in sequence (what the cache itself does with
  ``readahead_max=0``, minus the cache's own overhead, which only favours the baseline);
- fsspec's ``ReadAheadCache`` (``AbstractBufferedFile``, ``cache_type="readahead"``, fsspec's
  default 5 MiB block) whose fetcher sleeps the same delay (synchronously; fsspec files are
  synchronous).

Targets: at least 10x the seed, at least 2x fsspec. A separate check reads 64 KiB at random
offsets on a fresh store: random access must not trigger readahead (0 speculative bytes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from aiocache_inode import CacheStore, MemoryBacking

from ._baselines import SlowBufferedFile, data_bytes
from ._harness import (
    KIB,
    MIB,
    Result,
    info_result,
    now_ns,
    print_results,
    ratio_result,
    rng,
    run_interleaved,
    summarize,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

WORKLOAD = "cold_readahead"
LATENCY = 0.020
BANDWIDTH = 100e6
FILE_SIZE = 16 * MIB
READ_SIZE = 64 * KIB
MEMORY_LIMIT = 64 * MIB
#: The seed baseline takes ~5 s per repetition (256 x 20.7 ms); 5 is the minimum the suite allows.
REPEATS = 5
RANDOM_READS = 48


async def _measure() -> list[Result]:
    data = data_bytes(FILE_SIZE, salt=3)
    buf = bytearray(READ_SIZE)
    view = memoryview(buf)
    offsets = range(0, FILE_SIZE, READ_SIZE)
    info: dict[str, float] = {}

    def mb_s(t0: int) -> float:
        return FILE_SIZE / ((now_ns() - t0) / 1e9) / 1e6

    async def subject() -> float:
        backing = MemoryBacking(data, latency=LATENCY, bandwidth=BANDWIDTH)
        async with CacheStore(memory_limit=MEMORY_LIMIT, registry=False) as store:
            async with store.open("cold", backing) as inode:
                readinto = inode.readinto
                t0 = now_ns()
                for off in offsets:
                    await readinto(off, buf)
                rate = mb_s(t0)
                assert bytes(buf) == data[FILE_SIZE - READ_SIZE :]
            st = store.statistics()
        info["requests"] = backing.stats.reads
        info["peak"] = backing.stats.concurrent_peak
        info["ra"] = st.readahead_bytes
        info["ra_used"] = st.readahead_used_bytes
        info["ra_wasted"] = st.readahead_wasted_bytes
        return rate

    async def seed_policy() -> float:
        backing = MemoryBacking(data, latency=LATENCY, bandwidth=BANDWIDTH)
        views = [view]
        t0 = now_ns()
        for off in offsets:
            await backing.read_into(off, views)
        return mb_s(t0)

    async def fsspec_readahead() -> float:
        f = SlowBufferedFile(data, latency=LATENCY, bandwidth=BANDWIDTH, cache_type="readahead")
        t0 = now_ns()
        for off in offsets:
            f.seek(off)
            f.readinto(buf)
        rate = mb_s(t0)
        info["fsspec_fetches"] = f.fetches
        info["fsspec_block"] = f.blocksize
        f.close()
        return rate

    cases: dict[str, Callable[[], Awaitable[float]]] = {
        "CachingInode (adaptive readahead)": subject,
        "seed policy (64 KiB, no readahead)": seed_policy,
        "fsspec ReadAheadCache": fsspec_readahead,
    }
    samples = await run_interleaved(cases, repeats=REPEATS)

    # Random access: no readahead may be issued.
    r = rng(3)
    pages = (FILE_SIZE - READ_SIZE) // 4096
    rand_offsets = [r.randrange(pages) * 4096 for _ in range(RANDOM_READS)]
    backing = MemoryBacking(data, latency=LATENCY, bandwidth=BANDWIDTH)
    lat: list[float] = []
    async with CacheStore(memory_limit=MEMORY_LIMIT, registry=False) as store:
        async with store.open("random", backing) as inode:
            for off in rand_offsets:
                t0 = now_ns()
                await inode.readinto(off, buf)
                lat.append((now_ns() - t0) / 1e6)
        st = store.statistics()
    random_read_bytes = RANDOM_READS * READ_SIZE

    s = samples
    subj = s["CachingInode (adaptive readahead)"]
    unit = "MB/s"
    used = info["ra_used"]
    note = (
        f"{info['requests']:.0f} backing reads, peak {info['peak']:.0f} in flight; readahead "
        f"{info['ra'] / MIB:.1f} MiB issued, {used / MIB:.1f} MiB used, "
        f"{info['ra_wasted'] / MIB:.2f} MiB wasted"
    )
    return [
        ratio_result(
            WORKLOAD, "cold 64K sequential read", subj, "seed policy (64 KiB window)",
            s["seed policy (64 KiB, no readahead)"], unit=unit, target=10,
            higher_is_better=True, note=note,
        ),
        ratio_result(
            WORKLOAD, "cold 64K sequential read", subj, "fsspec ReadAheadCache",
            s["fsspec ReadAheadCache"], unit=unit, target=2, higher_is_better=True,
            note=(
                f"fsspec: {info['fsspec_fetches']:.0f} fetches of its "
                f"{info['fsspec_block'] / MIB:.0f} MiB block + read, sleeping synchronously"
            ),
        ),
        info_result(
            WORKLOAD, "random 64K reads: readahead", summarize(lat), unit="ms/read",
            ratio=st.readahead_bytes / random_read_bytes,
            ratio_desc="speculative bytes / bytes read (random offsets)",
            baseline="no readahead (0 bytes)", target=0, target_kind="max",
            note=(
                f"{RANDOM_READS} random reads: {st.readahead_bytes} speculative bytes, "
                f"{backing.stats.reads} backing reads"
            ),
        ),
    ]  # fmt: skip


def run() -> list[Result]:
    """Measure the workload on the asyncio backend; return its results."""
    return anyio.run(_measure, backend="asyncio")


if __name__ == "__main__":
    print_results(run(), "cold sequential reads, 20 ms + 100 MB/s backing")
