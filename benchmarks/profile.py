"""Profiles of the benchmark hot paths, for explaining a missed target (not part of make bench).

Usage: ``python -m benchmarks.profile {hot_read,seq_read,write,cold_readahead} [--calls]``.

Runs one workload's subject under pyinstrument (wall clock, statistical; ``pip install
pyinstrument``, in the ``dev`` extra) and prints the call tree; ``--calls`` uses cProfile instead
and prints function-call counts per operation, which is what dominates pure-Python paths.
``cold_readahead`` also prints the backing request timeline (start, offset, size, requests in
flight), which shows the readahead window directly.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
from typing import TYPE_CHECKING, Any

import anyio

from aiocache_inode import CacheStore, MemoryBacking

from ._baselines import data_bytes
from ._harness import KIB, MIB, now_ns, rng

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

CASES = ("hot_read", "seq_read", "write", "cold_readahead")


async def _hot_read(n: int, size: int) -> Callable[[], Awaitable[None]]:
    file_size = 64 * MIB
    data = data_bytes(file_size, salt=7)
    store = CacheStore(memory_limit=2 * file_size, registry=False)
    await store.__aenter__()
    inode = await store.open("p", MemoryBacking(data)).__aenter__()
    chunk = bytearray(MIB)
    for off in range(0, file_size, MIB):
        await inode.readinto(off, chunk)
    r = rng(7)
    if size == 4 * KIB:
        offsets = [r.randrange(file_size // size) * size for _ in range(n)]
    else:
        offsets = [(i * size) % file_size for i in range(n)]
    buf = bytearray(size)

    async def body() -> None:
        for off in offsets:
            await inode.readinto(off, buf)
        await store.__aexit__(None, None, None)

    return body


async def _write(n: int) -> Callable[[], Awaitable[None]]:
    store = CacheStore(memory_limit=256 * MIB, write_back=True, registry=False)
    await store.__aenter__()
    inode = await store.open("w", MemoryBacking(latency=0.02, bandwidth=100e6)).__aenter__()
    payload = memoryview(data_bytes(n * 4 * KIB, salt=8))

    async def body() -> None:
        for i in range(n):
            off = i * 4 * KIB
            await inode.write(off, payload[off : off + 4 * KIB])
        await store.__aexit__(None, None, None)

    return body


async def _cold_readahead() -> Callable[[], Awaitable[None]]:
    size = 16 * MIB
    backing = MemoryBacking(data_bytes(size, salt=3), latency=0.020, bandwidth=100e6)
    timeline: list[tuple[float, int, int, int]] = []
    start = [0]
    inner = backing.read_into

    async def traced(offset: int, buffers: Sequence[memoryview]) -> int:
        n = sum(len(b) for b in buffers)
        timeline.append(((now_ns() - start[0]) / 1e6, offset, n, backing._active + 1))
        return await inner(offset, buffers)

    b: Any = backing
    store = CacheStore(memory_limit=64 * MIB, registry=False)
    await store.__aenter__()
    inode = await store.open("c", backing).__aenter__()
    # The inode calls backing.read_into through the object: wrap it on the class-free instance.
    inode._backing = _Traced(b, traced)
    buf = bytearray(64 * KIB)

    async def body() -> None:
        start[0] = now_ns()
        for off in range(0, size, 64 * KIB):
            await inode.readinto(off, buf)
        elapsed = (now_ns() - start[0]) / 1e9
        await store.__aexit__(None, None, None)
        print(
            f"\n{size / elapsed / 1e6:.1f} MB/s; backing requests (ms since start, offset, size):"
        )
        for t, off, n, active in timeline:
            print(
                f"  {t:8.1f} ms  off {off / MIB:7.3f} MiB  {n / KIB:5.0f} KiB  {active} in flight"
            )

    return body


class _Traced:
    """A backing proxy whose ``read_into`` is traced; everything else is the wrapped backing's."""

    def __init__(self, inner: Any, read_into: Any) -> None:
        self._inner = inner
        self.read_into = read_into

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def _main(case: str, calls: bool) -> None:
    n = 50_000
    if case == "hot_read":
        body = await _hot_read(n, 4 * KIB)
    elif case == "seq_read":
        n = 2_000
        body = await _hot_read(n, MIB)
    elif case == "write":
        n = 4_096
        body = await _write(n)
    else:
        n = 256
        body = await _cold_readahead()
    if calls:
        prof = cProfile.Profile()
        prof.enable()
        await body()
        prof.disable()
        stats = pstats.Stats(prof)
        total_calls: int = stats.total_calls  # type: ignore[attr-defined]
        print(f"{total_calls / n:.0f} Python function calls per operation")
        stats.sort_stats("tottime").print_stats(25)
        return
    try:
        from pyinstrument import Profiler
    except ImportError:
        sys.exit("pyinstrument is not installed (pip install pyinstrument), or use --calls")
    profiler = Profiler(interval=0.0001, async_mode="disabled")
    profiler.start()
    await body()
    profiler.stop()
    print(profiler.output_text(unicode=False, color=False))


def main(argv: Sequence[str] = ()) -> None:
    """Parse the arguments and profile one case."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    parser.add_argument("case", choices=CASES)
    parser.add_argument("--calls", action="store_true", help="cProfile call counts instead")
    args = parser.parse_args(list(argv))
    anyio.run(_main, args.case, args.calls, backend="asyncio")


if __name__ == "__main__":
    main(sys.argv[1:])
