"""One real file through a 4 MiB page cache, narrated step by step.

A tour of the library's API (``make run`` runs the S3 gateway, ``examples.object_store_gateway``)::

    python -m examples.demo [--data-dir ./data] [--size 8MiB]

It creates ``<data-dir>/demo.bin`` (patterned bytes) when it is missing or has another size,
opens it with ``LocalFile.open(..., writable=True)`` in a ``CacheStore`` with a 4 MiB budget and a
private Prometheus registry, and prints what each step does to the store: a cold read, the same
read again, a sequential scan bigger than the budget, writes, a pinned view and ``write_out``;
then the store's ``statistics()`` and some of its Prometheus series. Every read is checked
against the file's bytes, and the file against the cache after ``write_out``.

Running it again reuses the file: the demo's writes (two short time-stamped strings) are the only
changes it makes, and the next run reads them back like any other bytes.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Final

import anyio
from prometheus_client import CollectorRegistry, generate_latest

from aiocache_inode import PAGE_SIZE, CacheStore, LocalFile

if TYPE_CHECKING:
    from collections.abc import Sequence

    from aiocache_inode import CachingInode
    from aiocache_inode.stats import StoreStatistics

__all__ = ["main", "parse_size", "pattern"]

KIB: Final = 1 << 10
MIB: Final = 1 << 20
#: The store's byte budget: half the default file, so the scan must evict.
MEMORY_LIMIT: Final = 4 * MIB
DEFAULT_SIZE: Final = 8 * MIB
FILE_NAME: Final = "demo.bin"
#: The cold read, and the same read again: one 64 KiB policy chunk.
READ_LENGTH: Final = 64 * KIB
#: The sequential scan reads in requests of this size.
SCAN_REQUEST: Final = 128 * KIB
#: The pinned view covers this much.
VIEW_LENGTH: Final = 256 * KIB
#: What the demo writes (stamped with the time, so every run really changes the file).
CACHED_WRITE: Final = b"<written into a cached page by examples.demo at %H:%M:%S>"
THROUGH_WRITE: Final = b"<written through to the backing by examples.demo at %H:%M:%S>"
#: The Prometheus series shown at the end: the ones the public API contract (API.md) fixes.
SHOWN_SERIES: Final = (
    "aiocache_inode_cache_hits_total",
    "aiocache_inode_cache_misses_total",
    "aiocache_inode_read_bytes_total",
    "aiocache_inode_cached_bytes",
    "aiocache_inode_pinned_bytes",
    "aiocache_inode_dirty_bytes",
    "aiocache_inode_memory_limit_bytes",
    "aiocache_inode_writeback_bytes_total",
    "aiocache_inode_writeback_seconds_count",
    "aiocache_inode_writeback_seconds_sum",
    "aiocache_inode_writeback_errors_total",
    "aiocache_inode_evicted_bytes_total",
)

_SIZE_RE: Final = re.compile(r"^\s*(\d+)\s*(|b|k|kb|kib|m|mb|mib|g|gb|gib)\s*$", re.IGNORECASE)
_UNITS: Final = {"": 1, "b": 1, "k": KIB, "m": MIB, "g": 1 << 30}


def parse_size(text: str) -> int:
    """Parse a byte count: ``8388608``, ``8M``, ``8MiB`` or ``512KiB`` (units are powers of 2).

    Raises:
        ValueError: not a size, or zero.
    """
    m = _SIZE_RE.match(text)
    if m is None:
        raise ValueError(f"not a size: {text!r} (try 8MiB or 8388608)")
    value = int(m.group(1)) * _UNITS[m.group(2)[:1].lower()]
    if value <= 0:
        raise ValueError("the size must be positive")
    return value


def pattern(size: int) -> bytes:
    """``size`` bytes in which every 4 KiB page names itself (``demo.bin page 000042 ...``)."""
    pages = []
    for p in range((size + PAGE_SIZE - 1) // PAGE_SIZE):
        line = f"demo.bin page {p:06d} | ".encode()
        pages.append((line * (PAGE_SIZE // len(line) + 1))[:PAGE_SIZE])
    return b"".join(pages)[:size]


def fmt_bytes(n: float) -> str:
    """``4 MiB``, ``3.99 MiB``, ``64 KiB``, ``45 B`` (rounded down)."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", MIB), ("KiB", KIB)):
        if abs(n) >= scale:
            # Two decimals at most, so a peak just under the budget never prints as equal to it.
            return f"{int(n * 100 / scale) / 100:.2f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{n:.0f} B"


def fmt_seconds(s: float) -> str:
    """``12 us``, ``3.4 ms``, ``1.20 s``."""
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def ensure_file(path: Path, size: int) -> str:
    """Create ``path`` with :func:`pattern` bytes unless it already has ``size`` bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.stat().st_size == size:
            return f"reusing {path} ({fmt_bytes(size)})"
    except FileNotFoundError:
        pass
    path.write_bytes(pattern(size))
    return f"created {path} ({fmt_bytes(size)} of patterned bytes)"


def _page_down(n: int) -> int:
    return n - n % PAGE_SIZE


def _stamp(template: bytes) -> bytes:
    """The template with the wall-clock time filled in (same length every run)."""
    return time.strftime(template.decode()).encode()


def _count(n: float, one: str, many: str) -> str:
    """``1 miss``, ``3 misses``."""
    return f"{n:.0f} {one if n == 1 else many}"


class _Narrator:
    """Prints numbered steps and what changed in the store's statistics during each."""

    def __init__(self, store: CacheStore) -> None:
        self.store = store
        self.step = 0
        self.before: StoreStatistics = store.statistics()
        self.t0 = time.perf_counter()

    def begin(self, title: str) -> None:
        self.step += 1
        print(f"\n{self.step}. {title}")
        self.before = self.store.statistics()
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def delta(self, name: str, key: str | None = None) -> float:
        after = self.store.statistics()
        a = getattr(after, name)
        b = getattr(self.before, name)
        if key is not None:
            a, b = a[key], b[key]
        return float(a - b)

    def say(self, text: str) -> None:
        print(f"   {text}")


async def _file_bytes(path: Path) -> bytes:
    return await anyio.Path(path).read_bytes()


async def _settle(inode: CachingInode) -> None:
    """Let background readahead that is still in flight land (at most about a second)."""
    for _ in range(200):
        if not inode.statistics().inflight_ops:
            return
        await anyio.sleep(0.005)


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise AssertionError(f"demo check failed: {what}")


async def run(data_dir: Path, size: int) -> None:
    """Run every step of the demo against ``data_dir / demo.bin`` of ``size`` bytes."""
    path = data_dir / FILE_NAME
    print("aiocache_inode demo")
    print(f"   {await anyio.to_thread.run_sync(ensure_file, path, size)}")
    model = bytearray(await _file_bytes(path))
    registry = CollectorRegistry()
    async with await LocalFile.open(path, writable=True) as backing:
        store = CacheStore(memory_limit=MEMORY_LIMIT, registry=registry)
        async with store, store.open(FILE_NAME, backing) as inode:
            print(
                f"   opened it with LocalFile.open(writable=True) in a CacheStore with a "
                f"{fmt_bytes(MEMORY_LIMIT)} budget (policy {store.tunables.policy!r}, "
                f"evictor wakes at {store.tunables.high_watermark:.0%}, "
                f"evicts down to {store.tunables.low_watermark:.0%})"
            )
            n = _Narrator(store)
            await _reads(n, inode, model, size)
            await _scan(n, inode, model, size)
            await _writes(n, inode, model, path, size)
            await _view(n, inode, model, size)
            await _write_out(n, inode, model, path)
            _statistics_table(store)
            _prometheus_lines(registry)
        print(
            "\nLeaving `async with CacheStore(...)` wrote back anything still dirty and stopped "
            "the evictor and the flusher; the file keeps every change."
        )


async def _reads(n: _Narrator, inode: CachingInode, model: bytearray, size: int) -> None:
    offset = _page_down(size // 2)
    length = min(READ_LENGTH, size - offset)
    n.begin(f"Cold read: {fmt_bytes(length)} at offset {fmt_bytes(offset)}.")
    data = await inode.read(offset, length)
    took = n.elapsed()
    _check(data == model[offset : offset + length], "cold read returns the file's bytes")
    n.say(
        f"Nothing was cached, so this is a miss "
        f"({_count(n.delta('cache_misses'), 'miss', 'misses')}, "
        f"{_count(n.delta('cache_hits'), 'hit', 'hits')}): "
        f"{fmt_bytes(n.delta('read_bytes_backing'))} came from the backing file in "
        f"{_count(n.delta('backing_requests', 'read'), 'backing read', 'backing reads')}, "
        f"{fmt_seconds(took)}."
    )
    n.say(
        f"Those pages now sit in the pool: {fmt_bytes(n.store.cached_bytes)} cached (whole "
        f"pages), usage {fmt_bytes(n.store.usage)} of {fmt_bytes(n.store.memory_limit)}."
    )

    n.begin("The same read again.")
    data = await inode.read(offset, length)
    took = n.elapsed()
    _check(data == model[offset : offset + length], "warm read returns the file's bytes")
    n.say(
        f"Every page was cached, so this is a hit ({_count(n.delta('cache_hits'), 'hit', 'hits')}"
        f", {_count(n.delta('cache_misses'), 'miss', 'misses')}): "
        f"{fmt_bytes(n.delta('read_bytes_cache'))} copied out of the pool, "
        f"{_count(n.delta('backing_requests', 'read'), 'backing read', 'backing reads')}, "
        f"{fmt_seconds(took)}."
    )


async def _scan(n: _Narrator, inode: CachingInode, model: bytearray, size: int) -> None:
    store = n.store
    n.begin(
        f"Sequential scan of the whole file ({fmt_bytes(size)}) in {fmt_bytes(SCAN_REQUEST)} "
        f"reads, with a {fmt_bytes(store.memory_limit)} budget."
    )
    if size <= store.memory_limit:
        n.say("(the file fits in the budget, so nothing needs to be evicted: try --size 8MiB)")
    peak = store.usage
    reads = 0
    for pos in range(0, size, SCAN_REQUEST):
        data = await inode.read(pos, SCAN_REQUEST)
        _check(data == model[pos : pos + SCAN_REQUEST], f"scan read at {pos}")
        peak = max(peak, store.usage)
        reads += 1
    await _settle(inode)
    peak = max(peak, store.usage)
    took = n.elapsed()
    n.say(
        f"{_count(reads, 'read', 'reads')} in {fmt_seconds(took)}: "
        f"{_count(n.delta('cache_hits'), 'hit', 'hits')} and "
        f"{_count(n.delta('cache_misses'), 'miss', 'misses')}. The backing served "
        f"{_count(n.delta('backing_requests', 'read'), 'read request', 'read requests')} "
        f"(fills and readahead); {fmt_bytes(n.delta('read_bytes_backing'))} of what the "
        f"readers got had to wait for them, the rest was already in the pool."
    )
    verdict = "stayed within" if peak <= store.memory_limit else "went over"
    n.say(
        f"Usage {verdict} the budget: peak {fmt_bytes(peak)} of {fmt_bytes(store.memory_limit)} "
        f"({peak / store.memory_limit:.0%}), now {fmt_bytes(store.usage)}. To make room, "
        f"{fmt_bytes(n.delta('evicted_bytes', 'pressure'))} of clean pages were evicted in "
        f"policy order ({store.tunables.policy})."
    )
    n.say(
        f"Readahead: the reads were sequential, so the cache fetched ahead of them: "
        f"{fmt_bytes(n.delta('readahead_bytes'))} requested speculatively, "
        f"{fmt_bytes(n.delta('readahead_used_bytes'))} of it used by a later read, "
        f"{fmt_bytes(n.delta('readahead_wasted_bytes'))} evicted unread (wasted)."
    )


async def _writes(
    n: _Narrator, inode: CachingInode, model: bytearray, path: Path, size: int
) -> None:
    cached = inode.cached_ranges()
    target = _page_down(cached[-1].end - PAGE_SIZE) if cached else _page_down(size - 1)
    offset = target + 128 if target + 128 + len(CACHED_WRITE) <= size else target
    data = _stamp(CACHED_WRITE)[: size - offset]
    old = bytes(model[offset : offset + len(data)])
    n.begin(f"Write {len(data)} bytes into a cached page (offset {offset}).")
    if not _is_cached(inode, target):  # it was just scanned; make sure it is still cached
        await inode.read(target, PAGE_SIZE)
    await inode.write(offset, data)
    model[offset : offset + len(data)] = data
    on_disk = (await _file_bytes(path))[offset : offset + len(data)]
    n.say(
        f"The bytes went into the pool page and are dirty: store.dirty_bytes = "
        f"{n.store.dirty_bytes} (dirty tracking is byte-granular); "
        f"{_count(n.delta('backing_requests', 'write'), 'backing write', 'backing writes')}."
    )
    _check(on_disk == old, "a write to a cached page does not reach the file before write-back")
    n.say("The file on disk still has the old bytes there; reads already see the new ones.")
    _check(await inode.read(offset, len(data)) == data, "a read sees the cached write")

    # A write to a page that is not cached goes straight to the backing (the default policy).
    hole = next(
        (p for p in range(0, _page_down(size - 1) + 1, PAGE_SIZE) if not _is_cached(inode, p)),
        None,
    )
    if hole is None:
        return
    at = hole + 64 if hole + 64 + len(THROUGH_WRITE) <= size else hole
    through = _stamp(THROUGH_WRITE)[: size - at]
    n.begin(f"Write {len(through)} bytes to a page that is not cached (offset {at}).")
    await inode.write(at, through)
    model[at : at + len(through)] = through
    on_disk = (await _file_bytes(path))[at : at + len(through)]
    _check(on_disk == through, "a write-through reaches the file at once")
    n.say(
        f"Write-through, the default policy (CacheStore(write_back=True) would cache it "
        f"instead): {fmt_bytes(n.delta('writethrough_bytes'))} went straight to the file in "
        f"{_count(n.delta('backing_requests', 'write'), 'backing write', 'backing writes')}; "
        f"dirty bytes stay at {n.store.dirty_bytes}, and the page is still not cached."
    )


def _is_cached(inode: CachingInode, offset: int) -> bool:
    return any(r.start <= offset < r.end for r in inode.cached_ranges())


async def _view(n: _Narrator, inode: CachingInode, model: bytearray, size: int) -> None:
    length = min(VIEW_LENGTH, size)
    n.begin(f"Pin a zero-copy view of [0, {fmt_bytes(length)}).")
    async with inode.view(0, length) as views:
        got = b"".join(bytes(v) for v in views)
        _check(got == model[:length], "the view shows the file's bytes")
        n.say(
            f"inode.view() filled what was missing "
            f"({_count(n.delta('cache_misses'), 'miss', 'misses')}) and yielded "
            f"{_count(len(views), 'memoryview', 'memoryviews')} straight into the pool, "
            f"{fmt_bytes(len(got))} in all; store.pinned_bytes = "
            f"{fmt_bytes(n.store.pinned_bytes)} (whole pages)."
        )
        before = inode.cached_bytes
        await inode.evict(0, length)
        n.say(
            f"inode.evict(0, {fmt_bytes(length)}) while the view is open dropped "
            f"{fmt_bytes(before - inode.cached_bytes)}: pinned pages are never evicted."
        )
    n.say(f"After the view closed: store.pinned_bytes = {fmt_bytes(n.store.pinned_bytes)}.")
    before = inode.cached_bytes
    written = n.delta("writeback_bytes")
    await inode.evict(0, length)
    written = n.delta("writeback_bytes") - written
    n.say(
        f"The same evict() now drops {fmt_bytes(before - inode.cached_bytes)}"
        + (f" (after writing back {written:.0f} dirty bytes there)." if written else ".")
    )


async def _write_out(n: _Narrator, inode: CachingInode, model: bytearray, path: Path) -> None:
    n.begin("write_out(): write dirty data and attributes back, then sync the file.")
    dirty = n.store.dirty_bytes
    await inode.write_out()
    on_disk = await _file_bytes(path)
    _check(on_disk == model, "after write_out the file holds exactly what reads return")
    n.say(
        f"{dirty} dirty bytes written back ({fmt_bytes(n.delta('writeback_bytes'))} in "
        f"{_count(n.delta('backing_requests', 'write'), 'backing write', 'backing writes')}"
        f", then {_count(n.delta('backing_requests', 'sync'), 'fsync', 'fsyncs')}); "
        f"store.dirty_bytes = {n.store.dirty_bytes}."
    )
    n.say(f"Checked: all {len(on_disk):,} bytes of {path} equal what the cache returns.")


def _statistics_table(store: CacheStore) -> None:
    s = store.statistics()
    print("\nstore.statistics()")
    rows: list[tuple[str, str]] = []
    for f in fields(s):
        value = getattr(s, f.name)
        if isinstance(value, dict):
            for key, v in value.items():
                if v:
                    rows.append((f"{f.name}[{key}]", _fmt_stat(f.name, v)))
        else:
            rows.append((f.name, _fmt_stat(f.name, value)))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"   {name:<{width}}  {value}")
    print("   (zero entries of the per-reason and per-operation tables left out; arena_bytes is")
    print("   address space mapped for the pool, of which only usage is resident)")


def _fmt_stat(name: str, value: float) -> str:
    if "seconds" in name:
        return fmt_seconds(value) if value else "0"
    if "bytes" in name or name in ("memory_limit", "usage"):
        return f"{value:,} ({fmt_bytes(value)})" if value >= KIB else f"{value:,}"
    return f"{value:,}"


def _prometheus_lines(registry: CollectorRegistry) -> None:
    text = generate_latest(registry).decode()
    lines = [
        line for line in text.splitlines() if re.split(r"[{ ]", line, maxsplit=1)[0] in SHOWN_SERIES
    ]
    total = sum(1 for line in text.splitlines() if line.startswith("aiocache_inode_"))
    print("\nPrometheus (generate_latest(registry); the series the public API contract names):")
    for line in lines:
        print(f"   {line}")
    print(f"   ... {total} aiocache_inode_ samples in all (histogram buckets included).")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, run the demo, return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m examples.demo",
        description="Narrate what aiocache_inode does with one real file and a 4 MiB cache.",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("AIOCACHE_DEMO_DATA_DIR", "data")),
        help="directory for demo.bin, created if needed ($AIOCACHE_DEMO_DATA_DIR, else ./data)",
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        default=DEFAULT_SIZE,
        help="size of demo.bin, e.g. 8MiB (default); more than 4MiB makes the scan evict",
    )
    args = parser.parse_args(argv)
    anyio.run(run, args.data_dir, args.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
