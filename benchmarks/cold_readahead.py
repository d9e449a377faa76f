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

**The read-size matrix.** Sequential ``readinto`` over a 128 MiB object at read sizes 64 KiB,
1 MiB, 4 MiB and 8 MiB, on stores of 20 ms and 100 ms latency (100 MB/s per request), a 256 MiB
budget and default tunables, each against two baselines measured in the same run:

- *direct*: the same backing read one request at a time with the same read size (what a reader
  without a cache does); its rate is steady, so it is measured over the first few reads;
- *model limit*: a plain anyio task group fetching the same object in requests of the store's
  ``readahead_request`` size, with as many bytes in flight as the store's cap on speculative
  bytes allows (``readahead_cap``, a quarter of the budget): the best schedule the cap permits.

Each row is reported twice: in wall time (asyncio), and in virtual time (trio's
``MockClock(autojump_threshold=0)``: the backing's sleeps cost nothing, so the figure is the I/O
schedule alone and does not depend on machine load; one repetition, since it is deterministic).
Then 8 concurrent sequential readers, 1 MiB reads at 20 ms, on 8 inodes sharing one 64 MiB
budget: the aggregate against the model limit for that budget's cap, the peak usage (sampled
after every read) against the budget, and the readahead wasted. Targets: every row >= 10x direct
and >= 0.7x the model in wall time, >= 0.95x the model in virtual time; 8 readers >= 0.7x.
"""

from __future__ import annotations

import contextlib
import os
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import anyio

from aiocache_inode import CacheStore, CachingInode, MemoryBacking, Tunables

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
    from collections.abc import Awaitable, Callable, Sequence

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


# -- the read-size matrix -------------------------------------------------------------------------

#: ``BENCH_RA_OBJECT_MIB`` shrinks the object for a quick look (the rows keep their meaning).
MATRIX_OBJECT: Final = int(os.environ.get("BENCH_RA_OBJECT_MIB", "128")) * MIB
MATRIX_BUDGET: Final = 256 * MIB
MATRIX_READS: Final = (64 * KIB, 1 * MIB, 4 * MIB, 8 * MIB)
MATRIX_LATENCIES: Final = (0.020, 0.100)
#: Direct reads are one request at a time, so their rate is the same from the first read: this
#: many reads (at least 4 MiB) measure it.
DIRECT_READS: Final = 8
READERS: Final = 8
READERS_BUDGET: Final = 64 * MIB
READERS_OBJECT: Final = MATRIX_OBJECT // 4
READERS_READ: Final = 1 * MIB


def _size_name(n: int) -> str:
    return f"{n // MIB}M" if n >= MIB else f"{n // KIB}K"


def _cap(budget: int) -> int:
    """The store's default cap on speculative bytes for ``budget`` (read from the store)."""
    return Tunables().resolved(budget).readahead_cap


def _request() -> int:
    return Tunables().readahead_request


async def _sequential(
    data: bytes,
    read_size: int,
    latency: float,
    budget: int,
    info: dict[str, float],
    prefetch: bool = False,
) -> float:
    """MB/s of one cold sequential pass through a fresh store, on the loop's clock.

    ``prefetch``: the reader says first that it will read the whole object
    (``inode.prefetch(0, size)``), as a server answering a GET can.
    """
    size = len(data)
    backing = MemoryBacking(data, latency=latency, bandwidth=BANDWIDTH)
    buf = bytearray(read_size)
    peak = 0
    async with CacheStore(memory_limit=budget, registry=False) as store:
        async with store.open("cold", backing) as inode:
            readinto = inode.readinto
            t0 = anyio.current_time()
            if prefetch:
                inode.prefetch(0, size)
            for off in range(0, size, read_size):
                await readinto(off, buf)
                peak = max(peak, store.usage)
            rate = size / (anyio.current_time() - t0) / 1e6
        st = store.statistics()
    assert bytes(buf[: size % read_size or read_size]) == data[-(size % read_size or read_size) :]
    info["peak"] = max(info.get("peak", 0), peak)
    info["wasted"] = st.readahead_wasted_bytes
    info["issued"] = st.readahead_bytes
    info["requests"] = backing.stats.reads
    return rate


async def _direct(data: bytes, read_size: int, latency: float) -> float:
    """MB/s of the same backing read one ``read_size`` request at a time."""
    backing = MemoryBacking(data, latency=latency, bandwidth=BANDWIDTH)
    view = memoryview(bytearray(read_size))
    n = max(DIRECT_READS, (4 * MIB) // read_size)
    t0 = anyio.current_time()
    for i in range(n):
        await backing.read_into(i * read_size % len(data), [view])
    return n * read_size / (anyio.current_time() - t0) / 1e6


async def _model(data: bytes, latency: float, cap: int, readers: int = 1) -> float:
    """MB/s of the model limit: ``readers`` objects fetched with ``cap`` bytes in flight in all.

    Requests of the store's request size go out in file order, each taking its bytes of the
    cap before it starts and giving them back when its data has landed: the best schedule the
    store's cap allows, with none of the cache's bookkeeping.
    """
    request = _request()
    size = len(data)
    backings = [MemoryBacking(data, latency=latency, bandwidth=BANDWIDTH) for _ in range(readers)]
    dests = [memoryview(bytearray(size)) for _ in range(readers)]
    room = anyio.Semaphore(max(1, cap // request))

    async def fetch(b: MemoryBacking, dest: memoryview, off: int) -> None:
        try:
            await b.read_into(off, [dest[off : off + request]])
        finally:
            room.release()

    t0 = anyio.current_time()
    async with anyio.create_task_group() as tg:
        for off in range(0, size, request):
            for r in range(readers):
                await room.acquire()
                tg.start_soon(fetch, backings[r], dests[r], off)
    rate = readers * size / (anyio.current_time() - t0) / 1e6
    assert bytes(dests[0][-request:]) == data[-request:]
    return rate


async def _readers(data: bytes, budget: int, info: dict[str, float]) -> float:
    """Aggregate MB/s of ``READERS`` concurrent cold sequential passes sharing one store.

    Timed from when every inode is open, as the single-reader rows are: the model fetches no
    attributes, and an open is one round trip (a twentieth of the pass here).
    """
    size = len(data)
    backings = [MemoryBacking(data, latency=LATENCY, bandwidth=BANDWIDTH) for _ in range(READERS)]
    peak = 0

    async def reader(inode: CachingInode, store: CacheStore) -> None:
        nonlocal peak
        buf = bytearray(READERS_READ)
        for off in range(0, size, READERS_READ):
            await inode.readinto(off, buf)
            peak = max(peak, store.usage)

    async with (
        CacheStore(memory_limit=budget, registry=False) as store,
        contextlib.AsyncExitStack() as stack,
    ):
        inodes = [
            await stack.enter_async_context(store.open(f"reader{i}", backings[i]))
            for i in range(READERS)
        ]
        t0 = anyio.current_time()
        async with anyio.create_task_group() as tg:
            for inode in inodes:
                tg.start_soon(reader, inode, store)
        rate = READERS * size / (anyio.current_time() - t0) / 1e6
        await stack.aclose()
        st = store.statistics()
    info["peak"] = max(info.get("peak", 0), peak)
    info["wasted"] = st.readahead_wasted_bytes
    info["issued"] = st.readahead_bytes
    return rate


def _wall(cases: dict[str, Callable[[], Awaitable[float]]]) -> dict[str, list[float]]:
    """Interleaved wall-time rounds of ``cases`` on asyncio (each builds its own cold store)."""
    samples: dict[str, list[float]] = anyio.run(
        partial(run_interleaved, cases, repeats=REPEATS, warmups=0), backend="asyncio"
    )
    return samples


def _virtual(fn: Callable[..., Awaitable[float]], *args: Any) -> float:
    """``fn(*args)`` on trio under an autojumping mock clock: the I/O schedule alone."""
    from trio.testing import MockClock

    async def main() -> float:
        return await fn(*args)

    result: float = anyio.run(
        main, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)}
    )
    return result


def _matrix_row(
    name: str,
    subject: Sequence[float],
    baseline_name: str,
    baseline: Sequence[float],
    target: float,
    note: str = "",
) -> Result:
    return ratio_result(
        WORKLOAD, name, subject, baseline_name, baseline, unit="MB/s", target=target,
        higher_is_better=True, note=note,
    )  # fmt: skip


def _measure_matrix() -> list[Result]:
    """The matrix rows: wall-time rounds on asyncio, then each virtual-time run on trio."""
    data = data_bytes(MATRIX_OBJECT, salt=4)
    cap = _cap(MATRIX_BUDGET)
    out: list[Result] = []
    for latency in MATRIX_LATENCIES:
        for read_size in MATRIX_READS:
            info: dict[str, float] = {}
            label = f"cold {_size_name(read_size)} seq, {latency * 1000:.0f} ms"
            cases: dict[str, Callable[[], Awaitable[float]]] = {
                "subject": partial(_sequential, data, read_size, latency, MATRIX_BUDGET, info),
                "direct": partial(_direct, data, read_size, latency),
                "model": partial(_model, data, latency, cap),
            }
            s = _wall(cases)
            note = (
                f"{info['requests']:.0f} backing reads; readahead {info['issued'] / MIB:.0f} MiB "
                f"issued, {info['wasted'] / MIB:.1f} MiB wasted; peak usage "
                f"{info['peak'] / MIB:.0f} MiB of {MATRIX_BUDGET // MIB}; cap {cap // MIB} MiB"
            )
            out.append(_matrix_row(label, s["subject"], "direct, same read size", s["direct"],
                                   10, note))  # fmt: skip
            out.append(_matrix_row(label, s["subject"], "model limit (wall)", s["model"], 0.7))
            vinfo: dict[str, float] = {}
            vs = _virtual(_sequential, data, read_size, latency, MATRIX_BUDGET, vinfo)
            vm = _virtual(_model, data, latency, cap)
            out.append(_matrix_row(label + " (virtual)", [vs], "model limit (virtual)", [vm], 0.95))
            if read_size == MIB:
                # Information: the same pass with the whole object hinted up front. Readahead
                # then has no window to grow; what is left of the gap to the model is the rest.
                vp = _virtual(_sequential, data, read_size, latency, MATRIX_BUDGET, {}, True)
                out.append(
                    info_result(
                        WORKLOAD, f"{label}, prefetch(0, size) (virtual)", summarize([vp]),
                        unit="MB/s", ratio=vp / vm, ratio_desc="subject / model (virtual)",
                        baseline="model limit (virtual)", baseline_median=vm,
                        note="the reader hints the whole object first (inode.prefetch)",
                    )
                )  # fmt: skip
    readers_data = data[:READERS_OBJECT]
    readers_cap = _cap(READERS_BUDGET)
    rinfo: dict[str, float] = {}
    cases = {
        "readers": partial(_readers, readers_data, READERS_BUDGET, rinfo),
        "model": partial(_model, readers_data, LATENCY, readers_cap, READERS),
    }
    s = _wall(cases)
    label = f"{READERS} readers, 1M seq, 20 ms, 64 MiB budget"
    out.append(
        _matrix_row(
            label, s["readers"], "model limit (wall)", s["model"], 0.7,
            note=(
                f"aggregate; readahead {rinfo['issued'] / MIB:.0f} MiB issued, "
                f"{rinfo['wasted'] / MIB:.1f} MiB wasted; cap {readers_cap // MIB} MiB"
            ),
        )
    )  # fmt: skip
    out.append(
        info_result(
            WORKLOAD, f"{READERS} readers: peak usage", summarize([rinfo["peak"] / MIB]),
            unit="MiB", ratio=rinfo["peak"] / READERS_BUDGET,
            ratio_desc="peak usage (sampled after every read) / memory_limit",
            baseline=f"memory_limit {READERS_BUDGET // MIB} MiB",
            baseline_median=READERS_BUDGET / MIB, target=1, target_kind="max",
        )
    )  # fmt: skip
    vinfo = {}
    vr = _virtual(_readers, readers_data, READERS_BUDGET, vinfo)
    vm = _virtual(_model, readers_data, LATENCY, readers_cap, READERS)
    out.append(_matrix_row(label + " (virtual)", [vr], "model limit (virtual)", [vm], 0.95))
    return out


def run() -> list[Result]:
    """Measure the workload on the asyncio backend (virtual-time rows on trio); its results."""
    results = anyio.run(_measure, backend="asyncio")
    if os.environ.get("BENCH_RA_MATRIX", "1") != "0":
        results += _measure_matrix()
    return results


if __name__ == "__main__":
    print_results(run(), "cold sequential reads, 20 ms + 100 MB/s backing")
