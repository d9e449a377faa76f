"""Prometheus metrics: the names API.md fixes, exact counter movements, gauges against the inodes,
histograms, labels, and one live store per registry (issue 3)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from prometheus_client import CollectorRegistry

from aiocache_inode import PAGE_SIZE, CacheError, CacheStore, FaultInjector, MemoryBacking

KiB = 1 << 10
MiB = 1 << 20
P = "aiocache_inode_"

#: API.md, "Metrics (exact names)": family name -> the sample names that must exist.
API_METRICS = {
    "cache_hits": ["cache_hits_total"],
    "cache_misses": ["cache_misses_total"],
    "read_bytes": ["read_bytes_total"],
    "cached_bytes": ["cached_bytes"],
    "pinned_bytes": ["pinned_bytes"],
    "dirty_bytes": ["dirty_bytes"],
    "memory_limit_bytes": ["memory_limit_bytes"],
    "writeback_bytes": ["writeback_bytes_total"],
    "writeback_seconds": ["writeback_seconds_count", "writeback_seconds_sum"],
    "writeback_errors": ["writeback_errors_total"],
    "evicted_bytes": ["evicted_bytes_total"],
}
#: The issue's additions: backing requests and durations by operation, throttling, readahead,
#: eviction runs.
ISSUE_METRICS = {
    "backing_requests": ["backing_requests_total"],
    "backing_request_seconds": ["backing_request_seconds_count"],
    "writer_throttled_seconds": ["writer_throttled_seconds_total"],
    "readahead_bytes": ["readahead_bytes_total"],
    "readahead_outcome_bytes": ["readahead_outcome_bytes_total"],
    "eviction_runs": ["eviction_runs_total"],
}
#: Every label any series may carry: small fixed sets, never a key.
ALLOWED_LABELS = {"source", "reason", "op", "outcome", "le"}
BACKING_OPS = ["read", "write", "set_attributes", "allocate", "sync", "get_attributes"]


def pattern(size: int, seed: int = 0) -> bytes:
    block = bytes((i * 7 + seed * 13 + 1) & 0xFF for i in range(251))
    return (block * (size // len(block) + 1))[:size]


class Reader:
    """``registry.get_sample_value`` with the prefix, and 0.0 for a missing sample."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def __call__(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(P + name, labels or None)
        return 0.0 if value is None else value

    def strict(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(P + name, labels or None)
        assert value is not None, f"no sample {P + name}{labels or ''}"
        return value


def sample_names(registry: CollectorRegistry) -> set[str]:
    return {s.name for m in registry.collect() for s in m.samples}


def family_names(registry: CollectorRegistry) -> set[str]:
    return {m.name for m in registry.collect()}


def new_store(registry: CollectorRegistry, limit: int = 8 * MiB, **kwargs: Any) -> CacheStore:
    return CacheStore(limit, registry=registry, **kwargs)


# -------------------------------------------------------------------------------------------
# Names, registration
# -------------------------------------------------------------------------------------------


def test_api_names_exist_once_a_store_is_created() -> None:
    registry = CollectorRegistry()
    new_store(registry)
    families = family_names(registry)
    samples = sample_names(registry)
    for family, names in API_METRICS.items():
        assert P + family in families, family
        for name in names:
            assert P + name in samples, name
    m = Reader(registry)
    assert m.strict("read_bytes_total", source="cache") == 0
    assert m.strict("read_bytes_total", source="backing") == 0
    for reason in ("pressure", "shrink", "release"):
        assert m.strict("evicted_bytes_total", reason=reason) == 0
    assert m.strict("memory_limit_bytes") == 8 * MiB
    assert m.strict("writeback_seconds_count") == 0


def test_issue_names_exist_once_a_store_is_created() -> None:
    registry = CollectorRegistry()
    new_store(registry)
    families = family_names(registry)
    samples = sample_names(registry)
    for family, names in ISSUE_METRICS.items():
        assert P + family in families, family
        for name in names:
            assert P + name in samples, name
    m = Reader(registry)
    for op in BACKING_OPS:
        assert m.strict("backing_requests_total", op=op) == 0
        assert m.strict("backing_request_seconds_count", op=op) == 0
    assert m.strict("readahead_outcome_bytes_total", outcome="used") == 0
    assert m.strict("readahead_outcome_bytes_total", outcome="wasted") == 0


def test_counters_end_in_total_and_units_are_base() -> None:
    registry = CollectorRegistry()
    new_store(registry)
    for metric in registry.collect():
        assert metric.name.startswith(P)
        if metric.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in metric.samples)
        assert "_milliseconds" not in metric.name
        assert "_kilobytes" not in metric.name


async def test_two_live_stores_on_one_registry_is_an_error() -> None:
    registry = CollectorRegistry()
    async with new_store(registry):
        with pytest.raises(CacheError, match="registry"):
            new_store(registry)
        # The failed second store left the first one's series alone.
        assert Reader(registry).strict("memory_limit_bytes") == 8 * MiB
    assert P + "cache_hits_total" not in sample_names(registry)


async def test_sequential_stores_on_one_registry() -> None:
    registry = CollectorRegistry()
    m = Reader(registry)
    for limit in (MiB, 2 * MiB, 3 * MiB):
        async with new_store(registry, limit) as s, s.open("k", MemoryBacking(b"x" * 10)) as i:
            await i.read(0, 10)
            await i.read(0, 10)
            assert m("memory_limit_bytes") == limit
            # Each store starts from zero.
            assert m("cache_misses_total") == 1
            assert m("cache_hits_total") == 1
        assert P + "cache_hits_total" not in sample_names(registry)


def test_no_registry_means_no_series() -> None:
    registry = CollectorRegistry()
    CacheStore(MiB, registry=False)
    assert not any(n.startswith(P) for n in sample_names(registry))


# -------------------------------------------------------------------------------------------
# Exact movements
# -------------------------------------------------------------------------------------------


async def test_hits_misses_and_read_bytes_move_exactly() -> None:
    registry = CollectorRegistry()
    m = Reader(registry)
    data = pattern(64 * KiB)
    backing = MemoryBacking(data)
    async with new_store(registry) as s, s.open("k", backing) as inode:
        assert await inode.read(0, len(data)) == data
        assert m("cache_misses_total") == 1
        assert m("cache_hits_total") == 0
        assert m("read_bytes_total", source="backing") == len(data)
        assert m("read_bytes_total", source="cache") == 0
        n = 25
        total = 0
        for i in range(n):
            off = (i * 2477) % (len(data) - 3000)
            size = 1 + (i * 131) % 3000
            assert await inode.read(off, size) == data[off : off + size]
            total += size
        assert m("cache_hits_total") == n
        assert m("cache_misses_total") == 1
        assert m("read_bytes_total", source="cache") == total
        assert m("read_bytes_total", source="backing") == len(data)
        # Reads at or past EOF, and empty reads, move nothing.
        assert await inode.read(len(data), 10) == b""
        assert await inode.read(5, 0) == b""
        assert m("cache_hits_total") == n
        assert m("cache_misses_total") == 1
        # Backing requests: exactly the backing's own count, by operation.
        assert m("backing_requests_total", op="read") == backing.stats.reads
        assert m("backing_request_seconds_count", op="read") == backing.stats.reads
        assert m("backing_requests_total", op="get_attributes") == 1  # the open
        assert s.statistics().cache_hits == n


async def test_dirty_gauge_equals_sum_of_inode_dirty_bytes() -> None:
    registry = CollectorRegistry()
    m = Reader(registry)
    backings = [MemoryBacking(pattern(16 * PAGE_SIZE, seed=i)) for i in range(4)]
    async with new_store(registry, write_back=True, dirty_expire=3600) as s:
        inodes = []
        for i, b in enumerate(backings):
            async with s.open(i, b) as inode:
                inodes.append(inode)
                await inode.write(i * 1000, b"d" * (1000 + i * 3000))
                await inode.write(12 * PAGE_SIZE, b"e" * (i + 1))
        want = sum(i.dirty_bytes for i in inodes)
        assert want == sum(1000 + i * 3000 + i + 1 for i in range(4))
        assert m("dirty_bytes") == want == s.dirty_bytes
        assert m("cached_bytes") == sum(i.cached_bytes for i in inodes)
        await inodes[1].write_out()
        assert m("dirty_bytes") == sum(i.dirty_bytes for i in inodes) == want - 4000 - 2
        await s.shrink(0)
        assert m("dirty_bytes") == 0
        assert m("cached_bytes") == 0


async def test_writeback_bytes_equal_bytes_written_to_backing() -> None:
    registry = CollectorRegistry()
    m = Reader(registry)
    backings = [MemoryBacking(bytes(32 * PAGE_SIZE)) for _ in range(3)]
    async with new_store(registry, write_back=True, dirty_expire=3600) as s:
        for i, b in enumerate(backings):
            async with s.open(i, b) as inode:
                for j in range(5):
                    await inode.write(j * 5 * PAGE_SIZE + i, pattern(PAGE_SIZE + 7 * j, seed=j))
        await s.get(0).write_out()
        cached = s.usage
        await s.shrink(0)  # eviction write-back
        await s.sync()
        written = sum(b.stats.written_bytes for b in backings)
        writes = sum(b.stats.writes for b in backings)
        assert written > 0
        assert m("writeback_bytes_total") == written
        assert m("writethrough_bytes_total") == 0
        # One histogram observation per write-back request (a MemoryBacking never writes short).
        assert m("writeback_seconds_count") == writes
        assert m("backing_requests_total", op="write") == writes
        assert m("backing_request_seconds_count", op="write") == writes
        assert m("writeback_errors_total") == 0
        assert m("evicted_bytes_total", reason="shrink") == cached > 0


async def test_writethrough_is_not_writeback() -> None:
    registry = CollectorRegistry()
    m = Reader(registry)
    backing = MemoryBacking(bytes(4 * PAGE_SIZE))
    async with new_store(registry) as s, s.open("k", backing) as inode:
        await inode.write(0, b"t" * 1000)
        assert m("writethrough_bytes_total") == 1000
        assert m("writeback_bytes_total") == 0
        assert m("written_bytes_total") == 1000
        assert m("writeback_seconds_count") == 0


async def test_writeback_errors_count_failed_requests() -> None:
    registry = CollectorRegistry()
    m = Reader(registry)
    faulty = FaultInjector(MemoryBacking(), seed=1)
    async with (
        new_store(registry, write_back=True, dirty_expire=3600) as s,
        s.open("k", faulty) as inode,
    ):
        await inode.write(0, b"x" * PAGE_SIZE)
        faulty.error_rate = 1.0
        for attempt in range(1, 4):
            with pytest.raises(CacheError):
                await inode.write_out()
            assert m("writeback_errors_total") == attempt
            assert m("backing_errors_total", op="write") == attempt
        assert m("writeback_bytes_total") == 0
        assert m("dirty_bytes") == PAGE_SIZE
        faulty.error_rate = 0.0
        await inode.write_out()
        assert m("writeback_bytes_total") == PAGE_SIZE


async def test_evicted_bytes_by_reason() -> None:
    registry = CollectorRegistry()
    m = Reader(registry)
    async with new_store(registry, policy="lru") as s:
        async with s.open("a", MemoryBacking(pattern(64 * PAGE_SIZE))) as a:
            await a.read(0, 64 * PAGE_SIZE)
            await a.truncate(40 * PAGE_SIZE)
            assert m("evicted_bytes_total", reason="truncate") == 24 * PAGE_SIZE
            await a.evict(0, 8 * PAGE_SIZE)
            assert m("evicted_bytes_total", reason="explicit") == 8 * PAGE_SIZE
            assert await s.shrink(16 * PAGE_SIZE) <= 16 * PAGE_SIZE
            assert m("evicted_bytes_total", reason="shrink") == 32 * PAGE_SIZE - s.usage
        left = s.usage
        await s.forget("a")
        assert m("evicted_bytes_total", reason="release") == left
        assert m("evicted_bytes_total", reason="pressure") == 0
        assert m("cached_bytes") == 0


async def test_pinned_and_usage_gauges() -> None:
    registry = CollectorRegistry()
    m = Reader(registry)
    async with new_store(registry) as s, s.open("k", MemoryBacking(pattern(64 * KiB))) as inode:
        async with inode.view(100, 3 * PAGE_SIZE) as views:
            assert sum(len(v) for v in views) == 3 * PAGE_SIZE
            assert m("pinned_bytes") == 4 * PAGE_SIZE == s.pinned_bytes
            assert m("usage_bytes") == s.usage
        assert m("pinned_bytes") == 0


async def test_readahead_used_and_wasted() -> None:
    registry = CollectorRegistry()
    m = Reader(registry)
    size = 2 * MiB
    async with (
        new_store(registry, readahead_initial=64 * KiB, readahead_max=256 * KiB) as s,
        s.open("k", MemoryBacking(pattern(size))) as inode,
    ):
        off = 0
        while off < size // 2:  # half the file, sequentially
            off += len(await inode.read(off, 32 * KiB))
        await anyio.wait_all_tasks_blocked()  # let readahead fills land
        ahead = m("readahead_bytes_total")
        used = m("readahead_outcome_bytes_total", outcome="used")
        assert ahead > 0
        assert 0 < used < ahead
        assert m("readahead_outcome_bytes_total", outcome="wasted") == 0
        await s.shrink(0)  # drops the readahead nobody read
        wasted = m("readahead_outcome_bytes_total", outcome="wasted")
        # Used readahead is counted lazily (at top-ups, jumps and drops): the drop settled the
        # reader's last run, so the count may have moved by less than one request since.
        settled = m("readahead_outcome_bytes_total", outcome="used")
        assert used <= settled < used + 256 * KiB
        assert settled + wasted == ahead
        assert wasted > 0


async def test_throttled_seconds_and_eviction_runs_move() -> None:
    registry = CollectorRegistry()
    m = Reader(registry)
    backing = MemoryBacking(latency=0.005)
    async with (
        new_store(
            registry,
            MiB,
            write_back=True,
            dirty_limit_bytes=32 * KiB,
            dirty_expire=3600,
            writeback_interval=3600,
            pressure_poll_interval=0.01,
        ) as s,
        s.open("k", backing) as inode,
    ):
        for i in range(16):
            await inode.write(i * 16 * KiB, pattern(16 * KiB, seed=i))
        assert m("writer_throttled_seconds_total") > 0
        assert m("writer_throttled_seconds_total") == s.statistics().throttled_seconds
        # 256 KiB of a 1 MiB budget: now read a whole file that takes usage past the high
        # watermark (95%) but not past the limit.
        async with s.open("r", MemoryBacking(pattern(736 * KiB))) as r:
            await r.read(0, 736 * KiB)
        with anyio.fail_after(20):
            while m("eviction_runs_total") == 0:  # noqa: ASYNC110 - a scraped counter
                await anyio.sleep(0.01)
        assert m("eviction_runs_total") == s.statistics().eviction_runs


# -------------------------------------------------------------------------------------------
# Labels
# -------------------------------------------------------------------------------------------


async def test_labels_are_low_cardinality() -> None:
    registry = CollectorRegistry()
    async with new_store(registry, write_back=True) as s:
        before = sorted((x.name, tuple(sorted(x.labels.items()))) for x in _samples(registry))
        for i in range(50):
            async with s.open(f"object-{i}", MemoryBacking(pattern(PAGE_SIZE, seed=i))) as inode:
                await inode.read(0, 100)
                await inode.write(0, b"w")
        await s.sync()
        after = sorted((x.name, tuple(sorted(x.labels.items()))) for x in _samples(registry))
        # 50 keys later: exactly the same series (histograms may gain nothing per key).
        assert after == before
        for x in _samples(registry):
            assert set(x.labels) <= ALLOWED_LABELS, x
            assert not any("object-" in v for v in x.labels.values()), x


def _samples(registry: CollectorRegistry) -> list[Any]:
    return [s for m in registry.collect() for s in m.samples]
