"""Prometheus series for a store: the only module that imports prometheus_client.

Counters and gauges are read from the store's plain counters at scrape time (a custom
collector), so the hit path never touches a Prometheus lock; the two histograms (write-back and
backing request durations) are observed as those slow events happen. No per-key labels: label
values are the fixed sets in ``stats.py``.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, final

from prometheus_client import REGISTRY, CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .errors import CacheError
from .stats import BACKING_OPS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from prometheus_client.metrics_core import Metric

    from .stats import StoreStatistics
    from .tunables import Tunables

__all__ = ["PREFIX", "StoreMetrics"]

PREFIX = "aiocache_inode_"

_DURATION_BUCKETS = (
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


@final
class _StoreCollector(Collector):
    """Reads the store's counters and usage at scrape time."""

    def __init__(self, statistics: Callable[[], StoreStatistics], tunables: Tunables) -> None:
        self._statistics = statistics
        self._tunables = tunables

    def describe(self) -> list[Metric]:
        # Describing by collecting lets the registry detect name clashes at registration.
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        s = self._statistics()

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(PREFIX + name, doc, value=value)

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(PREFIX + name, doc, value=value)

        yield counter("cache_hits", "Reads served entirely from cached pages.", s.cache_hits)
        yield counter("cache_misses", "Reads that had to fill from the backing.", s.cache_misses)
        rb = CounterMetricFamily(
            PREFIX + "read_bytes", "Bytes returned to readers, by source.", labels=["source"]
        )
        rb.add_metric(["cache"], s.read_bytes_cache)
        rb.add_metric(["backing"], s.read_bytes_backing)
        yield rb
        yield gauge("cached_bytes", "Bytes of file data held in the pool.", s.cached_bytes)
        yield gauge("pinned_bytes", "Bytes mapped by views (never evicted).", s.pinned_bytes)
        yield gauge("dirty_bytes", "Bytes of data not yet written back.", s.dirty_bytes)
        yield gauge(
            "dirty_limit_bytes",
            "Dirty bytes above which writers are throttled.",
            self._tunables.dirty_limit_bytes,
        )
        yield gauge("memory_limit_bytes", "The pool's byte budget.", s.memory_limit)
        yield gauge("usage_bytes", "Pool bytes held: cached, being filled, pinned.", s.usage)
        yield gauge("arena_bytes", "Bytes of anonymous memory mapped for the pool.", s.arena_bytes)
        yield gauge("inodes", "Resident inodes.", s.inodes)
        yield counter("written_bytes", "Bytes accepted by write().", s.written_bytes)
        yield counter(
            "writethrough_bytes", "Bytes written straight to the backing.", s.writethrough_bytes
        )
        yield counter("writeback_bytes", "Dirty bytes written back.", s.writeback_bytes)
        yield counter("writeback_errors", "Failed write-back requests.", s.writeback_errors)
        yield counter("writeback_runs", "Write-back passes that wrote data.", s.writeback_runs)
        ev = CounterMetricFamily(
            PREFIX + "evicted_bytes", "Bytes dropped from the cache, by reason.", labels=["reason"]
        )
        for reason, value in s.evicted_bytes.items():
            ev.add_metric([reason], value)
        yield ev
        yield counter("eviction_runs", "Background eviction passes.", s.eviction_runs)
        req = CounterMetricFamily(
            PREFIX + "backing_requests", "Backing requests, by operation.", labels=["op"]
        )
        err = CounterMetricFamily(
            PREFIX + "backing_errors", "Failed backing requests, by operation.", labels=["op"]
        )
        for op in BACKING_OPS:
            req.add_metric([op], s.backing_requests[op])
            err.add_metric([op], s.backing_errors[op])
        yield req
        yield err
        yield counter(
            "writer_throttled_seconds",
            "Time writers waited because dirty bytes passed the hard limit.",
            s.throttled_seconds,
        )
        yield counter("readahead_bytes", "Bytes requested speculatively.", s.readahead_bytes)
        ra = CounterMetricFamily(
            PREFIX + "readahead_outcome_bytes",
            "Readahead bytes later read (used) or dropped unread (wasted).",
            labels=["outcome"],
        )
        ra.add_metric(["used"], s.readahead_used_bytes)
        ra.add_metric(["wasted"], s.readahead_wasted_bytes)
        yield ra


@final
class StoreMetrics:
    """The Prometheus side of one store; registered on creation, unregistered on close.

    Args:
        statistics: the store's ``statistics()``, called at every scrape.
        tunables: the store's resolved tunables.
        registry: where to register (None: prometheus_client's global registry).

    Raises:
        CacheError: the registry already has these series (two live stores on one registry).
    """

    def __init__(
        self,
        statistics: Callable[[], StoreStatistics],
        tunables: Tunables,
        registry: CollectorRegistry | None,
    ) -> None:
        self.registry = REGISTRY if registry is None else registry
        self._collector = _StoreCollector(statistics, tunables)
        try:
            self.registry.register(self._collector)
        except ValueError as exc:
            raise CacheError(
                f"metrics already registered ({exc}); give each live CacheStore its own registry"
            ) from exc
        try:
            self.writeback_seconds = Histogram(
                PREFIX + "writeback_seconds",
                "Duration of write-back requests.",
                buckets=_DURATION_BUCKETS,
                registry=self.registry,
            )
            self.backing_seconds = Histogram(
                PREFIX + "backing_request_seconds",
                "Duration of backing requests, by operation.",
                ["op"],
                buckets=_DURATION_BUCKETS,
                registry=self.registry,
            )
        except ValueError as exc:
            self.registry.unregister(self._collector)
            raise CacheError(f"metrics already registered ({exc})") from exc
        # Every operation's series exists from the start (zero counts), like the request
        # counters beside it: a dashboard's rate() needs the series before the first request.
        for op in BACKING_OPS:
            self.backing_seconds.labels(op)

    def unregister(self) -> None:
        """Remove every series of this store from its registry."""
        for c in (self._collector, self.writeback_seconds, self.backing_seconds):
            with contextlib.suppress(KeyError):
                self.registry.unregister(c)
