"""Counters the inodes bump and the frozen snapshots ``statistics()`` returns.

The hot path increments plain integer slots (a Prometheus ``Counter.inc`` takes a lock and costs
more than a 4 KiB copy); ``metrics.py`` reads these at scrape time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import final

__all__ = [
    "BACKING_DATA_OPS",
    "BACKING_OPS",
    "EVICTION_REASONS",
    "Counters",
    "InodeStatistics",
    "StoreStatistics",
]

#: Backing operations timed by operation label.
BACKING_OPS = ("read", "write", "set_attributes", "allocate", "sync", "get_attributes", "refresh")
#: The backing operations that move file data, whose bytes are counted too.
BACKING_DATA_OPS = ("read", "write")
#: Why bytes left the cache: the budget (evictor or an allocation), an explicit shrink or evict,
#: truncation, invalidation, a revalidation that found the file changed, or the inode being
#: forgotten/released.
EVICTION_REASONS = (
    "pressure",
    "shrink",
    "explicit",
    "truncate",
    "invalidate",
    "revalidate",
    "release",
)


@final
class Counters:
    """Mutable counters shared by every inode of one store (single event-loop thread)."""

    __slots__ = (
        "backing_bytes",
        "backing_errors",
        "backing_requests",
        "backing_seconds",
        "cache_hits",
        "cache_misses",
        "evicted_bytes",
        "eviction_runs",
        "read_bytes_backing",
        "read_bytes_cache",
        "readahead_bytes",
        "readahead_used_bytes",
        "readahead_wasted_bytes",
        "throttled_seconds",
        "writeback_bytes",
        "writeback_errors",
        "writeback_runs",
        "writethrough_bytes",
        "written_bytes",
    )

    def __init__(self) -> None:
        self.cache_hits = 0
        self.cache_misses = 0
        self.read_bytes_cache = 0
        self.read_bytes_backing = 0
        self.written_bytes = 0
        self.writethrough_bytes = 0
        self.writeback_bytes = 0
        self.writeback_errors = 0
        self.writeback_runs = 0
        self.evicted_bytes: dict[str, int] = dict.fromkeys(EVICTION_REASONS, 0)
        self.eviction_runs = 0
        self.backing_requests: dict[str, int] = dict.fromkeys(BACKING_OPS, 0)
        self.backing_errors: dict[str, int] = dict.fromkeys(BACKING_OPS, 0)
        self.backing_seconds: dict[str, float] = dict.fromkeys(BACKING_OPS, 0.0)
        # Bytes the backing reported moving (its return counts), by operation.
        self.backing_bytes: dict[str, int] = dict.fromkeys(BACKING_DATA_OPS, 0)
        self.readahead_bytes = 0
        self.readahead_used_bytes = 0
        self.readahead_wasted_bytes = 0
        self.throttled_seconds = 0.0


@dataclass(frozen=True, slots=True)
class InodeStatistics:
    """A snapshot of one inode's state."""

    size: int
    cached_bytes: int
    dirty_bytes: int
    mapped_bytes: int
    inflight_ops: int
    cached_segments: int
    dirty_segments: int


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    """A snapshot of a store: usage by kind, the counters, and the inode table."""

    memory_limit: int
    usage: int
    cached_bytes: int
    dirty_bytes: int
    pinned_bytes: int
    arena_bytes: int
    inodes: int
    cache_hits: int
    cache_misses: int
    read_bytes_cache: int
    read_bytes_backing: int
    written_bytes: int
    writethrough_bytes: int
    writeback_bytes: int
    writeback_errors: int
    writeback_runs: int
    eviction_runs: int
    readahead_bytes: int
    readahead_used_bytes: int
    readahead_wasted_bytes: int
    throttled_seconds: float
    evicted_bytes: dict[str, int] = field(default_factory=dict)
    backing_requests: dict[str, int] = field(default_factory=dict)
    backing_errors: dict[str, int] = field(default_factory=dict)
    backing_seconds: dict[str, float] = field(default_factory=dict)
    #: Bytes read from and written to the backing (its return counts), by operation.
    backing_bytes: dict[str, int] = field(default_factory=dict)
