"""The gateway's HTTP series, in the same registry as the cache's (served at ``GET /metrics``).

Names as the gateway contract fixes them: requests by S3 operation and status, a latency
histogram by operation, request and response body bytes, requests in flight, and the
``x-cache`` outcome of object reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, final

from prometheus_client import Counter, Gauge, Histogram

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["HttpMetrics"]

# Latency buckets (seconds): sub-millisecond hits up to multi-second large transfers.
_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


@final
class HttpMetrics:
    """The HTTP series of one gateway, registered in ``registry``."""

    __slots__ = (
        "_cache_children",
        "_children",
        "cache_results",
        "in_flight",
        "received",
        "requests",
        "seconds",
        "sent",
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "aiocache_gateway_requests",
            "Requests answered, by S3 operation and HTTP status.",
            ["operation", "status"],
            registry=registry,
        )
        self.seconds = Histogram(
            "aiocache_gateway_request_seconds",
            "Time from request start to the last response byte, by S3 operation.",
            ["operation"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.received = Counter(
            "aiocache_gateway_received_bytes", "Request body bytes received.", registry=registry
        )
        self.sent = Counter(
            "aiocache_gateway_sent_bytes", "Response body bytes sent.", registry=registry
        )
        self.in_flight = Gauge(
            "aiocache_gateway_requests_in_flight", "Requests being served.", registry=registry
        )
        self.cache_results = Counter(
            "aiocache_gateway_cache_results",
            "Object reads by x-cache outcome (HIT, MISS, PARTIAL).",
            ["result"],
            registry=registry,
        )
        # The labelled children by label values: ``labels()`` costs a lock and a tuple each.
        self._cache_children = {r: self.cache_results.labels(r) for r in ("HIT", "MISS", "PARTIAL")}
        self._children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}

    def observe(self, operation: str, status: int, seconds: float) -> None:
        """Count one finished request."""
        children = self._children.get((operation, status))
        if children is None:
            children = (
                self.requests.labels(operation, str(status)),
                self.seconds.labels(operation),
            )
            self._children[(operation, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def cache_result(self, result: str) -> None:
        """Count one object read's ``x-cache`` outcome (HIT, MISS or PARTIAL)."""
        self._cache_children[result].inc()
