"""The seam between a store and its inodes: what a store lends, and what it may ask back.

The store depends on the inode, never the reverse. An inode is handed one
:class:`StoreServices` when it is made and reaches everything store-wide through it: the pool,
the replacement policy, the counters, the tunables, the budget (reservation and direct reclaim),
writer throttling, background tasks and the metrics hooks. The store, its reclaim and its
flusher reach an inode only through :class:`Reclaimable`.

Everything runs on one event-loop thread: every mutable field here is changed only between two
awaits (loop-atomic), so none needs a lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, final

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .policies import EvictionPolicy
    from .pool import MemoryPool
    from .stats import Counters
    from .tunables import Tunables

__all__ = ["Reclaimable", "StoreServices"]


@final
class StoreServices:
    """What a :class:`~aiocache_inode.CacheStore` lends each of its inodes.

    Hot path: a cache hit reads ``pool``, ``counters``, ``policy`` and ``hit_credit`` through
    one slotted attribute of the inode, as cheaply as it once read the store's own fields; the
    services are plain slots and pre-bound methods, no property and no per-call closure.
    """

    __slots__ = (
        "appends",
        "balance_dirty",
        "cached_bytes",
        "clock",
        "counters",
        "dirty_background",
        "dirty_bytes",
        "dirty_limit",
        "evict_above",
        "hit_credit",
        "hit_yield_every",
        "mapped_bytes",
        "memory_limit",
        "monotonic",
        "noatime",
        "observe_writeback",
        "policy",
        "pool",
        "readahead_inflight",
        "readahead_rtt",
        "readahead_streams",
        "reclaiming",
        "released",
        "reserve_nowait",
        "reserve_speculative",
        "retire_if_idle",
        "running",
        "spawn",
        "tunables",
        "wait_for_room",
        "wake_evictor",
        "wake_flusher",
        "write_back",
    )

    def __init__(
        self,
        *,
        pool: MemoryPool,
        policy: EvictionPolicy[int],
        counters: Counters,
        tunables: Tunables,
        memory_limit: int,
        write_back: bool,
        clock: Callable[[], int],
        monotonic: Callable[[], float],
        reserve_nowait: Callable[[int], bool],
        reserve_speculative: Callable[[int], bool],
        wait_for_room: Callable[[int], Awaitable[bool]],
        balance_dirty: Callable[[], Awaitable[None]],
        wake_evictor: Callable[[], None],
        wake_flusher: Callable[[], None],
        spawn: Callable[..., None],
        observe_writeback: Callable[[float], None],
        retire_if_idle: Callable[[int], None],
        released: Callable[[int], None],
    ) -> None:
        t = tunables
        # Shared structures. Immutable after __init__ (the objects themselves are loop-atomic).
        self.pool = pool
        self.policy = policy
        self.counters = counters
        self.tunables = t
        # Policy keys reclaim has popped and is still working on (a write-back may be in
        # flight): out of the policy so no other pass picks them, back in (or gone with their
        # chunk) when reclaim is done. An inode whose chunk loses its last page discards its
        # key here. Loop-atomic.
        # Invariant: policy keys | reclaiming == chunks with cached pages, at every await.
        self.reclaiming: set[int] = set()
        # Inodes holding an append reservation (inode id -> its give-back), oldest first. The
        # reservation is lent budget, not spent: reclaim takes reservations back (the store's
        # _take_back_appends) before it evicts a page or anyone goes over budget. Each inode
        # adds itself when it takes one and removes itself when it gives it back. Loop-atomic.
        self.appends: dict[int, Callable[[], None]] = {}
        # Copied out of the tunables for the hot paths. Immutable after __init__.
        self.write_back = write_back
        self.noatime = t.noatime
        self.dirty_limit = t.dirty_limit_bytes
        self.dirty_background = t.dirty_background_bytes
        self.hit_yield_every = t.hit_yield_every
        # The budget in bytes (the store's memory_limit): an append reservation is sized within
        # its free headroom.
        self.memory_limit = memory_limit
        # Usage above which finished fills wake the evictor (the high watermark, in bytes).
        self.evict_above = int(t.high_watermark * memory_limit)
        # Nanosecond wall clock (timestamps) and seconds clock (dirty ages). Immutable.
        self.clock = clock
        self.monotonic = monotonic
        # Hits and synchronous writes left before the next one checkpoints (store-wide, so a
        # loop over many inodes yields too). Loop-atomic.
        self.hit_credit = t.hit_yield_every
        # Totals the inodes push deltas into (InodeCore._report). Loop-atomic.
        self.cached_bytes = 0
        self.dirty_bytes = 0
        self.mapped_bytes = 0
        # Speculative (readahead) bytes being filled, store-wide, against readahead_cap.
        # Loop-atomic.
        self.readahead_inflight = 0
        # Inodes with readahead in flight (each gets an equal share of the cap), and the
        # store-wide estimate of one readahead request's round trip in seconds (an EWMA; 0
        # until the first lands): the windows' bandwidth-delay sizing. Loop-atomic.
        self.readahead_streams = 0
        self.readahead_rtt = 0.0
        # Whether the store's task group accepts work (set by the store). Loop-atomic.
        self.running = False
        # The store's services, bound once. Immutable after __init__.
        #: Make room for n bytes by dropping clean chunks; True when they fit. Synchronous.
        self.reserve_nowait = reserve_nowait
        #: The same for readahead: it never drops readahead nobody has read yet.
        self.reserve_speculative = reserve_speculative
        #: Direct reclaim: write back and drop until n bytes fit; False when nothing can go.
        self.wait_for_room = wait_for_room
        #: Throttle a writer while dirty bytes exceed the hard limit.
        self.balance_dirty = balance_dirty
        self.wake_evictor = wake_evictor
        self.wake_flusher = wake_flusher
        #: Start a background task in the store's task group (ClosedError when not running).
        self.spawn = spawn
        #: Record the duration of one write-back request (a histogram when metrics are on).
        self.observe_writeback = observe_writeback
        #: Take the inode with this id out of the table if it holds nothing. Synchronous.
        self.retire_if_idle = retire_if_idle
        #: The inode with this id was released: take it out of the table. Synchronous.
        self.released = released

    def over_background_dirty(self) -> bool:
        """Whether dirty bytes passed ``dirty_background_bytes`` (the flusher should run)."""
        return self.dirty_bytes > self.tunables.dirty_background_bytes

    def over_dirty_limit(self) -> bool:
        """Whether dirty bytes passed ``dirty_limit_bytes`` (writers are throttled)."""
        return self.dirty_bytes > self.tunables.dirty_limit_bytes


class Reclaimable(Protocol):
    """What the store's reclaim, its flusher and its inode table may ask of an inode.

    Chunks are ``CHUNK_SIZE`` file ranges named by index (``chunks.py``); the policy holds one
    key per chunk with cached pages. Nothing here takes an inode lock except ``write_back``
    (the data lock, shared).
    """

    @property
    def key(self) -> object:
        """The key the inode is stored under."""
        ...

    @property
    def inode_id(self) -> int:
        """The id its policy keys carry (``chunk_key(inode_id, idx)``)."""
        ...

    @property
    def closed(self) -> bool:
        """Whether the inode was released or retired."""
        ...

    @property
    def dirtied_at(self) -> float | None:
        """``monotonic()`` when it last went from clean to dirty; None while clean."""
        ...

    def has_dirty_pages(self) -> bool:
        """Whether dirty pages wait for a write-back (runs in flight not counted)."""
        ...

    def chunk_cached(self, idx: int) -> bool:
        """Whether chunk ``idx`` holds any cached page. Complexity: O(1)."""
        ...

    def chunk_evictable(self, idx: int, *, clean_only: bool) -> bool:
        """Whether chunk ``idx`` has cached pages reclaim may drop.

        Unmapped, idle, and clean when ``clean_only``. Synchronous.
        """
        ...

    def chunk_holds_unread_readahead(self, idx: int) -> bool:
        """Whether chunk ``idx`` holds readahead no read has used yet. Synchronous."""
        ...

    def drop_chunk_nowait(self, idx: int, reason: str) -> int:
        """Drop the clean, unmapped, idle pages of chunk ``idx``; return the bytes freed.

        Synchronous: safe from any task, no lock needed.
        """
        ...

    async def evict_chunk(self, idx: int, reason: str) -> int:
        """Write back, then drop, chunk ``idx``'s evictable pages; return the bytes freed.

        Checkpoint: when the chunk is dirty. Cancellation: pages not dropped stay cached.

        Raises:
            WritebackError: the write-back failed (the data stays dirty and cached).
        """
        ...

    async def write_back(self, start: int, end: int, *, max_run: int | None = None) -> int:
        """Write the dirty bytes of ``[start, end)`` to the backing; return the bytes written.

        Checkpoint: when anything is dirty.
        Cancellation: ranges not fully written stay dirty; nothing is lost.

        Raises:
            WritebackError: a write failed; its range and every later one stay dirty.
        """
        ...
