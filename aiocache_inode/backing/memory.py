"""A backing store held in memory, with optional latency and bandwidth to model an object store.

The tests' reference backing (the model-based tests treat it as "assumed perfect", as zarr treats
its ``MemoryStore``) and the benchmarks' stand-in for a remote store: each request first waits
``latency`` plus its size over ``bandwidth``, then does its work without yielding, so concurrent
requests really overlap in the wait and each one's effect is atomic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, final

import anyio
import anyio.lowlevel

from ..attrs import AttrMask, Attrs, now_ns
from ..errors import ClosedError
from .base import byte_view

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

__all__ = ["BackingStats", "MemoryBacking"]

# The fields set_attributes stores as given. SIZE resizes the data; USAGE is derived from it.
_STORED = (
    (AttrMask.MODE, "mode"),
    (AttrMask.UID, "uid"),
    (AttrMask.GID, "gid"),
    (AttrMask.ATIME, "atime"),
    (AttrMask.MTIME, "mtime"),
    (AttrMask.CTIME, "ctime"),
    (AttrMask.LINKS, "links"),
)


@final
@dataclass(slots=True)
class BackingStats:
    """Counters of the requests a :class:`MemoryBacking` has served; tests read them directly.

    A request is counted when its work is done (after its delay); one cancelled during the delay
    is not. ``concurrent_peak`` counts requests from entry, delay included.
    """

    #: Completed ``read_into`` calls.
    reads: int = 0
    #: Completed ``write_from`` calls.
    writes: int = 0
    #: Completed ``sync`` calls.
    syncs: int = 0
    #: Completed ``set_attributes`` calls.
    set_attributes: int = 0
    #: Completed ``allocate`` calls.
    allocates: int = 0
    #: Completed ``get_attributes`` calls.
    get_attributes: int = 0
    #: Bytes returned by reads.
    read_bytes: int = 0
    #: Bytes stored by writes.
    written_bytes: int = 0
    #: Most requests that were ever in progress at once.
    concurrent_peak: int = 0


@final
class MemoryBacking:
    """A :class:`~aiocache_inode.backing.BackingFile` over a ``bytearray``.

    Each request waits ``latency`` seconds plus its size divided by ``bandwidth`` (bytes per
    second, per request: concurrent requests do not share it), then does its work at once. A
    read's size is the bytes available at offset when the request starts; a write's is its
    length; other requests wait ``latency`` only.

    ``size`` is always the data's length and ``usage`` equals it (both are derived, so a
    ``USAGE`` in ``set_attributes`` is ignored); the other attributes are kept as given and change
    only through ``set_attributes`` (the inode, not the store, is the authority over times).

    Args:
        data: initial contents.
        latency: seconds every request waits before its work; not negative.
        bandwidth: bytes per second that request sizes are divided by; positive, or ``None``
            for no size-dependent delay.
        attrs: initial attributes other than size and usage; default mode 0o644, owner 0:0,
            one link, every time the construction time.

    Raises:
        ValueError: ``latency`` is negative or ``bandwidth`` is not positive.
    """

    __slots__ = ("_active", "_attrs", "_bandwidth", "_buf", "_closed", "_latency", "stats")

    # No lock: every field is touched only from the event-loop thread, and each request's work
    # runs without an await, so it is atomic. Invariant: 0 <= _active <= stats.concurrent_peak.

    def __init__(
        self,
        data: bytes = b"",
        *,
        latency: float = 0.0,
        bandwidth: float | None = None,
        attrs: Attrs | None = None,
    ) -> None:
        if not latency >= 0 or math.isinf(latency):  # also rejects NaN
            raise ValueError(f"latency must be a finite number of seconds >= 0, not {latency!r}")
        if bandwidth is not None and not bandwidth > 0:
            raise ValueError(f"bandwidth must be positive bytes per second, not {bandwidth!r}")
        if attrs is None:
            now = now_ns()
            attrs = Attrs(atime=now, mtime=now, ctime=now)
        # Seconds each request waits first. Immutable after __init__.
        self._latency = float(latency)
        # Bytes per second for the size-dependent wait, or None. Immutable after __init__.
        self._bandwidth = bandwidth
        # The contents.
        self._buf = bytearray(data)
        # Attributes other than size and usage (those are derived from _buf).
        self._attrs = attrs
        # Requests in progress (waiting or working).
        self._active = 0
        # Set by aclose(); later requests raise ClosedError.
        self._closed = False
        #: Request counters (mutable; tests read and may reset them).
        self.stats = BackingStats()

    def __repr__(self) -> str:
        return (
            f"<MemoryBacking size={len(self._buf)} latency={self._latency}"
            f" bandwidth={self._bandwidth}{' closed' if self._closed else ''}>"
        )

    async def __aenter__(self) -> MemoryBacking:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def data(self) -> bytes:
        """A copy of the current contents. Complexity: O(size)."""
        return bytes(self._buf)

    @property
    def latency(self) -> float:
        """Seconds every request waits before its work."""
        return self._latency

    @property
    def bandwidth(self) -> float | None:
        """Bytes per second for the size-dependent part of the wait, or ``None``."""
        return self._bandwidth

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` has been called."""
        return self._closed

    def _check_invariants(self) -> None:
        """Assert the invariants stated beside the fields (for tests)."""
        assert 0 <= self._active <= self.stats.concurrent_peak

    # -- request bracketing -----------------------------------------------------------------

    async def _enter(self, size: int) -> None:
        """Count the request in and wait its delay. Cancellation: counted out again."""
        if self._closed:
            raise ClosedError(f"{self!r} is closed")
        self._active += 1
        stats = self.stats
        if self._active > stats.concurrent_peak:
            stats.concurrent_peak = self._active
        delay = self._latency
        if self._bandwidth is not None and size:
            delay += size / self._bandwidth
        try:
            if delay > 0:
                await anyio.sleep(delay)
            else:
                await anyio.lowlevel.checkpoint()
        except BaseException:
            self._active -= 1
            raise

    # -- BackingFile ------------------------------------------------------------------------

    def fd(self) -> int:
        """Always -1: there is no host descriptor."""
        return -1

    async def read_into(self, offset: int, buffers: Sequence[memoryview]) -> int:
        """Copy the bytes at ``offset`` into ``buffers`` in order.

        Checkpoint: always (the delay), except when raising ``ValueError`` or ``ClosedError``.
        Cancellation: during the delay; nothing is read and the buffers are untouched.
        Complexity: O(n) for n bytes copied, plus the delay.

        Returns:
            Bytes copied: fewer than asked when the data ends first, 0 at or past the end.

        Raises:
            ValueError: ``offset`` is negative.
            ClosedError: the backing was closed.
        """
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        views = [byte_view(buf) for buf in buffers]
        wanted = sum(view.nbytes for view in views)
        await self._enter(max(0, min(wanted, len(self._buf) - offset)))
        try:
            # Copy straight out of the bytearray through a view (no intermediate slice copy);
            # released before anything can resize the bytearray, which a live view forbids.
            src = memoryview(self._buf)
            try:
                pos = offset
                end = len(src)
                for view in views:
                    if pos >= end:
                        break
                    take = min(view.nbytes, end - pos)
                    view[:take] = src[pos : pos + take]
                    pos += take
            finally:
                src.release()
            done = max(0, pos - offset)
            self.stats.reads += 1
            self.stats.read_bytes += done
            return done
        finally:
            self._active -= 1

    async def write_from(self, offset: int, buffers: Sequence[memoryview]) -> int:
        """Store ``buffers`` in order at ``offset``; a gap past the end is filled with zeros.

        Checkpoint: always (the delay), except when raising ``ValueError`` or ``ClosedError``.
        Cancellation: during the delay; nothing is written.
        Complexity: O(n + g) for n bytes written and a gap of g bytes, plus the delay.

        Returns:
            Bytes written: always all of them.

        Raises:
            ValueError: ``offset`` is negative.
            ClosedError: the backing was closed.
        """
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        views = [byte_view(buf) for buf in buffers]
        size = sum(view.nbytes for view in views)
        await self._enter(size)
        try:
            buf = self._buf
            if offset > len(buf):
                buf.extend(bytes(offset - len(buf)))
            pos = offset
            for view in views:
                buf[pos : pos + view.nbytes] = view
                pos += view.nbytes
            self.stats.writes += 1
            self.stats.written_bytes += size
            return size
        finally:
            self._active -= 1

    async def get_attributes(self) -> Attrs:
        """The stored attributes, with ``size`` and ``usage`` the data's current length.

        Checkpoint: always (the delay), except when raising ``ClosedError``.
        Cancellation: during the delay; nothing changes.

        Raises:
            ClosedError: the backing was closed.
        """
        await self._enter(0)
        try:
            self.stats.get_attributes += 1
            size = len(self._buf)
            return self._attrs.with_(size=size, usage=size)
        finally:
            self._active -= 1

    async def set_attributes(self, mask: AttrMask, attrs: Attrs, force_timestamps: bool) -> None:
        """Apply the fields of ``attrs`` named by ``mask``.

        ``SIZE`` truncates or zero-extends the data; ``USAGE`` is ignored (derived from the
        size); every other field is stored as given. Times are always applied, so
        ``force_timestamps`` changes nothing here.

        Checkpoint: always (the delay), except when raising ``ClosedError``.
        Cancellation: during the delay; nothing changes.
        Complexity: O(g) for g bytes of zero-extension, plus the delay.

        Raises:
            ClosedError: the backing was closed.
        """
        await self._enter(0)
        try:
            if AttrMask.SIZE in mask:
                buf = self._buf
                if attrs.size < len(buf):
                    del buf[attrs.size :]
                else:
                    buf.extend(bytes(attrs.size - len(buf)))
            changes = {name: getattr(attrs, name) for flag, name in _STORED if flag in mask}
            if changes:
                self._attrs = self._attrs.with_(**changes)
            self.stats.set_attributes += 1
        finally:
            self._active -= 1

    async def allocate(self, offset: int, length: int) -> None:
        """Grow the data with zeros to ``offset + length`` if it is shorter; never shrink it.

        Checkpoint: always (the delay), except when raising ``ValueError`` or ``ClosedError``.
        Cancellation: during the delay; nothing changes.
        Complexity: O(g) for g bytes of growth, plus the delay.

        Raises:
            ValueError: ``offset`` or ``length`` is negative.
            ClosedError: the backing was closed.
        """
        if offset < 0 or length < 0:
            raise ValueError(f"negative offset or length: {offset}, {length}")
        await self._enter(0)
        try:
            end = offset + length
            if end > len(self._buf):
                self._buf.extend(bytes(end - len(self._buf)))
            self.stats.allocates += 1
        finally:
            self._active -= 1

    async def sync(self) -> None:
        """Count a sync; memory has nothing to make durable.

        Checkpoint: always (the delay), except when raising ``ClosedError``.
        Cancellation: during the delay; not counted.

        Raises:
            ClosedError: the backing was closed.
        """
        await self._enter(0)
        try:
            self.stats.syncs += 1
        finally:
            self._active -= 1

    async def aclose(self) -> None:
        """Refuse later requests with ``ClosedError``; :attr:`data` stays readable.

        Requests already past their entry finish normally. Closing twice is allowed.

        Checkpoint: always.
        Cancellation: the backing is closed anyway.
        """
        self._closed = True
        await anyio.lowlevel.checkpoint()
