"""Backings for tests: cancelling at a chosen call, answering late, changing behind the cache.

- :class:`CancellingBacking` cancels a scope when the n-th backing call *of one task* starts:
  deterministic cancellation at a chosen point of an operation, unshifted by background calls.
- :class:`OutOfBandBacking` lets a test replace the file's contents as another writer would,
  and reports it through the ``Revalidating`` hook, over any backing.
- :class:`DelayedCopyBacking` takes a request's bytes when the request starts and answers after a
  delay, as a socket or :class:`~aiocache_inode.backing.LocalFile`'s worker thread does (and
  unlike :class:`~aiocache_inode.backing.MemoryBacking`, which does its work at the end of its
  delay). Races between a request in flight and the cache changing the same pages show up here.

The first two subclass :class:`~aiocache_inode.backing.DelegatingBacking` and override only the
calls they change, as a test's own wrapper should.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, final

import anyio
import anyio.lowlevel

from ..attrs import AttrMask, Attrs
from ..backing.base import BackingFile, Revalidating
from ..backing.delegating import DelegatingBacking
from ..backing.memory import MemoryBacking

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from anyio import CancelScope

__all__ = ["CancellingBacking", "DelayedCopyBacking", "OutOfBandBacking"]


@final
class CancellingBacking(DelegatingBacking[BackingFile]):
    """Delegates to ``inner``; once armed, cancels a scope when the n-th call of a task starts.

    Deterministic cancellation at a chosen point of an operation: arm it, from the task that
    runs the operation, with the scope the operation runs in and a call count; the n-th backing
    call *made by that task* cancels the scope and checkpoints (so the cancellation lands there,
    unless the caller shields the call). Calls from other tasks (readahead fills, the evictor, a
    concurrent operation) are passed on without being counted, so they cannot shift the point.
    """

    __slots__ = ("_calls", "_fire_at", "_scope", "_task", "fired")

    def __init__(self, inner: BackingFile) -> None:
        super().__init__(inner)
        self._scope: CancelScope | None = None
        # The id of the armed task (anyio.get_current_task().id), or None.
        self._task: int | None = None
        self._fire_at = 0
        # Calls counted since arm() (only the armed task's).
        self._calls = 0
        #: Whether the armed cancellation has happened.
        self.fired = False

    def arm(self, scope: CancelScope, nth_call: int) -> None:
        """Cancel ``scope`` when this task's ``nth_call``-th call from now starts (1 = the next).

        Must be called from the task that runs the operation (inside the event loop).

        Raises:
            ValueError: ``nth_call`` is below 1.
        """
        if nth_call < 1:
            raise ValueError("nth_call counts from 1")
        self._scope = scope
        self._task = anyio.get_current_task().id
        self._calls = 0
        self._fire_at = nth_call
        self.fired = False

    def disarm(self) -> None:
        """Forget the armed scope."""
        self._scope = None
        self._task = None

    async def _maybe_cancel(self) -> None:
        scope = self._scope
        if scope is None or anyio.get_current_task().id != self._task:
            return
        self._calls += 1
        if self._calls == self._fire_at:
            self._scope = None
            self._task = None
            self.fired = True
            scope.cancel()
            await anyio.lowlevel.checkpoint()

    async def get_attributes(self) -> Attrs:
        """Delegate (Checkpoint and Cancellation: as ``inner``, plus the armed cancellation)."""
        await self._maybe_cancel()
        return await self.inner.get_attributes()

    async def read_into(self, offset: int, buffers: Sequence[memoryview]) -> int:
        """Delegate (Checkpoint and Cancellation: as ``inner``, plus the armed cancellation)."""
        await self._maybe_cancel()
        return await self.inner.read_into(offset, buffers)

    async def write_from(self, offset: int, buffers: Sequence[memoryview]) -> int:
        """Delegate (Checkpoint and Cancellation: as ``inner``, plus the armed cancellation)."""
        await self._maybe_cancel()
        return await self.inner.write_from(offset, buffers)

    async def set_attributes(self, mask: AttrMask, attrs: Attrs, force_timestamps: bool) -> None:
        """Delegate (Checkpoint and Cancellation: as ``inner``, plus the armed cancellation)."""
        await self._maybe_cancel()
        await self.inner.set_attributes(mask, attrs, force_timestamps)

    async def allocate(self, offset: int, length: int) -> None:
        """Delegate (Checkpoint and Cancellation: as ``inner``, plus the armed cancellation)."""
        await self._maybe_cancel()
        await self.inner.allocate(offset, length)

    async def sync(self) -> None:
        """Delegate (Checkpoint and Cancellation: as ``inner``, plus the armed cancellation)."""
        await self._maybe_cancel()
        await self.inner.sync()

    async def refresh(self) -> bool:
        """Delegate the ``Revalidating`` hook; ``False`` when ``inner`` has none (it cannot change).

        Counted as a call like the others, so a cancellation can be armed at it.
        Checkpoint: always. Cancellation: as ``inner``, plus the armed cancellation.
        """
        await self._maybe_cancel()
        inner = self.inner
        if isinstance(inner, Revalidating):
            return await inner.refresh()
        await anyio.lowlevel.checkpoint()
        return False


@final
class OutOfBandBacking(DelegatingBacking[BackingFile]):
    """Delegates to ``inner``; :meth:`change_behind` replaces its contents as another writer would.

    A file that changes behind the cache, over any backing, deterministically: the change is
    written through ``inner`` at once, and :meth:`refresh` (the ``Revalidating`` hook) reports
    it once, by a version count, not by timestamps. If ``inner`` has the hook too it is asked
    as well (and keeps its own baseline), so a change it sees is reported with ours.

    Attributes:
        inner: the wrapped backing.
        version: changes made by :meth:`change_behind` so far.
    """

    __slots__ = ("_seen", "refresh_error", "version")

    def __init__(self, inner: BackingFile) -> None:
        super().__init__(inner)
        self.version = 0
        #: Raised (once, then cleared) by the next :meth:`refresh`, before it looks: the store
        #: could not tell. Unlike a fault drawn by a FaultInjector it hits only the hook.
        self.refresh_error: Exception | None = None
        # The version the last refresh reported; single event-loop thread, no lock needed.
        self._seen = 0

    async def change_behind(self, data: bytes) -> None:
        """Make the file hold exactly ``data`` (bytes and size), unseen by the cache.

        Checkpoint: always. Cancellation: the file may hold part of the change, and it is not
        counted as a change (do not cancel it).

        Raises:
            OSError: whatever ``inner`` raises (``inner`` wrote nothing it reported).
        """
        inner = self.inner
        await inner.set_attributes(AttrMask.SIZE, Attrs(size=0), False)
        done = 0
        while done < len(data):
            n = await inner.write_from(done, [memoryview(data)[done:]])
            if n <= 0:
                raise OSError(f"out-of-band write stopped at {done} of {len(data)} bytes")
            done += n
        if not data:
            await anyio.lowlevel.checkpoint()
        self.version += 1

    async def refresh(self) -> bool:
        """Whether :meth:`change_behind` (or ``inner``'s own hook) saw a change since last asked.

        Checkpoint: always. Cancellation: as ``inner.refresh`` (before it, nothing changes).

        Raises:
            Exception: ``refresh_error`` when set (nothing is consumed: the next call reports
                the change); or whatever ``inner.refresh`` raises.
        """
        error = self.refresh_error
        if error is not None:
            self.refresh_error = None
            await anyio.lowlevel.checkpoint()
            raise error
        inner = self.inner
        if isinstance(inner, Revalidating):
            changed = await inner.refresh()
        else:
            await anyio.lowlevel.checkpoint()
            changed = False
        changed = changed or self.version != self._seen
        self._seen = self.version
        return changed


def _byte_view(buf: memoryview) -> memoryview:
    return buf if buf.format == "B" and buf.ndim == 1 else buf.cast("B")


@final
class DelayedCopyBacking:
    """A backing that takes a request's bytes when it starts and answers after a delay.

    What a network store (or a worker thread doing ``pwritev``) does, and what
    :class:`~aiocache_inode.backing.MemoryBacking` does not:

    - ``write_from`` copies the caller's buffers at once (before its first await), sleeps, then
      stores the copy in ``inner``: changes the caller makes to its buffers meanwhile are not
      written.
    - ``read_into`` reads ``inner``'s current bytes at once, sleeps, then copies them into the
      caller's buffers: a change to ``inner`` meanwhile is not seen.
    - ``set_attributes``, ``allocate``, ``sync`` and ``get_attributes`` are applied (or read) at
      once, then answer after the delay: a truncate has already shrunk ``inner`` while the
      caller still waits for its answer.

    Each request sleeps ``latency * u`` seconds, ``u`` drawn uniformly in [0, 1) from
    ``random.Random(seed)`` when the request starts (so concurrent requests answer out of order,
    reproducibly for the same sequence of calls). ``sleep`` replaces ``anyio.sleep`` (tests with
    a virtual clock pass their own).

    Cancellation during the sleep: a read leaves the buffers untouched, a write is not stored;
    ``set_attributes``, ``allocate`` and ``sync`` were already applied (as when a socket's
    request reached the server but the answer did not reach the caller).

    Args:
        inner: the backing that holds the data, or the initial bytes of a fresh
            :class:`~aiocache_inode.backing.MemoryBacking`.
        latency: the longest delay in seconds; finite and not negative.
        seed: seeds the delays.
        sleep: the coroutine function that waits (default ``anyio.sleep``).

    Raises:
        ValueError: a negative or non-finite latency.
    """

    __slots__ = ("_rng", "_sleep", "inner", "latency", "requests")

    def __init__(
        self,
        inner: BackingFile | bytes,
        *,
        latency: float,
        seed: int,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        if not 0 <= latency < float("inf"):  # also rejects NaN
            raise ValueError(f"latency must be a finite number of seconds >= 0, not {latency!r}")
        if isinstance(inner, bytes | bytearray | memoryview):
            inner = MemoryBacking(bytes(inner))
        #: The backing that holds the data.
        self.inner: BackingFile = inner
        #: The longest delay, seconds. May be changed at any time.
        self.latency = float(latency)
        #: Requests started.
        self.requests = 0
        self._rng = random.Random(seed)
        self._sleep = sleep if sleep is not None else anyio.sleep

    def __repr__(self) -> str:
        return f"<DelayedCopyBacking latency={self.latency} inner={self.inner!r}>"

    @property
    def data(self) -> bytes:
        """``inner.data`` (only when ``inner`` is a MemoryBacking)."""
        inner = self.inner
        if not isinstance(inner, MemoryBacking):
            raise TypeError(f"{inner!r} has no .data")
        return inner.data

    def _delay(self) -> float:
        """Count the request and draw its delay. Sync: drawn when the request starts."""
        self.requests += 1
        return self.latency * self._rng.random()

    async def _wait(self, delay: float) -> None:
        if delay > 0:
            await self._sleep(delay)
        else:
            await anyio.lowlevel.checkpoint()

    def fd(self) -> int:
        """Always -1: the data is behind a "network"."""
        return -1

    async def write_from(self, offset: int, buffers: Sequence[memoryview]) -> int:
        """Copy ``buffers`` now, wait, then store the copy at ``offset`` in ``inner``.

        Checkpoint: always. Cancellation: during the wait, nothing is stored.

        Returns:
            ``inner``'s count.
        """
        delay = self._delay()
        snapshot = b"".join(_byte_view(b).tobytes() for b in buffers)
        await self._wait(delay)
        return await self.inner.write_from(offset, [memoryview(snapshot)])

    async def read_into(self, offset: int, buffers: Sequence[memoryview]) -> int:
        """Read ``inner``'s bytes at ``offset`` now, wait, then copy them into ``buffers``.

        Checkpoint: always. Cancellation: the buffers are untouched.

        Returns:
            ``inner``'s count (0 at or past its end).
        """
        delay = self._delay()
        views = [_byte_view(b) for b in buffers]
        tmp = bytearray(sum(v.nbytes for v in views))
        got = await self.inner.read_into(offset, [memoryview(tmp)])
        await self._wait(delay)
        pos = 0
        for v in views:
            if pos >= got:
                break
            take = min(v.nbytes, got - pos)
            v[:take] = tmp[pos : pos + take]
            pos += take
        return got

    async def get_attributes(self) -> Attrs:
        """``inner``'s attributes as they were when the request started.

        Checkpoint: always. Cancellation: nothing changes.
        """
        delay = self._delay()
        attrs = await self.inner.get_attributes()
        await self._wait(delay)
        return attrs

    async def set_attributes(self, mask: AttrMask, attrs: Attrs, force_timestamps: bool) -> None:
        """Apply to ``inner`` now, answer after the delay.

        Checkpoint: always. Cancellation: during the wait, the change is already applied.
        """
        delay = self._delay()
        await self.inner.set_attributes(mask, attrs, force_timestamps)
        await self._wait(delay)

    async def allocate(self, offset: int, length: int) -> None:
        """Apply to ``inner`` now, answer after the delay.

        Checkpoint: always. Cancellation: during the wait, the change is already applied.
        """
        delay = self._delay()
        await self.inner.allocate(offset, length)
        await self._wait(delay)

    async def sync(self) -> None:
        """Sync ``inner`` now, answer after the delay.

        Checkpoint: always. Cancellation: during the wait, ``inner`` is already synced.
        """
        delay = self._delay()
        await self.inner.sync()
        await self._wait(delay)

    async def aclose(self) -> None:
        """Close ``inner`` if it has an ``aclose``.

        Checkpoint: always. Cancellation: as ``inner.aclose``.
        """
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()
        else:
            await anyio.lowlevel.checkpoint()
