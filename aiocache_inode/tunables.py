"""Every knob of a store in one table (diskcache's ``DEFAULT_SETTINGS``), one comment per value."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

__all__ = ["TUNABLE_NAMES", "Tunables"]


@dataclass(frozen=True, slots=True)
class Tunables:
    """Every knob in one table; ``CacheStore(**tunables)`` overrides any of them by name."""

    policy: str = "s3fifo"  # eviction policy by name: "lru", "s3fifo", "clock"
    high_watermark: float = 0.95  # evictor wakes above this fraction of memory_limit
    low_watermark: float = 0.85  # ...and evicts down to this fraction
    pressure_poll_interval: float = 0.5  # s; how often pressure sources are polled
    readahead_initial: int = 2 << 20  # first window of a stream (at least 2x the read size)
    readahead_max: int = 1 << 30  # per-reader window bound (its cap share binds first); 0 = off
    readahead_request: int = 256 << 10  # a window goes out as requests of at most this size
    readahead_cap: int = 0  # speculative bytes in flight; 0 = memory_limit // 4
    hit_yield_every: int = 64  # a run of hits checkpoints at least this often
    writeback_interval: float = 1.0  # s; flusher period
    dirty_expire: float = 5.0  # s; dirty data older than this is written back
    dirty_background_bytes: int = 0  # flusher writes everything above this; 0 = limit // 10
    dirty_limit_bytes: int = 0  # writers are throttled above this; 0 = limit // 4
    writeback_max_run: int = 8 << 20  # largest single write-back request
    arena_size: int = 64 << 20  # bytes per anonymous mmap arena of the pool
    pool_warm_bytes: int = -1  # freed pages kept resident for reuse; -1 = min(limit // 32, 8 MiB)
    noatime: bool = False  # touch_access_time() is a no-op (reads never touch atime: see docs)

    def resolved(self, memory_limit: int) -> Tunables:
        """Fill the zero defaults that depend on the budget, and validate."""
        t = self
        if t.readahead_cap == 0:
            t = replace(t, readahead_cap=max(memory_limit // 4, 1 << 20))
        if t.dirty_background_bytes == 0:
            t = replace(t, dirty_background_bytes=max(memory_limit // 10, 64 << 10))
        if t.pool_warm_bytes == -1:
            t = replace(t, pool_warm_bytes=min(memory_limit // 32, 8 << 20) & ~4095)
        elif t.pool_warm_bytes < 0:
            raise ValueError("pool_warm_bytes must be >= 0, or -1 for the default")
        if t.dirty_limit_bytes == 0:
            t = replace(t, dirty_limit_bytes=max(memory_limit // 4, 256 << 10))
        if not 0 < t.low_watermark <= t.high_watermark <= 1:
            raise ValueError("need 0 < low_watermark <= high_watermark <= 1")
        if t.readahead_max < 0:
            raise ValueError("readahead_max must be >= 0 (0 turns readahead off)")
        for name in ("readahead_initial", "readahead_request", "hit_yield_every"):
            if getattr(t, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("pressure_poll_interval", "writeback_interval", "dirty_expire"):
            if getattr(t, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if t.writeback_max_run < 4096:
            raise ValueError("writeback_max_run must be at least one page")
        return t


TUNABLE_NAMES = frozenset(f.name for f in fields(Tunables))
