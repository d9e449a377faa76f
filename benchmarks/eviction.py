"""Reads of 4x the budget: usage stays within the budget; time waiting for memory per read.

A 16 MiB store reads a 64 MiB object over ``MemoryBacking`` (no delay, so fills come as fast as
the CPU allows and the evictor is under the most pressure) in 64 KiB ``readinto`` calls: once
front to back (readahead on) and once at random offsets. Each repetition uses a fresh store.

- Peak usage: ``store.usage`` sampled after every read and by a task that looks at it on every
  event-loop turn (usage only changes between awaits). Target: peak / budget at most 1.
- Memory wait per read: the time each read spends inside the store's reclaim paths
  (``_reserve_nowait``, ``_wait_for_room``; instance attributes wrapped with a timer for the
  benchmark only), reported as median/p90/p99/max per read. The ratio column compares the p99
  read latency against the same reads in a store with room for everything (reported only).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

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

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

WORKLOAD = "eviction"
BUDGET = 16 * MIB
FILE_SIZE = 4 * BUDGET
READ_SIZE = 64 * KIB


class _Probe:
    """Times the store's reclaim paths and tracks peak usage.

    ``direct_ns``: time inside the read path's reclaim calls (``_reserve_nowait``,
    ``_wait_for_room``). ``evictor_ns``: time inside ``_evict_to`` when the background evictor
    (not a read) runs it; on this read-only workload nothing is dirty, so it runs without
    yielding and a read that is waiting meanwhile waits for it.
    """

    def __init__(self, store: CacheStore) -> None:
        self.store = store
        self.direct_ns = 0
        self.evictor_ns = 0
        self.peak = 0
        self._depth = 0
        reserve = store._reserve_nowait
        wait_for_room = store._wait_for_room
        evict_to = store._evict_to

        def timed_reserve(nbytes: int, **kw: Any) -> bool:
            self._depth += 1
            t0 = now_ns()
            try:
                return reserve(nbytes, **kw)
            finally:
                self.direct_ns += now_ns() - t0
                self._depth -= 1

        async def timed_wait(nbytes: int) -> bool:
            self._depth += 1
            t0 = now_ns()
            try:
                return await wait_for_room(nbytes)
            finally:
                self.direct_ns += now_ns() - t0
                self._depth -= 1

        async def timed_evict_to(target: int, reason: str, **kw: Any) -> int:
            if self._depth:
                return await evict_to(target, reason, **kw)
            t0 = now_ns()
            try:
                return await evict_to(target, reason, **kw)
            finally:
                self.evictor_ns += now_ns() - t0

        store_any: Any = store
        store_any._reserve_nowait = timed_reserve
        store_any._wait_for_room = timed_wait
        store_any._evict_to = timed_evict_to

    def sample(self) -> None:
        u = self.store.usage
        if u > self.peak:
            self.peak = u


async def _scan(
    data: bytes,
    offsets: list[int],
    limit: int,
    direct: list[float],
    background: list[float],
    lats: list[float],
) -> tuple[int, int]:
    """Read ``offsets`` through a fresh store of ``limit`` bytes; return (peak usage, evicted)."""
    buf = bytearray(READ_SIZE)
    async with CacheStore(memory_limit=limit, registry=False) as store:
        probe = _Probe(store)
        done = False

        async def sampler() -> None:
            while not done:
                probe.sample()
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(sampler)
            async with store.open("big", MemoryBacking(data)) as inode:
                for off in offsets:
                    d0 = probe.direct_ns
                    e0 = probe.evictor_ns
                    t0 = now_ns()
                    await inode.readinto(off, buf)
                    lats.append((now_ns() - t0) / 1e3)
                    direct.append((probe.direct_ns - d0) / 1e3)
                    background.append((probe.evictor_ns - e0) / 1e3)
                    probe.sample()
            done = True
        evicted = sum(store.statistics().evicted_bytes.values())
    return probe.peak, evicted


async def _pattern(data: bytes, pattern: str, offsets: list[int]) -> list[Result]:
    """Both results of one access pattern."""
    # Per repetition: per-read lists (the warm-up round's are dropped below).
    waits: list[list[float]] = []
    direct: list[list[float]] = []
    lats: list[list[float]] = []
    roomy_lats: list[list[float]] = []
    peaks: list[float] = []
    evicted: list[int] = []

    async def bounded() -> float:
        d: list[float] = []
        b: list[float] = []
        lat: list[float] = []
        peak, ev = await _scan(data, offsets, BUDGET, d, b, lat)
        direct.append(d)
        waits.append([x + y for x, y in zip(d, b, strict=True)])
        lats.append(lat)
        peaks.append(peak / BUDGET)
        evicted.append(ev)
        return peak / BUDGET

    async def roomy() -> float:
        lat: list[float] = []
        await _scan(data, offsets, 4 * FILE_SIZE, [], [], lat)
        roomy_lats.append(lat)
        return 0.0

    cases: dict[str, Callable[[], Awaitable[float]]] = {"bounded": bounded, "roomy": roomy}
    await run_interleaved(cases)
    del waits[0], direct[0], lats[0], roomy_lats[0], peaks[0], evicted[0]
    wait_p99 = [summarize(x).p99 for x in waits]
    all_waits = [v for x in waits for v in x]
    all_direct = [v for x in direct for v in x]
    all_lats = [v for x in lats for v in x]
    lat = summarize(all_lats)
    roomy_lat = summarize([v for x in roomy_lats for v in x])
    w = replace(summarize(all_waits), spread=summarize(wait_p99).spread)
    return [
        info_result(
            WORKLOAD,
            f"{pattern} 4x budget: peak usage",
            summarize([p * BUDGET / MIB for p in peaks]),
            unit="MiB",
            ratio=max(peaks),
            ratio_desc="worst peak usage / memory_limit over repetitions",
            baseline=f"memory_limit {BUDGET // MIB} MiB",
            baseline_median=BUDGET / MIB,
            target=1,
            target_kind="max",
            note=f"evicted {summarize(evicted).median / MIB:.0f} MiB per pass",
        ),
        info_result(
            WORKLOAD,
            f"{pattern} 4x budget: memory wait",
            w,
            unit="us/read",
            ratio=lat.p99 / roomy_lat.p99,
            ratio_desc="p99 read latency, 16 MiB budget / room for everything",
            baseline="p99 read, no eviction (us)",
            baseline_median=roomy_lat.p99,
            target_kind="max",
            note=(
                f"memory wait = direct reclaim (p99 {summarize(all_direct).p99:.1f} us) + "
                f"background evictor running during the read; it is "
                f"{100 * sum(all_waits) / max(sum(all_lats), 1e-9):.0f}% of read time. "
                f"Read latency with eviction: median {lat.median:.0f} us, p99 {lat.p99:.0f} us"
            ),
        ),
    ]


async def _measure() -> list[Result]:
    data = data_bytes(FILE_SIZE, salt=6)
    r = rng(6)
    n_reads = FILE_SIZE // READ_SIZE
    sequential = list(range(0, FILE_SIZE, READ_SIZE))
    random_offsets = [r.randrange(n_reads) * READ_SIZE for _ in range(n_reads)]
    return [
        *await _pattern(data, "sequential", sequential),
        *await _pattern(data, "random", random_offsets),
    ]


def run() -> list[Result]:
    """Measure the workload on the asyncio backend; return its results."""
    return anyio.run(_measure, backend="asyncio")


if __name__ == "__main__":
    print_results(run(), "reads of 4x the budget")
