"""Hot 4 KiB random reads through ``CachingInode.readinto``, against the ways to read a local file.

A 64 MiB file, warm in the kernel page cache and fully cached in the store's pool, is read at
the same 4 KiB-aligned random offsets (fixed seed) by:

- the subject, ``await inode.readinto(offset, buf)`` (a hit copies out of the pool);
- ``os.preadv`` called synchronously (the kernel page cache; the floor);
- ``aiofiles``: ``await f.seek(offset); await f.readinto(buf)`` (how its API reads at an offset:
  two worker-thread hops);
- ``anyio.to_thread.run_sync(os.pread, ...)`` (one worker-thread hop);
- fsspec's block cache (``AbstractBufferedFile`` with ``cache_type="blockcache"``, every block
  cached, synchronous ``seek`` + ``readinto``).

Targets: at least 0.9x ``os.preadv``; at least 30x aiofiles and to_thread. fsspec is reported.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import aiofiles
import anyio
import anyio.to_thread

from aiocache_inode import CacheStore, LocalFile

from ._baselines import LocalBufferedFile, temp_data_file
from ._harness import (
    KIB,
    MIB,
    REPEATS,
    Result,
    now_ns,
    print_results,
    ratio_result,
    rng,
    run_interleaved,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

WORKLOAD = "hot_reads"
FILE_SIZE = 64 * MIB
READ_SIZE = 4 * KIB
#: Reads per repetition for the fast cases, and for the thread-hop cases (each ~50-100 us).
N_FAST = 20_000
N_SLOW = 2_000
#: Repetitions are cheap here (~0.5 s a round), and 2 cores shared with other work are noisy.
CHEAP_REPEATS = 11


def _offsets(n: int, salt: int) -> list[int]:
    r = rng(salt)
    pages = FILE_SIZE // READ_SIZE
    return [r.randrange(pages) * READ_SIZE for _ in range(n)]


async def _measure() -> list[Result]:
    offsets = _offsets(N_FAST, 1)
    slow_offsets = offsets[:N_SLOW]
    buf = bytearray(READ_SIZE)
    with temp_data_file(FILE_SIZE, salt=1) as path:
        fd = os.open(path, os.O_RDONLY)
        fs_file = LocalBufferedFile(
            path,
            FILE_SIZE,
            block_size=1 * MIB,
            cache_type="blockcache",
            cache_options={"maxblocks": FILE_SIZE // MIB + 8},
        )
        try:
            async with (
                CacheStore(memory_limit=2 * FILE_SIZE, registry=False) as store,
                aiofiles.open(path, "rb") as af,
            ):
                backing = await LocalFile.open(path)
                async with store.open("hot", backing) as inode:
                    # Warm the pool: every page cached.
                    chunk = bytearray(MIB)
                    for off in range(0, FILE_SIZE, MIB):
                        await inode.readinto(off, chunk)
                    assert inode.cached_bytes == FILE_SIZE, inode.cached_bytes
                    # Warm fsspec's blocks the same way.
                    for off in range(0, FILE_SIZE, MIB):
                        fs_file.seek(off)
                        fs_file.readinto(chunk)

                    async def subject() -> float:
                        readinto = inode.readinto
                        t0 = now_ns()
                        for off in offsets:
                            await readinto(off, buf)
                        return (now_ns() - t0) / len(offsets)

                    async def preadv() -> float:
                        bufs = [buf]
                        pv = os.preadv
                        t0 = now_ns()
                        for off in offsets:
                            pv(fd, bufs, off)
                        return (now_ns() - t0) / len(offsets)

                    async def aiofiles_read() -> float:
                        t0 = now_ns()
                        for off in slow_offsets:
                            await af.seek(off)
                            await af.readinto(buf)
                        return (now_ns() - t0) / len(slow_offsets)

                    async def to_thread_pread() -> float:
                        run_sync = anyio.to_thread.run_sync
                        pread = os.pread
                        t0 = now_ns()
                        for off in slow_offsets:
                            await run_sync(pread, fd, READ_SIZE, off)
                        return (now_ns() - t0) / len(slow_offsets)

                    async def fsspec_blockcache() -> float:
                        seek = fs_file.seek
                        read_into = fs_file.readinto
                        t0 = now_ns()
                        for off in offsets:
                            seek(off)
                            read_into(buf)
                        return (now_ns() - t0) / len(offsets)

                    cases: dict[str, Callable[[], Awaitable[float]]] = {
                        "CachingInode.readinto": subject,
                        "os.preadv (sync, page cache)": preadv,
                        "aiofiles seek+readinto": aiofiles_read,
                        "to_thread(os.pread)": to_thread_pread,
                        "fsspec blockcache": fsspec_blockcache,
                    }
                    samples = await run_interleaved(cases, repeats=max(REPEATS, CHEAP_REPEATS))
                    hits = store.statistics().cache_hits
                    assert hits > 0
        finally:
            fs_file.close()
            os.close(fd)
    s = samples
    subj = s["CachingInode.readinto"]
    name = "hot 4K random read"
    unit = "ns/read"
    return [
        ratio_result(
            WORKLOAD, name, subj, "os.preadv (sync, page cache)", s["os.preadv (sync, page cache)"],
            unit=unit, target=0.9, higher_is_better=False,
        ),
        ratio_result(
            WORKLOAD, name, subj, "aiofiles seek+readinto", s["aiofiles seek+readinto"],
            unit=unit, target=30, higher_is_better=False,
        ),
        ratio_result(
            WORKLOAD, name, subj, "to_thread(os.pread)", s["to_thread(os.pread)"],
            unit=unit, target=30, higher_is_better=False,
        ),
        ratio_result(
            WORKLOAD, name, subj, "fsspec blockcache", s["fsspec blockcache"],
            unit=unit, target=None, higher_is_better=False,
            note="fsspec: AbstractBufferedFile(cache_type='blockcache'), all blocks cached, sync",
        ),
    ]  # fmt: skip


def run() -> list[Result]:
    """Measure the workload on the asyncio backend; return its results."""
    return anyio.run(_measure, backend="asyncio")


if __name__ == "__main__":
    print_results(run(), "hot 4 KiB random reads (64 MiB file, all cached)")
