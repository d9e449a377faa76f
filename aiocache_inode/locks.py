"""A reader-writer lock for anyio: many readers or one writer, writers preferred.

anyio (like trio) ships no reader-writer lock, and the inode needs one: write-backs hold the
read side of the data lock concurrently while they write pool pages out, and size changes
(truncate, allocate) and wholesale drops take the write side (see the lock order in inode.py).
``RWLock`` is built only on anyio primitives (``anyio.Event``, the ``anyio.lowlevel``
checkpoints, ``anyio.get_current_task``), so it runs unchanged on asyncio and on trio.

Where it sits in the lock order is stated once, at the top of ``inode.py``; this module only
provides the primitive.

Scheduling policy, mirroring Go's ``sync.RWMutex`` (and Linux's ``rwsem`` writer preference):

* Writer preference: once a writer waits, new readers wait behind it, so a steady stream of
  readers cannot starve writers.
* Reader batches: when a writer releases, every reader waiting at that moment is admitted at
  once, before the next writer, so a steady stream of writers cannot starve readers either.
* Writers are served first in, first out.

Rejected alternative: one ``anyio.Lock`` for writers plus a reader count. Readers would then wait
on the writers' lock, losing the batch admission above, and a cancelled waiter could not hand a
grant it had just received to the right successor.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, final

import anyio
from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled

from .errors import WouldBlock

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager
    from types import TracebackType

    from anyio import TaskInfo

__all__ = ["RWLock", "RWLockStatistics"]


@final
@dataclass(frozen=True, slots=True)
class RWLockStatistics:
    """A snapshot of an ``RWLock``'s state, as ``RWLock.statistics()`` returns it.

    Attributes:
        readers: Read holds outstanding (including readers granted but not yet resumed).
        writer: The task holding the write side, or None.
        waiting_readers: Tasks blocked in ``acquire_read()``.
        waiting_writers: Tasks blocked in ``acquire_write()``.
    """

    readers: int
    writer: TaskInfo | None
    waiting_readers: int
    waiting_writers: int


@final
class _WriteWaiter:
    """One task blocked in ``acquire_write()``: its wake-up event and its identity."""

    __slots__ = ("event", "task")

    def __init__(self, event: anyio.Event, task: TaskInfo) -> None:
        # Set exactly once, by the releaser that hands this waiter the write side.
        self.event = event
        # The waiter's task; becomes RWLock._writer when the grant is made. Immutable.
        self.task = task


@final
class _ReadLocked:
    """``async with lock.read_locked():`` -- hold the read side for the block.

    Hot path: one instance per lock, reused by every caller (a read hold is not tied to a task,
    so the manager carries no per-use state); no contextlib generator, no allocation per use.
    """

    __slots__ = ("_lock",)

    def __init__(self, lock: RWLock) -> None:
        self._lock = lock  # Immutable after __init__.

    async def __aenter__(self) -> None:
        """Acquire the read side.

        Checkpoint: always (see ``RWLock.acquire_read``).
        Cancellation: nothing held and nothing queued; the block does not run.
        """
        await self._lock.acquire_read()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        """Release the read side, whatever the block raised.

        Checkpoint: never; the release is synchronous, as trio's ``Lock.__aexit__``.
        Cancellation: cannot be cancelled; the read hold is always released.
        """
        self._lock.release_read()


@final
class _WriteLocked:
    """``async with lock.write_locked():`` -- hold the write side for the block.

    One instance per lock, reused: ownership is checked against the current task on release, so
    the manager itself carries no per-use state.
    """

    __slots__ = ("_lock",)

    def __init__(self, lock: RWLock) -> None:
        self._lock = lock  # Immutable after __init__.

    async def __aenter__(self) -> None:
        """Acquire the write side.

        Checkpoint: always (see ``RWLock.acquire_write``).
        Cancellation: nothing held and nothing queued; the block does not run.
        """
        await self._lock.acquire_write()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        """Release the write side, whatever the block raised.

        Checkpoint: never; the release is synchronous, as trio's ``Lock.__aexit__``.
        Cancellation: cannot be cancelled; the write hold is always released.
        """
        self._lock.release_write()


@final
class RWLock:
    """A reader-writer lock: many readers or one writer; writers preferred, writers FIFO.

    Reads are not tied to tasks: a read hold taken by one task may be released by another (a
    reader may hand its hold to a helper task). Writes are: only the task that acquired the write
    side may release it, and a task asking again for the write side while holding it gets
    ``RuntimeError`` instead of deadlocking. A task that holds a *read* hold and asks for the
    write side deadlocks (read holds are anonymous, so this cannot be detected); do not upgrade.

    Not thread-safe: use one lock from one event loop, like every anyio primitive.

    Example:
        ```python
        lock = RWLock()
        async with lock.read_locked():
            ...  # shared with other readers
        async with lock.write_locked():
            ...  # exclusive
        ```
    """

    # Every field below is read and written only in synchronous stretches between awaits, so the
    # event loop's run-to-completion of those stretches is what protects them ("loop atomicity"):
    # each update below happens with no await between its check and its write.
    #
    # Invariants (checked by _check_invariants()):
    #   self._readers >= 0 and self._waiting_readers >= 0
    #   self._readers == 0 or self._writer is None           (readers exclude the writer)
    #   self._waiting_readers == 0 or self._writer is not None or bool(self._write_waiters)
    #                                                         (readers only wait behind a writer)
    #   not (self._writer is None and self._readers == 0 and self._write_waiters)
    #                                                         (no idle lock with a queued writer)
    #   (self._read_event is None) == (self._waiting_readers == 0)
    #   self._read_event is None or not self._read_event.is_set()
    #   not any(w.event.is_set() for w in self._write_waiters)
    #   self._writer is None or all(w.task.id != self._writer.id for w in self._write_waiters)

    __slots__ = (
        "_read_cm",
        "_read_event",
        "_readers",
        "_waiting_readers",
        "_write_cm",
        "_write_waiters",
        "_writer",
    )

    def __init__(self) -> None:
        # Read holds outstanding, counting readers granted in a batch that have not resumed yet.
        # Protected by: loop atomicity.
        self._readers = 0
        # The task holding the write side, set by the acquirer or by the releaser handing over.
        # Protected by: loop atomicity.
        self._writer: TaskInfo | None = None
        # Readers blocked in acquire_read(); all of them form the next batch.
        # Protected by: loop atomicity.
        self._waiting_readers = 0
        # The event the current batch of waiting readers sleeps on; set (and replaced by None)
        # when the batch is admitted. Created lazily by the first reader that has to wait.
        # Protected by: loop atomicity.
        self._read_event: anyio.Event | None = None
        # Writers blocked in acquire_write(), oldest first.
        # Protected by: loop atomicity.
        self._write_waiters: deque[_WriteWaiter] = deque()
        # The two context managers, reused by every caller (hot path: no allocation per use).
        # Immutable after __init__.
        self._read_cm = _ReadLocked(self)
        self._write_cm = _WriteLocked(self)

    def __repr__(self) -> str:
        return (
            f"<RWLock readers={self._readers} writer={self._writer!r} "
            f"waiting_readers={self._waiting_readers} "
            f"waiting_writers={len(self._write_waiters)}>"
        )

    # ---------------------------------------------------------------------------------------
    # Read side
    # ---------------------------------------------------------------------------------------

    async def acquire_read(self) -> None:
        """Take a read hold, waiting while a writer holds the lock or writers are queued.

        Checkpoint: always (checks for cancellation first and, when the lock is free, yields
        once without checking again afterwards, as anyio's ``Lock``).
        Cancellation: leaves no trace; not holding, not queued. A reader whose batch was
        admitted in the same moment it was cancelled gives its hold back (waking the next
        writer if it was the last reader), so no hold leaks and no wake-up is lost.
        Complexity: O(1).

        Raises:
            RuntimeError: the current task holds the write side (waiting would deadlock).
        """
        await checkpoint_if_cancelled()
        if self._writer is None and not self._write_waiters:
            self._readers += 1
            try:
                await cancel_shielded_checkpoint()
            except BaseException:
                # Only a native (non-anyio) cancellation gets here; give the hold back.
                self._release_read_locked()
                raise
            return

        writer = self._writer
        if writer is not None and writer.id == anyio.get_current_task().id:
            raise RuntimeError("RWLock: the current task holds the write side; would deadlock")

        event = self._read_event
        if event is None:
            event = self._read_event = anyio.Event()
        self._waiting_readers += 1
        try:
            await event.wait()
        except BaseException:
            if event.is_set():
                # Admitted with the batch at the moment we were cancelled: the releaser already
                # counted us in _readers, so give the hold back like any reader would.
                self._release_read_locked()
            else:
                self._waiting_readers -= 1
                if not self._waiting_readers:
                    self._read_event = None
            raise

    def acquire_read_nowait(self) -> None:
        """Take a read hold if that needs no waiting.

        Hot path: two attribute tests and an increment; no task lookup.

        Raises:
            WouldBlock: a writer holds the lock or writers are queued (writer preference). The
                task holding the write side gets ``WouldBlock`` here too, not ``RuntimeError``:
                a non-blocking call cannot deadlock.
        """
        if self._writer is None and not self._write_waiters:
            self._readers += 1
            return
        raise WouldBlock("RWLock: a writer holds the lock or is waiting for it")

    def release_read(self) -> None:
        """Give back one read hold; any task may release a hold any task took.

        The last reader out hands the lock to the oldest waiting writer.

        Raises:
            RuntimeError: no read hold is outstanding.
        """
        if not self._readers:
            raise RuntimeError("RWLock: release_read() without a read hold")
        self._release_read_locked()

    def _release_read_locked(self) -> None:
        """Drop one read hold and wake the next writer if that was the last one.

        Requires: self._readers > 0.
        """
        self._readers -= 1
        if not self._readers and self._write_waiters:
            # Waiting readers (if any) queued behind these writers: writers go first.
            self._grant_write_locked()

    def read_locked(self) -> AbstractAsyncContextManager[None]:
        """Return an async context manager holding the read side for its block.

        The same object is returned every time (hot path: nothing is allocated per use).
        """
        return self._read_cm

    # ---------------------------------------------------------------------------------------
    # Write side
    # ---------------------------------------------------------------------------------------

    async def acquire_write(self) -> None:
        """Take the write side, waiting for readers and earlier writers to finish.

        Checkpoint: always (checks for cancellation first and, when the lock is free, yields
        once without checking again afterwards, as anyio's ``Lock``).
        Cancellation: leaves no trace; not holding, not queued. A writer that was handed the
        lock in the same moment it was cancelled passes it on (to the waiting readers, else to
        the next writer); if its leaving empties the writer queue, the readers queued behind it
        are admitted at once. No hold leaks and no wake-up is lost.
        Complexity: O(1); O(w) to leave the queue when cancelled, w writers waiting.

        Raises:
            RuntimeError: the current task already holds the write side (not reentrant).
        """
        await checkpoint_if_cancelled()
        task = anyio.get_current_task()
        writer = self._writer
        if writer is None and not self._readers and not self._write_waiters:
            self._writer = task
            try:
                await cancel_shielded_checkpoint()
            except BaseException:
                # Only a native (non-anyio) cancellation gets here; pass the lock on.
                self._release_write_locked()
                raise
            return
        if writer is not None and writer.id == task.id:
            raise RuntimeError("RWLock: the current task already holds the write side")

        waiter = _WriteWaiter(anyio.Event(), task)
        self._write_waiters.append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.event.is_set():
                # Handed the lock at the moment we were cancelled: we are the writer now
                # (_writer is our task), so release it as the owner would.
                self._release_write_locked()
            else:
                self._write_waiters.remove(waiter)
                if self._writer is None:
                    # We may have been the last writer holding back queued readers.
                    self._wake_locked(readers_first=False)
            raise

    def acquire_write_nowait(self) -> None:
        """Take the write side if the lock is entirely free (no holders, no waiters).

        Raises:
            WouldBlock: a reader or another writer holds the lock, or writers are queued.
            RuntimeError: the current task already holds the write side (not reentrant).
        """
        task = anyio.get_current_task()
        writer = self._writer
        if writer is None and not self._readers and not self._write_waiters:
            self._writer = task
            return
        if writer is not None and writer.id == task.id:
            raise RuntimeError("RWLock: the current task already holds the write side")
        raise WouldBlock("RWLock: the lock is held or writers are waiting for it")

    def release_write(self) -> None:
        """Give back the write side.

        All readers waiting at this moment are admitted together; with none waiting, the
        oldest waiting writer gets the lock.

        Raises:
            RuntimeError: the current task does not hold the write side.
        """
        writer = self._writer
        if writer is None or writer.id != anyio.get_current_task().id:
            raise RuntimeError("RWLock: the current task does not hold the write side")
        self._release_write_locked()

    def _release_write_locked(self) -> None:
        """Drop the write side and hand the lock on: reader batch first, else the next writer.

        Requires: self._writer is not None (ownership already checked by the caller).
        """
        self._writer = None
        self._wake_locked(readers_first=True)

    def write_locked(self) -> AbstractAsyncContextManager[None]:
        """Return an async context manager holding the write side for its block.

        The same object is returned every time (ownership is checked against the current task
        on release, so it carries no per-use state).
        """
        return self._write_cm

    # ---------------------------------------------------------------------------------------
    # Hand-over
    # ---------------------------------------------------------------------------------------

    def _wake_locked(self, *, readers_first: bool) -> None:
        """Grant the lock to whoever may have it now that no writer holds it.

        With ``readers_first`` (a writer just released), the whole waiting reader batch is
        admitted even if writers wait; otherwise readers are admitted only when no writer is
        queued. Failing that, the oldest writer gets the lock if no reader holds it.

        Requires: self._writer is None.
        """
        if self._waiting_readers and (readers_first or not self._write_waiters):
            event = self._read_event
            assert event is not None
            self._readers += self._waiting_readers
            self._waiting_readers = 0
            self._read_event = None
            event.set()
        elif not self._readers and self._write_waiters:
            self._grant_write_locked()

    def _grant_write_locked(self) -> None:
        """Make the oldest waiting writer the owner and wake it.

        The grant is made here, by the releaser, not by the woken task: nobody can slip in
        between the release and the wake-up. A woken writer that turns out to be cancelled
        passes the lock on itself (see ``acquire_write``).

        Requires: self._writer is None, self._readers == 0, self._write_waiters non-empty.
        """
        waiter = self._write_waiters.popleft()
        self._writer = waiter.task
        waiter.event.set()

    # ---------------------------------------------------------------------------------------
    # Introspection
    # ---------------------------------------------------------------------------------------

    @property
    def writer_active(self) -> bool:
        """True while a writer holds the lock (including one granted but not yet resumed).

        One attribute load; for the inode's idle test and its bug checks (the hit path takes no
        lock and tests none).
        """
        return self._writer is not None

    @property
    def readers(self) -> int:
        """The number of read holds outstanding."""
        return self._readers

    def owned_by_current_task(self) -> bool:
        """Return True if the current task holds the write side."""
        writer = self._writer
        return writer is not None and writer.id == anyio.get_current_task().id

    def statistics(self) -> RWLockStatistics:
        """Return a snapshot of holders and waiters."""
        return RWLockStatistics(
            readers=self._readers,
            writer=self._writer,
            waiting_readers=self._waiting_readers,
            waiting_writers=len(self._write_waiters),
        )

    def _check_invariants(self) -> None:
        """Assert the invariants written beside the fields; for the stateful tests."""
        readers = self._readers
        writer = self._writer
        waiting_readers = self._waiting_readers
        read_event = self._read_event
        write_waiters = self._write_waiters
        assert readers >= 0, self
        assert waiting_readers >= 0, self
        assert readers == 0 or writer is None, self
        assert waiting_readers == 0 or writer is not None or bool(write_waiters), self
        assert not (writer is None and readers == 0 and write_waiters), self
        assert (read_event is None) == (waiting_readers == 0), self
        assert read_event is None or not read_event.is_set(), self
        assert not any(w.event.is_set() for w in write_waiters), self
        assert writer is None or all(w.task.id != writer.id for w in write_waiters), self
