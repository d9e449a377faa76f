"""The store's meter: a backing wrapper that counts and times every request by operation.

The store wraps each backing it opens in one (:func:`metered`), so an inode calls its backing
directly and the metering happens at the edge, as :class:`~aiocache_inode.backing.FaultInjector`
misbehaves at the edge, instead of every request detouring through the store. It bumps the
store's :class:`~aiocache_inode.stats.Counters` (``backing_requests``, ``backing_errors``,
``backing_seconds``, ``backing_bytes``; ``metrics.py`` reads them at scrape time) and hands
each duration to ``observe`` (the Prometheus histogram, when metrics are on). A cache hit never
reaches a backing, so the hit path does not pass through here at all.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, final

from .base import BackingFile, Revalidating
from .delegating import DelegatingBacking

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ..attrs import AttrMask, Attrs
    from ..stats import Counters

__all__ = ["MeteredBacking", "MeteredRevalidating", "metered"]


class MeteredBacking(DelegatingBacking[BackingFile]):
    """Passes every call on to ``inner``, counting and timing it into ``counters`` by operation.

    The operation labels are ``stats.BACKING_OPS``. A request is counted when it starts, an
    error when it raises an ``Exception`` (a cancellation is not a backing failure), and its
    duration (``time.perf_counter``) when it ends however it ends. Reads and writes also add
    the byte count ``inner`` returned. ``fd`` is not a request and is not counted. Each call's
    checkpoint and cancellation are ``inner``'s.

    ``refresh`` is on :class:`MeteredRevalidating`, made by :func:`metered` only over a backing
    with the hook, so the meter never makes a backing look revalidatable.

    Args:
        inner: the backing the store was given.
        counters: the store's counters (single event-loop thread: no lock).
        observe: called with ``(op, seconds)`` after every request.
    """

    __slots__ = ("_counters", "_observe")

    def __init__(
        self, inner: BackingFile, counters: Counters, observe: Callable[[str, float], None]
    ) -> None:
        super().__init__(inner)
        # Immutable after __init__.
        self._counters = counters
        self._observe = observe

    def _ended(self, op: str, t0: float) -> None:
        """Account the duration of a request of ``op`` that started at ``t0``."""
        dt = time.perf_counter() - t0
        self._counters.backing_seconds[op] += dt
        self._observe(op, dt)

    async def read_into(self, offset: int, buffers: Sequence[memoryview]) -> int:
        """``inner.read_into``, counted as ``read``."""
        c = self._counters
        c.backing_requests["read"] += 1
        t0 = time.perf_counter()
        try:
            n = await self.inner.read_into(offset, buffers)
        except Exception:
            c.backing_errors["read"] += 1
            raise
        finally:
            self._ended("read", t0)
        c.backing_bytes["read"] += n
        return n

    async def write_from(self, offset: int, buffers: Sequence[memoryview]) -> int:
        """``inner.write_from``, counted as ``write``."""
        c = self._counters
        c.backing_requests["write"] += 1
        t0 = time.perf_counter()
        try:
            n = await self.inner.write_from(offset, buffers)
        except Exception:
            c.backing_errors["write"] += 1
            raise
        finally:
            self._ended("write", t0)
        c.backing_bytes["write"] += n
        return n

    async def get_attributes(self) -> Attrs:
        """``inner.get_attributes``, counted as ``get_attributes``."""
        c = self._counters
        c.backing_requests["get_attributes"] += 1
        t0 = time.perf_counter()
        try:
            return await self.inner.get_attributes()
        except Exception:
            c.backing_errors["get_attributes"] += 1
            raise
        finally:
            self._ended("get_attributes", t0)

    async def set_attributes(self, mask: AttrMask, attrs: Attrs, force_timestamps: bool) -> None:
        """``inner.set_attributes``, counted as ``set_attributes``."""
        c = self._counters
        c.backing_requests["set_attributes"] += 1
        t0 = time.perf_counter()
        try:
            await self.inner.set_attributes(mask, attrs, force_timestamps)
        except Exception:
            c.backing_errors["set_attributes"] += 1
            raise
        finally:
            self._ended("set_attributes", t0)

    async def allocate(self, offset: int, length: int) -> None:
        """``inner.allocate``, counted as ``allocate``."""
        c = self._counters
        c.backing_requests["allocate"] += 1
        t0 = time.perf_counter()
        try:
            await self.inner.allocate(offset, length)
        except Exception:
            c.backing_errors["allocate"] += 1
            raise
        finally:
            self._ended("allocate", t0)

    async def sync(self) -> None:
        """``inner.sync``, counted as ``sync``."""
        c = self._counters
        c.backing_requests["sync"] += 1
        t0 = time.perf_counter()
        try:
            await self.inner.sync()
        except Exception:
            c.backing_errors["sync"] += 1
            raise
        finally:
            self._ended("sync", t0)


@final
class MeteredRevalidating(MeteredBacking):
    """A :class:`MeteredBacking` over a backing with the ``Revalidating`` hook, passed on."""

    __slots__ = ()

    async def refresh(self) -> bool:
        """``inner.refresh``, counted as ``refresh``."""
        inner = self.inner
        assert isinstance(inner, Revalidating)  # metered() made this class only over one
        c = self._counters
        c.backing_requests["refresh"] += 1
        t0 = time.perf_counter()
        try:
            return await inner.refresh()
        except Exception:
            c.backing_errors["refresh"] += 1
            raise
        finally:
            self._ended("refresh", t0)


def metered(
    inner: BackingFile, counters: Counters, observe: Callable[[str, float], None]
) -> MeteredBacking:
    """``inner`` wrapped in the meter; a :class:`MeteredRevalidating` when it has ``refresh``."""
    if isinstance(inner, Revalidating):
        return MeteredRevalidating(inner, counters, observe)
    return MeteredBacking(inner, counters, observe)
