"""The store: one byte-budgeted pool for many caching inodes, with its background tasks.

``async with CacheStore(memory_limit=...) as store`` owns the pool, the evictor and the flusher
(one anyio task group; no detached task), the inode table and the metrics. Closed inodes keep
their pages until eviction takes them or ``forget`` releases them.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import logging
from typing import TYPE_CHECKING, Any, final

import anyio
import anyio.abc

from .attrs import now_ns
from .backing.metered import metered
from .chunks import KEY_SHIFT, split_key
from .errors import CacheError, ClosedError, NotFoundError, WritebackError
from .eviction import BudgetPressure, Evictor, PressureSource
from .inode import CachingInode
from .policies import S3FIFO_MAX_FREQ, make_policy
from .pool import MemoryPool
from .ranges import MAX_OFFSET
from .services import StoreServices
from .stats import Counters, StoreStatistics
from .tunables import TUNABLE_NAMES, Tunables
from .writeback import Flusher

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Hashable, Iterator
    from types import TracebackType

    from prometheus_client import CollectorRegistry

    from .attrs import Attrs
    from .backing.base import BackingFile
    from .metrics import StoreMetrics
    from .ranges import Range

__all__ = ["CacheStore", "Tunables"]

log = logging.getLogger(__name__)


#: Keys one pop_victim call may examine (the policies' default max_scan).
_SCAN = 64


@final
class _OpenInode:
    """``async with store.open(key, backing) as inode``.

    Holds the store's two table operations, bound: ``enter`` finds or makes the inode and
    counts the holder, ``leave`` uncounts it (and retires the inode if it is idle).
    """

    __slots__ = ("_backing", "_enter", "_inode", "_key", "_leave")

    def __init__(
        self,
        enter: Callable[[Hashable, Any], Awaitable[CachingInode]],
        leave: Callable[[CachingInode], None],
        key: Hashable,
        backing: Any,
    ) -> None:
        # Immutable after __init__, but for _inode (the inode while the block runs).
        self._enter = enter
        self._leave = leave
        self._key = key
        self._backing = backing
        self._inode: CachingInode | None = None

    async def __aenter__(self) -> CachingInode:
        inode = await self._enter(self._key, self._backing)
        self._inode = inode
        return inode

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        inode = self._inode
        if inode is not None:
            self._inode = None
            self._leave(inode)


@final
class CacheStore:
    """One byte-budgeted page cache for many inodes, with eviction, write-back and metrics.

    Args:
        memory_limit: the budget in bytes the evictor keeps usage under. Usage may pass it only
            by what operations in flight hold (pages being filled, pinned views).
        registry: a prometheus_client CollectorRegistry (default: the global one); pass
            ``False`` for no metrics.
        write_back: cache writes to uncached ranges (flushed later) instead of writing through.
        pressure: extra pressure sources (``CgroupPressure``, ``PsiPressure``) besides the budget.
        clock: nanosecond wall clock for timestamps (tests inject one).
        monotonic: seconds clock for dirty-data ages (the flusher's expiry); default the event
            loop's clock (``anyio.current_time``), which a virtual clock such as trio's
            ``MockClock`` controls. Tests may inject their own.
        background: start the evictor and flusher tasks (default). Deterministic tests pass
            False and drive ``run_eviction_pass`` / ``run_flush_pass`` themselves; writers over
            the dirty limit then write back inline instead of waiting for the flusher.
        **tunables: any field of :class:`Tunables`.
    """

    def __init__(
        self,
        memory_limit: int,
        *,
        registry: CollectorRegistry | bool | None = None,
        write_back: bool = False,
        pressure: list[PressureSource] | None = None,
        clock: Callable[[], int] = now_ns,
        monotonic: Callable[[], float] = anyio.current_time,
        background: bool = True,
        **tunables: Any,
    ) -> None:
        if not isinstance(memory_limit, int) or memory_limit <= 0:
            raise ValueError(f"memory_limit must be a positive int, not {memory_limit!r}")
        unknown = set(tunables) - TUNABLE_NAMES
        if unknown:
            raise TypeError(f"unknown tunables: {sorted(unknown)}; known: {sorted(TUNABLE_NAMES)}")
        self._memory_limit = memory_limit
        self._tunables = Tunables(**tunables).resolved(memory_limit)
        t = self._tunables
        # Immutable after __init__.
        self._write_back = bool(write_back)
        self._background = bool(background)
        self._pool = MemoryPool(arena_size=t.arena_size, warm_bytes=t.pool_warm_bytes)
        self._policy = make_policy(t.policy)
        self._budget = BudgetPressure(t.high_watermark, t.low_watermark)
        self._pressure: list[PressureSource] = list(pressure or [])
        self._counters = Counters()
        self._evictor = Evictor(t.pressure_poll_interval)
        # What every inode of this store gets (services.py): the pool, policy, counters,
        # totals, and this store's budget, throttling, task and metrics hooks, pre-bound.
        self._svc = StoreServices(
            pool=self._pool,
            policy=self._policy,
            counters=self._counters,
            tunables=t,
            memory_limit=memory_limit,
            write_back=self._write_back,
            clock=clock,
            monotonic=monotonic,
            reserve_nowait=self._reserve_nowait,
            reserve_speculative=self._reserve_speculative,
            wait_for_room=self._wait_for_room,
            balance_dirty=self._balance_dirty,
            wake_evictor=self._evictor.wake,
            wake_flusher=self._wake_flusher,
            spawn=self._spawn,
            observe_writeback=self._observe_writeback,
            retire_if_idle=self._retire_id,
            released=self._released,
        )
        # Policy keys reclaim has popped and is still working on: the services' set, shared
        # with the inodes (see StoreServices.reclaiming). Loop-atomic.
        self._reclaiming = self._svc.reclaiming
        self._flusher = Flusher(self._svc, self._inodes_now, background=self._background)
        # The inode table. Resident inodes, by key and by id (policy keys carry the id).
        # Loop-atomic.
        self._inodes: dict[Hashable, CachingInode] = {}
        self._by_id: dict[int, CachingInode] = {}
        self._opening: dict[Hashable, anyio.Event] = {}
        # Open handles (store.open) per inode id: a held inode is never retired. Loop-atomic.
        self._users: dict[int, int] = {}
        # Ids of inodes whose backing the store made (from a factory): it closes them.
        self._owned_backings: set[int] = set()
        self._ids = itertools.count(1)
        # The background task group; None outside ``async with``.
        self._tg: anyio.abc.TaskGroup | None = None
        self._closed = False
        self._metrics: StoreMetrics | None = None
        if registry is not False:
            from .metrics import StoreMetrics

            self._metrics = StoreMetrics(
                self.statistics, self._tunables, None if registry is True else registry
            )

    # ------------------------------------------------------------------------------------------
    # Lifecycle
    # ------------------------------------------------------------------------------------------

    async def __aenter__(self) -> CacheStore:
        """Start the task group and, with ``background``, the evictor and the flusher.

        Checkpoint: only what entering an anyio task group does. Cancellation: not running.

        Raises:
            CacheError: the store was entered before.
        """
        if self._closed or self._svc.running:
            raise CacheError("a CacheStore can be entered once")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self._svc.running = True
        if self._background:
            tg.start_soon(
                self._evictor.run,
                self._pressure_target,
                self._evict_to,
                self._counters,
                name="aiocache_inode evictor",
            )
            tg.start_soon(self._flusher.run, name="aiocache_inode flusher")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        """Write everything back, stop the tasks, release the pool.

        Checkpoint: always. Cancellation: the final write-back runs shielded.

        Raises:
            WritebackError: some inodes' data could not be written back (listed); their data is
                lost with the store, so this is loud.
        """
        failures: list[str] = []
        ranges: list[Range] = []
        with anyio.CancelScope(shield=True):
            for key, inode in list(self._inodes.items()):
                if inode.closed:
                    continue
                try:
                    await inode.write_out()
                except CacheError as e:
                    failures.append(f"{key!r}: {e}")
                    ranges.extend(getattr(e, "ranges", ()))
            for inode in list(self._inodes.values()):
                if inode.inode_id in self._owned_backings and not inode.closed:
                    aclose = getattr(inode.backing, "aclose", None)
                    if aclose is not None:
                        await self._close_backing(aclose, inode.key)
        self._svc.running = False
        tg = self._tg
        assert tg is not None
        tg.cancel_scope.cancel()
        # The task group's own scope must be the innermost one when it exits.
        await tg.__aexit__(None, None, None)
        self._tg = None
        self._closed = True
        for inode in list(self._inodes.values()):
            inode.abandon()
        self._inodes.clear()
        self._by_id.clear()
        if self._metrics is not None:
            self._metrics.unregister()
        self._pool.close()
        if failures and exc is None:
            raise WritebackError("write-back failed on close: " + "; ".join(failures), ranges)
        if failures:
            log.error("write-back failed on close: %s", "; ".join(failures))
        return None

    def _spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        if self._tg is None:
            raise ClosedError("the store is not running")
        self._tg.start_soon(fn, *args)

    # ------------------------------------------------------------------------------------------
    # Inode table
    # ------------------------------------------------------------------------------------------

    def open(
        self, key: Hashable, backing: BackingFile | Callable[[], Awaitable[BackingFile]]
    ) -> _OpenInode:
        """``async with store.open(key, backing) as inode``: the inode for ``key``.

        ``backing`` (a BackingFile, or a zero-argument async callable returning one) is used only
        when ``key`` has no resident inode. Leaving the block keeps the pages cached.

        Raises:
            TypeError: ``key`` is not hashable, or ``backing`` is neither form.
            ClosedError: the store is not running.
            BackingError: the backing could not be opened or its attributes read.
        """
        hash(key)
        if not (callable(backing) or hasattr(backing, "read_into")):
            raise TypeError("backing must be a BackingFile or an async callable returning one")
        return _OpenInode(self._enter, self._unhold, key, backing)

    async def _get_or_create(self, key: Hashable, backing: Any) -> CachingInode:
        from .errors import BackingError

        while True:
            if not self._svc.running:
                raise ClosedError("the store is not running")
            inode = self._inodes.get(key)
            if inode is not None and not inode.closed:
                await anyio.lowlevel.checkpoint()
                if self._inodes.get(key) is inode:
                    return inode
                # Retired while we yielded (eviction took its last pages) and so out of the
                # table: the caller takes its hold without a checkpoint after we return, so
                # only an inode still resident now may be handed out. Look again.
                continue
            pending = self._opening.get(key)
            if pending is None:
                break
            await pending.wait()
        done = self._opening[key] = anyio.Event()
        try:
            b = backing
            if not hasattr(b, "read_into"):
                # A failing factory is a backing failure like a failing get_attributes (API.md:
                # "a backing failure is a BackingError with the original exception as __cause__").
                try:
                    b = backing()
                    if inspect.isawaitable(b):
                        b = await b
                except CacheError:
                    raise
                except Exception as exc:
                    raise BackingError(f"opening the backing of {key!r} failed: {exc}") from exc
            # The meter at the edge: the inode calls it as its backing, and every request is
            # counted and timed into the store's counters on the way (backing/metered.py).
            mb = metered(b, self._counters, self._observe_backing)
            try:
                attrs: Attrs = await mb.get_attributes()
            except Exception as exc:
                raise BackingError(f"reading attributes of {key!r} failed: {exc}") from exc
            inode_id = next(self._ids)
            inode = CachingInode(self._svc, key, inode_id, mb, attrs)
            self._inodes[key] = inode
            self._by_id[inode_id] = inode
            if b is not backing:
                self._owned_backings.add(inode_id)
            return inode
        finally:
            del self._opening[key]
            done.set()

    def get(self, key: Hashable) -> CachingInode:
        """The resident inode for ``key``.

        Raises:
            NotFoundError: no resident inode.
        """
        inode = self._inodes.get(key)
        if inode is None:
            raise NotFoundError(key)
        return inode

    def __contains__(self, key: object) -> bool:
        return key in self._inodes

    def keys(self) -> Iterator[Hashable]:
        """Keys of the resident inodes."""
        return iter(list(self._inodes))

    async def forget(self, key: Hashable) -> None:
        """Write back ``key``'s data, then release its inode and pages.

        Checkpoint: always. Cancellation: the inode stays resident with its data.

        Raises:
            NotFoundError: no resident inode for ``key``.
            WritebackError: data could not be written back (the inode stays, data kept).
        """
        inode = self.get(key)
        await inode.write_out()
        await inode.release()

    def _released(self, inode_id: int) -> None:
        """Take a closed inode out of the table; close its backing if the store made it."""
        inode = self._by_id.pop(inode_id, None)
        if inode is None:
            return
        if self._inodes.get(inode.key) is inode:
            del self._inodes[inode.key]
        if inode_id in self._owned_backings:
            self._owned_backings.discard(inode_id)
            aclose = getattr(inode.backing, "aclose", None)
            if aclose is not None and self._tg is not None:
                self._tg.start_soon(self._close_backing, aclose, inode.key)

    async def _enter(self, key: Hashable, backing: Any) -> CachingInode:
        """An open handle takes the inode of ``key``: it stays resident until the handle leaves.

        Checkpoint: always. Cancellation: nothing is held.
        """
        inode = await self._get_or_create(key, backing)
        self._users[inode.inode_id] = self._users.get(inode.inode_id, 0) + 1
        return inode

    def _unhold(self, inode: CachingInode) -> None:
        """An open handle left ``inode``: retire it if nobody else holds it and it is idle."""
        n = self._users.get(inode.inode_id, 0) - 1
        if n > 0:
            self._users[inode.inode_id] = n
        else:
            self._users.pop(inode.inode_id, None)
        self._retire_if_idle(inode)

    def _inodes_now(self) -> list[CachingInode]:
        """The resident inodes (a snapshot: the flusher awaits while it walks them)."""
        return list(self._inodes.values())

    @staticmethod
    async def _close_backing(aclose: Callable[[], Awaitable[None]], key: Hashable) -> None:
        """Close a backing the store made. Checkpoint: yes. Cancellation: shielded."""
        with anyio.CancelScope(shield=True):
            try:
                await aclose()
            except Exception as exc:  # a close failure loses nothing: the data is written
                log.warning("closing the backing of %r failed: %s", key, exc)

    def _retire_if_idle(self, inode: CachingInode) -> None:
        """Drop ``inode`` from the table if nobody uses it and it holds nothing.

        Idle means: no ``open`` holder, no cached, dirty or pinned pages, no I/O in flight, no
        mapping, no unwritten attributes, no lock held. The object is closed (a caller that
        kept it gets ``ClosedError``), so the next ``open`` of the key makes a fresh inode.
        Synchronous. Complexity: O(1).
        """
        if self._users.get(inode.inode_id) or not inode.try_retire():
            return
        self._released(inode.inode_id)

    def _retire_id(self, inode_id: int) -> None:
        """:meth:`_retire_if_idle` by id (the inodes' service). Synchronous."""
        inode = self._by_id.get(inode_id)
        if inode is not None:
            self._retire_if_idle(inode)

    # ------------------------------------------------------------------------------------------
    # Budget
    # ------------------------------------------------------------------------------------------

    @property
    def memory_limit(self) -> int:
        """The byte budget."""
        return self._memory_limit

    @property
    def usage(self) -> int:
        """Bytes of pool pages held: cached, being filled, pinned (not free arena space)."""
        return self._pool.used_bytes

    @property
    def dirty_bytes(self) -> int:
        """Bytes of dirty data over all inodes."""
        return self._svc.dirty_bytes

    @property
    def cached_bytes(self) -> int:
        """Bytes of cached file data over all inodes."""
        return self._svc.cached_bytes

    @property
    def pinned_bytes(self) -> int:
        """Bytes of file ranges mapped by views (never evicted)."""
        return self._svc.mapped_bytes

    @property
    def tunables(self) -> Tunables:
        """The resolved tunables."""
        return self._tunables

    @property
    def write_back(self) -> bool:
        """Whether writes to uncached ranges are cached and flushed later."""
        return self._write_back

    def _victim_inode(self, key: int) -> tuple[CachingInode | None, int]:
        inode_id, idx = split_key(key)
        return self._by_id.get(inode_id), idx

    def _reserve_speculative(self, nbytes: int) -> bool:
        """:meth:`_reserve_nowait` for readahead: unread readahead is not a victim.

        One reader's next data must not be evicted to make room for another's speculation;
        when only such data is left, readahead gets no room (and its window shrinks).
        """
        return self._reserve_nowait(nbytes, keep_readahead=True)

    def _reserve_nowait(self, nbytes: int, *, keep_readahead: bool = False) -> bool:
        """Make room for ``nbytes`` by dropping clean, unpinned, idle chunks in policy order.

        Synchronous. True when usage + nbytes fits the budget afterwards. ``keep_readahead``
        spares chunks holding readahead no read has used yet.
        """
        limit = self._memory_limit
        pool = self._pool
        if pool.used_bytes + nbytes <= limit:
            if pool.used_bytes + nbytes > self._budget.high * limit:
                self._wake_evictor()
            return True
        if self._take_back_appends(limit - nbytes):
            self._wake_evictor()
            return True
        while pool.used_bytes + nbytes > limit:
            # One pop_victim's worth of keys per victim: this runs synchronously on the fill
            # path, so it bounds its work; when it finds nothing, the caller's direct reclaim
            # (_wait_for_room) scans on, writing dirty chunks back.
            key = self._pop_victim(clean_only=True, max_keys=_SCAN, keep_readahead=keep_readahead)
            if key is None:
                break
            inode, idx = self._victim_inode(key)
            if inode is None:
                continue
            inode.drop_chunk_nowait(idx, "pressure")
            self._return_victim(key)
        self._wake_evictor()
        return pool.used_bytes + nbytes <= limit

    async def _wait_for_room(self, nbytes: int) -> bool:
        """Direct reclaim: write back and drop dirty chunks until ``nbytes`` fits.

        Returns False when nothing more can be evicted (everything pinned, in flight, or dirty
        with a failing backing): the caller then bypasses the cache or goes over budget.
        Checkpoint: always. Cancellation: nothing to undo.
        """
        await anyio.lowlevel.checkpoint()
        if self._take_back_appends(self._memory_limit - nbytes):
            return True
        # A failing write-back only means less room: the caller then bypasses the cache.
        with contextlib.suppress(CacheError):
            await self._evict_to(self._memory_limit - nbytes, "pressure", max_chunks=64)
        return self._pool.used_bytes + nbytes <= self._memory_limit

    def _take_back_appends(self, target: int) -> bool:
        """Take append reservations back, oldest first, until usage <= ``target``.

        A reservation is budget lent to an appender, not spent: it is given back before any
        cached page is evicted for room, and before anyone goes over budget (a pinned fill
        that finds no room). Returns whether usage is at most ``target`` now.
        Synchronous. Complexity: O(r); r reservations taken back.
        """
        pool = self._pool
        appends = self._svc.appends
        while appends and pool.used_bytes > target:
            # The give-back removes its own entry.
            next(iter(appends.values()))()
        return pool.used_bytes <= target

    def _clean_victim(self, key: int) -> bool:
        """Whether ``key``'s chunk can be dropped now: clean, unmapped and idle."""
        inode, idx = self._victim_inode(key)
        return inode is not None and inode.chunk_evictable(idx, clean_only=True)

    def _clean_victim_not_readahead(self, key: int) -> bool:
        """:meth:`_clean_victim`, sparing chunks with readahead no read has used yet."""
        inode, idx = self._victim_inode(key)
        return (
            inode is not None
            and inode.chunk_evictable(idx, clean_only=True)
            and not inode.chunk_holds_unread_readahead(idx)
        )

    def _any_victim(self, key: int) -> bool:
        """Whether ``key``'s chunk can be evicted, writing its dirty data back first."""
        inode, idx = self._victim_inode(key)
        return inode is not None and inode.chunk_evictable(idx, clean_only=False)

    def _pop_victim(
        self, *, clean_only: bool, max_keys: int | None = None, keep_readahead: bool = False
    ) -> int | None:
        """The next victim in policy order, or None when no key can be evicted.

        The one victim scan of the store: clean reclaim (``clean_only``, :meth:`_reserve_nowait`)
        and eviction (:meth:`_evict_to`) both take their victims here; ``keep_readahead``
        (readahead's own reservations) also passes over chunks holding unread readahead.
        Scans past unevictable keys, ``_SCAN`` keys per ``pop_victim`` call, until
        ``max_keys`` were examined, by default until every key was: a None from one
        ``pop_victim`` only means its
        ``max_scan`` keys were refused (e.g. more than 64 pinned chunks at the head of the
        queue), and eviction once stopped there.
        Synchronous. Complexity: O(s); s <= max_keys, by default
        s <= (S3FIFO_MAX_FREQ + 2) * n + 64 keys examined, since a key may be passed over once
        per counter bit and once more on promotion.
        """
        policy = self._policy
        if keep_readahead:
            can_evict = self._clean_victim_not_readahead
        else:
            can_evict = self._clean_victim if clean_only else self._any_victim
        budget = (S3FIFO_MAX_FREQ + 2) * len(policy) + _SCAN if max_keys is None else max_keys
        while budget > 0 and len(policy):
            key: int | None = policy.pop_victim(can_evict, _SCAN)
            if key is not None:
                return key
            budget -= _SCAN
        return None

    async def _evict_to(self, target: int, reason: str, *, max_chunks: int | None = None) -> int:
        """Evict in policy order (writing back dirty chunks) until usage <= target.

        Checkpoint: every 8 chunks, and when a dirty chunk is written back.
        Cancellation: stops between chunks; unfinished chunks stay cached (and dirty).
        """
        if self._take_back_appends(target):
            return self._pool.used_bytes
        count = 0
        failed: list[int] = []
        try:
            while self._pool.used_bytes > target:
                if max_chunks is not None and count >= max_chunks:
                    break
                key = self._pop_victim(clean_only=False)
                if key is None:
                    break
                count += 1
                if not count % 8:
                    # Dropping clean chunks never awaits: yield now and then, so a long
                    # eviction pass does not stall readers for milliseconds.
                    await anyio.lowlevel.checkpoint()
                inode, idx = self._victim_inode(key)
                if inode is None:
                    continue
                self._reclaiming.add(key)
                done = False
                try:
                    await inode.evict_chunk(idx, reason)
                    done = True
                except WritebackError as exc:
                    log.warning("eviction write-back of %r failed: %s", inode.key, exc)
                    # Back into the policy only when this pass ends (finally): re-inserted now,
                    # it would be the next victim again and a failing backing would spin here.
                    failed.append(key)
                    continue
                finally:
                    if key not in failed:
                        # Done, cancelled or failed otherwise: the key goes back now, if its
                        # chunk still has pages (a cancelled write-back left them dirty).
                        self._return_victim(key)
                if done:
                    self._retire_if_idle(inode)
        finally:
            for key in failed:
                self._return_victim(key)
        return self._pool.used_bytes

    def _return_victim(self, key: int) -> None:
        """Reclaim is done with ``key``: back into the policy while its chunk has pages.

        Synchronous. Complexity: O(1).
        """
        self._reclaiming.discard(key)
        inode, idx = self._victim_inode(key)
        if inode is not None and inode.chunk_cached(idx):
            self._policy.insert(key)

    async def shrink(self, target_bytes: int) -> int:
        """Evict (writing back first) until usage is at most ``target_bytes``.

        Stops early when nothing evictable is left; returns the usage after.

        Checkpoint: always. Cancellation: stops between chunks; nothing is lost.

        Raises:
            ValueError: a negative target.
            WritebackError: some dirty data could not be written back (it stays cached);
                raised after every other evictable chunk was tried.
        """
        if not isinstance(target_bytes, int) or target_bytes < 0:
            raise ValueError(f"invalid shrink target {target_bytes!r}")
        await anyio.lowlevel.checkpoint()
        errors: list[str] = []
        ranges: list[Range] = []
        dirty_before = self._svc.dirty_bytes
        await self._evict_to(target_bytes, "shrink")
        if self._pool.used_bytes > target_bytes:
            # Dirty data, or a write-back in flight (its pages are out of the dirty set until
            # it ends, and back in if it fails): write back and wait, to name what failed.
            # Name what could not be written back.
            for inode in list(self._inodes.values()):
                if inode.closed:
                    continue
                try:
                    await inode.write_back(0, MAX_OFFSET)
                except WritebackError as exc:
                    errors.append(f"{inode.key!r}: {exc}")
                    ranges.extend(exc.ranges)
            await self._evict_to(target_bytes, "shrink")
        # A shrink asks for memory back: the free pages kept warm for reuse go too.
        self._pool.drop_warm()
        if errors:
            left = self._svc.dirty_bytes
            raise WritebackError(
                f"shrink could not write back {left} of {dirty_before} dirty bytes: "
                + "; ".join(errors),
                ranges,
            )
        return self._pool.used_bytes

    async def run_eviction_pass(self) -> int:
        """One pass of the evictor, as the background task runs it; returns the usage after.

        For stores made with ``background=False`` (deterministic tests drive eviction as a
        step of their own); harmless on others.

        Checkpoint: always. Cancellation: stops between chunks; nothing is lost.
        """
        await anyio.lowlevel.checkpoint()
        target = self._pressure_target()
        if target is not None:
            self._counters.eviction_runs += 1
            with contextlib.suppress(CacheError):
                await self._evict_to(target, "pressure")
        return self._pool.used_bytes

    async def run_flush_pass(self, *, everything: bool = False) -> int:
        """One pass of the flusher: expired dirty data (or all of it); returns bytes written.

        Checkpoint: always. Cancellation: stops between runs; unwritten data stays dirty.
        """
        await anyio.lowlevel.checkpoint()
        svc = self._svc
        everything = everything or svc.over_background_dirty() or svc.over_dirty_limit()
        return await self._flusher.flush_pass(everything=everything)

    def _pressure_target(self) -> int | None:
        """The usage eviction should bring the pool down to now, or None. Synchronous."""
        usage = self._pool.used_bytes
        limit = self._memory_limit
        host = [t for t in (src.target(usage, limit) for src in self._pressure) if t is not None]
        if host:
            # The host is short of memory, not just the budget: free pages kept warm for
            # reuse go back now, before any cached page does.
            self._pool.drop_warm()
        own = self._budget.target(usage, limit)
        targets = host if own is None else [own, *host]
        return min(targets) if targets else None

    def _wake_evictor(self) -> None:
        self._evictor.wake()

    # ------------------------------------------------------------------------------------------
    # Dirty data
    # ------------------------------------------------------------------------------------------

    # The flusher is made after the services (it reads the totals they hold), so the services
    # get these two store methods rather than its bound methods.

    def _wake_flusher(self) -> None:
        self._flusher.wake()

    async def _balance_dirty(self) -> None:
        """Throttle a writer over the dirty limit (``Flusher.balance_dirty``).

        Checkpoint: only when throttled. Cancellation: nothing to undo.
        """
        await self._flusher.balance_dirty()

    async def sync(self) -> None:
        """``write_out`` every resident inode.

        Checkpoint: when any inode is resident.
        Cancellation: stops between inodes (and, inside one, between runs); what was not written
        stays dirty.

        Raises:
            WritebackError: some data could not be written back (named; it stays dirty).
        """
        failures: list[str] = []
        ranges: list[Range] = []
        for key, inode in list(self._inodes.items()):
            if inode.closed:
                continue
            try:
                await inode.write_out()
            except CacheError as exc:
                failures.append(f"{key!r}: {exc}")
                ranges.extend(getattr(exc, "ranges", ()))
        if failures:
            raise WritebackError("write-back failed: " + "; ".join(failures), ranges)

    # ------------------------------------------------------------------------------------------
    # Observability
    # ------------------------------------------------------------------------------------------

    def _observe_writeback(self, seconds: float) -> None:
        if self._metrics is not None:
            self._metrics.writeback_seconds.observe(seconds)

    def _observe_backing(self, op: str, seconds: float) -> None:
        if self._metrics is not None:
            self._metrics.backing_seconds.labels(op).observe(seconds)

    def statistics(self) -> StoreStatistics:
        """A snapshot of usage by kind and every counter."""
        c = self._counters
        return StoreStatistics(
            memory_limit=self._memory_limit,
            usage=self._pool.used_bytes,
            cached_bytes=self._svc.cached_bytes,
            dirty_bytes=self._svc.dirty_bytes,
            pinned_bytes=self._svc.mapped_bytes,
            arena_bytes=self._pool.arena_bytes,
            inodes=len(self._inodes),
            cache_hits=c.cache_hits,
            cache_misses=c.cache_misses,
            read_bytes_cache=c.read_bytes_cache,
            read_bytes_backing=c.read_bytes_backing,
            written_bytes=c.written_bytes,
            writethrough_bytes=c.writethrough_bytes,
            writeback_bytes=c.writeback_bytes,
            writeback_errors=c.writeback_errors,
            writeback_runs=c.writeback_runs,
            eviction_runs=c.eviction_runs,
            readahead_bytes=c.readahead_bytes,
            readahead_used_bytes=c.readahead_used_bytes,
            readahead_wasted_bytes=c.readahead_wasted_bytes,
            throttled_seconds=c.throttled_seconds,
            evicted_bytes=dict(c.evicted_bytes),
            backing_requests=dict(c.backing_requests),
            backing_errors=dict(c.backing_errors),
            backing_seconds=dict(c.backing_seconds),
            backing_bytes=dict(c.backing_bytes),
        )

    def _check_invariants(self) -> None:
        """Raise AssertionError unless the store's totals match its inodes and pool."""
        self._pool.check_invariants()
        self._policy.check_invariants()
        inodes = list(self._inodes.values())
        for inode in inodes:
            inode._check_invariants()  # noqa: SLF001 (the check of what it owns)
        svc = self._svc
        assert svc.cached_bytes == sum(i.cached_bytes for i in inodes)
        assert svc.dirty_bytes == sum(i.dirty_bytes for i in inodes)
        ids = {i.inode_id for i in inodes}
        assert not set(self._policy.keys()) & self._reclaiming, "a reclaimed key is in the policy"
        for key in [*self._policy.keys(), *self._reclaiming]:
            assert key >> KEY_SHIFT in ids, f"policy key {key:#x} of no resident inode"
        held = sum(i.held_bytes for i in inodes)
        assert self._pool.used_bytes == held, f"pool {self._pool.used_bytes} != held {held}"
