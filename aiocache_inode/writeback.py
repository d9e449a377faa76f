"""The background flusher and writer throttling (Linux's balance_dirty_pages, simplified).

- Dirty data older than ``dirty_expire`` seconds is written back on the next flusher pass
  (``writeback_interval``), in coalesced runs of at most ``writeback_max_run`` bytes.
- Above ``dirty_background_bytes`` the flusher writes back everything it can, oldest inode first.
- Above ``dirty_limit_bytes`` writers wait (throttled) before they add more dirty data, until the
  flusher brings dirty bytes back under the limit or a pass makes no progress (a failing backing
  must not hang writers forever: they proceed and the data stays dirty and cached).

The flusher reaches inodes only through the :class:`~aiocache_inode.services.Reclaimable`
protocol and the store's totals through its :class:`~aiocache_inode.services.StoreServices`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, final

import anyio

from .errors import CacheError
from .ranges import MAX_OFFSET

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from .services import Reclaimable, StoreServices

__all__ = ["Flusher"]

log = logging.getLogger(__name__)


@final
class Flusher:
    """One store's flusher: the background write-back task, its passes and writer throttling.

    Args:
        services: the store's services (totals, tunables, clocks, counters).
        inodes: the resident inodes, called once per pass.
        background: whether the task runs; without it (deterministic tests) a throttled writer
            writes back inline instead of waiting for a pass.
    """

    __slots__ = ("_background", "_inodes", "_progress", "_progress_bytes", "_svc", "_wakeup")

    def __init__(
        self,
        services: StoreServices,
        inodes: Callable[[], Iterable[Reclaimable]],
        *,
        background: bool,
    ) -> None:
        # Immutable after __init__.
        self._svc = services
        self._inodes = inodes
        self._background = background
        # Set to start a pass now; replaced by the task after each wake-up. Loop-atomic.
        self._wakeup = anyio.Event()
        # Set (and replaced) after every background pass, with the bytes it wrote: throttled
        # writers wait on it. Loop-atomic.
        self._progress = anyio.Event()
        self._progress_bytes = 0

    @property
    def progress(self) -> anyio.Event:
        """The event the next background pass sets when it ends."""
        return self._progress

    def wake(self) -> None:
        """Start a pass now rather than at the next interval. Synchronous."""
        self._wakeup.set()

    async def flush_pass(self, *, everything: bool) -> int:
        """Write back expired (or, with ``everything``, all) dirty inodes; return bytes written.

        Checkpoint: when anything is dirty.
        Cancellation: stops between runs; unwritten data stays dirty.
        """
        t = self._svc.tunables
        now = self._svc.monotonic()
        written = 0
        candidates = sorted(
            (ino for ino in self._inodes() if ino.has_dirty_pages() and not ino.closed),
            key=lambda ino: ino.dirtied_at if ino.dirtied_at is not None else now,
        )
        for inode in candidates:
            dirtied = inode.dirtied_at
            if not everything and (dirtied is None or now - dirtied < t.dirty_expire):
                continue
            try:
                written += await inode.write_back(0, MAX_OFFSET, max_run=t.writeback_max_run)
            except CacheError as exc:
                log.warning("background write-back of %r failed: %s", inode.key, exc)
        return written

    async def run(self) -> None:
        """The store's background write-back task; runs until cancelled.

        Checkpoint: always. Cancellation: stops between runs; unwritten data stays dirty.
        """
        svc = self._svc
        interval = svc.tunables.writeback_interval
        while True:
            with anyio.move_on_after(interval):
                await self._wakeup.wait()
            self._wakeup = anyio.Event()
            # Over the hard limit writers are waiting on this pass: write everything, not only
            # expired data, even when dirty_background_bytes was set (or defaulted) above the
            # limit; otherwise the pass writes nothing and balance_dirty lets the writers
            # through at once.
            everything = svc.over_background_dirty() or svc.over_dirty_limit()
            written = await self.flush_pass(everything=everything)
            self._progress_bytes = written
            self._progress.set()
            self._progress = anyio.Event()

    async def balance_dirty(self) -> None:
        """Throttle a writer while dirty bytes exceed the hard limit.

        Checkpoint: only when throttled.
        Cancellation: nothing to undo; the writer simply did not write.
        """
        svc = self._svc
        limit = svc.tunables.dirty_limit_bytes
        if svc.dirty_bytes <= limit or not svc.running:
            return
        t0 = time.perf_counter()
        try:
            if not self._background:
                # No flusher to wait for: write back inline, once (deterministic tests).
                await self.flush_pass(everything=True)
                return
            while svc.dirty_bytes > limit:
                self.wake()
                progress = self._progress
                await progress.wait()
                if self._progress_bytes == 0:
                    break  # the backing is failing: do not hang writers forever
        finally:
            svc.counters.throttled_seconds += time.perf_counter() - t0
