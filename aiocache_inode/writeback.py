"""The background flusher and writer throttling (Linux's balance_dirty_pages, simplified).

- Dirty data older than ``dirty_expire`` seconds is written back on the next flusher pass
  (``writeback_interval``), in coalesced runs of at most ``writeback_max_run`` bytes.
- Above ``dirty_background_bytes`` the flusher writes back everything it can, oldest inode first.
- Above ``dirty_limit_bytes`` writers wait (throttled) before they add more dirty data, until the
  flusher brings dirty bytes back under the limit or a pass makes no progress (a failing backing
  must not hang writers forever: they proceed and the data stays dirty and cached).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import anyio

from .errors import CacheError

if TYPE_CHECKING:
    from .store import CacheStore

__all__ = ["balance_dirty", "run_flusher"]

log = logging.getLogger(__name__)


async def flush_pass(store: CacheStore, *, everything: bool) -> int:
    """Write back expired (or, with ``everything``, all) dirty inodes; return bytes written.

    Checkpoint: when anything is dirty.
    Cancellation: stops between runs; unwritten data stays dirty.
    """
    t = store._tunables
    now = store._monotonic()
    written = 0
    candidates = sorted(
        (ino for ino in store._inodes.values() if ino._dirty and not ino._closed),
        key=lambda ino: ino._dirtied_at if ino._dirtied_at is not None else now,
    )
    for inode in candidates:
        dirtied = inode._dirtied_at
        if not everything and (dirtied is None or now - dirtied < t.dirty_expire):
            continue
        try:
            written += await inode._writeback(0, 1 << 62, max_run=t.writeback_max_run)
        except CacheError as exc:
            log.warning("background write-back of %r failed: %s", inode.key, exc)
    return written


async def run_flusher(store: CacheStore) -> None:
    """The store's background write-back task; runs until cancelled.

    Checkpoint: always. Cancellation: stops between runs; unwritten data stays dirty.
    """
    t = store._tunables
    while True:
        with anyio.move_on_after(t.writeback_interval):
            await store._flush_wakeup.wait()
        store._flush_wakeup = anyio.Event()
        # Over the hard limit writers are waiting on this pass: write everything, not only
        # expired data, even when dirty_background_bytes was set (or defaulted) above the limit;
        # otherwise the pass writes nothing and balance_dirty lets the writers through at once.
        everything = store._over_background_dirty() or store._over_dirty_limit()
        written = await flush_pass(store, everything=everything)
        store._flush_progress_bytes = written
        store._flush_progress.set()
        store._flush_progress = anyio.Event()


async def balance_dirty(store: CacheStore) -> None:
    """Throttle a writer while dirty bytes exceed the hard limit.

    Checkpoint: only when throttled.
    Cancellation: nothing to undo; the writer simply did not write.
    """
    limit = store._tunables.dirty_limit_bytes
    if store._dirty_bytes <= limit or not store._running:
        return
    t0 = time.perf_counter()
    try:
        if not store._background:
            # No flusher to wait for: write back inline, once (deterministic tests).
            await flush_pass(store, everything=True)
            return
        while store._dirty_bytes > limit:
            store._wake_flusher()
            progress = store._flush_progress
            await progress.wait()
            if store._flush_progress_bytes == 0:
                break  # the backing is failing: do not hang writers forever
    finally:
        store._counters.throttled_seconds += time.perf_counter() - t0
