"""4 KiB sequential writes in write-back mode, against hot 4 KiB reads of the same pages.

Each repetition writes 16 MiB in 4 KiB ``inode.write`` calls, front to back, to a new empty
object over ``MemoryBacking(latency=20 ms, bandwidth=100 MB/s)`` in a write-back store (the
writes land in the cache; the flusher writes them back later), then reads the same pages back
in 4 KiB ``readinto`` calls (all hits). The 64 MiB store starts background write-back at
6.4 MiB dirty, so the flusher works while the writer appends. Targets: write speed at least
0.5x the hot-read speed; backing write requests per application write at most 1/64 (write-back
coalesces), counted after ``write_out`` has flushed everything.
"""

from __future__ import annotations

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
    ratio_result,
    run_interleaved,
    summarize,
)

WORKLOAD = "writes"
TOTAL = 16 * MIB
WRITE_SIZE = 4 * KIB
LATENCY = 0.020
BANDWIDTH = 100e6
#: 64 MiB: the flusher starts at 6.4 MiB dirty (dirty_background_bytes = limit / 10) and writers
#: are throttled at 16 MiB (limit / 4), so write-back runs while the writer is still appending.
MEMORY_LIMIT = 64 * MIB


async def _measure() -> list[Result]:
    payload = memoryview(data_bytes(TOTAL, salt=5))
    offsets = range(0, TOTAL, WRITE_SIZE)
    n_writes = len(offsets)
    per_write: list[float] = []
    flush_ms: list[float] = []
    seq = [0]
    async with CacheStore(memory_limit=MEMORY_LIMIT, write_back=True, registry=False) as store:

        async def write_then_flush() -> float:
            seq[0] += 1
            key = f"w{seq[0]}"
            backing = MemoryBacking(latency=LATENCY, bandwidth=BANDWIDTH)
            async with store.open(key, backing) as inode:
                write = inode.write
                t0 = now_ns()
                for off in offsets:
                    await write(off, payload[off : off + WRITE_SIZE])
                ns = (now_ns() - t0) / n_writes
                t1 = now_ns()
                await inode.write_out()
                flush_ms.append((now_ns() - t1) / 1e6)
                per_write.append(backing.stats.writes / n_writes)
            # Keep the newest object for the read case; forget the one before.
            if seq[0] > 1:
                await store.forget(f"w{seq[0] - 1}")
            assert backing.data == payload, "write-back lost data"
            return ns

        async def hot_reads() -> float:
            buf = bytearray(WRITE_SIZE)
            async with store.open(f"w{seq[0]}", MemoryBacking()) as inode:
                readinto = inode.readinto
                t0 = now_ns()
                for off in offsets:
                    await readinto(off, buf)
                return (now_ns() - t0) / n_writes

        samples = await run_interleaved(
            {"write-back 4K write": write_then_flush, "hot 4K read": hot_reads}
        )
        st = store.statistics()
        assert st.cache_misses == 0, "the read-back missed"
    subj = samples["write-back 4K write"]
    base = samples["hot 4K read"]
    calls = summarize(per_write)
    return [
        ratio_result(
            WORKLOAD,
            "4K sequential write (write-back)",
            subj,
            "hot 4K sequential read",
            base,
            unit="ns/op",
            target=0.5,
            higher_is_better=False,
            note=f"write_out of {TOTAL // MIB} MiB took {summarize(flush_ms).median:.0f} ms",
        ),
        info_result(
            WORKLOAD,
            "backing writes per app write",
            calls,
            unit="calls",
            ratio=calls.max * 64,
            ratio_desc="(backing write calls / application writes) x 64",
            baseline="1/64 (coalescing)",
            target=1,
            target_kind="max",
            note=(
                f"{calls.max * n_writes:.0f} backing writes for {n_writes} application writes "
                f"(worst repetition); ratio column is that x 64"
            ),
        ),
    ]


def run() -> list[Result]:
    """Measure the workload on the asyncio backend; return its results."""
    return anyio.run(_measure, backend="asyncio")


if __name__ == "__main__":
    print_results(run(), "4 KiB writes in write-back mode")
