"""A backing wrapper that injects errors, short I/O and latency, reproducibly by seed.

Wrap any backing to test what the cache does when the store misbehaves. The rates are plain
attributes, so a test can turn faults on for one phase and off for the next. The optional
:class:`~aiocache_inode.backing.base.Revalidating` hook is passed through too, so a wrapped
backing that can change behind the cache is still revalidated.
"""

from __future__ import annotations

import errno
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, final

import anyio
import anyio.lowlevel

from .base import Revalidating, byte_view

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

    from ..attrs import AttrMask, Attrs
    from .base import BackingFile

__all__ = ["FaultInjector", "FaultStats"]


@final
@dataclass(slots=True)
class FaultStats:
    """Counters of what a :class:`FaultInjector` did; tests read them directly."""

    #: Calls made (every backing method but ``fd``, and ``refresh`` over a backing without the
    #: hook), faulted or not.
    calls: int = 0
    #: Calls that raised the injected ``OSError(EIO)``.
    errors_injected: int = 0
    #: Reads and writes passed on with a shortened buffer list.
    short_ios_injected: int = 0


def _check_rate(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1], not {value!r}")


def _prefix(buffers: Sequence[memoryview], limit: int) -> list[memoryview]:
    """The leading ``limit`` bytes of ``buffers``, as byte views (the last one cut short)."""
    out = []
    for buf in buffers:
        if limit <= 0:
            break
        view = byte_view(buf)
        if view.nbytes > limit:
            view = view[:limit]
        out.append(view)
        limit -= view.nbytes
    return out


@final
class FaultInjector:
    """A :class:`~aiocache_inode.backing.BackingFile` that wraps ``inner`` and misbehaves.

    Every call but ``fd`` first draws its fate from ``random.Random(seed)``: with probability
    ``error_rate`` it raises ``OSError(errno.EIO, "injected fault")`` without reaching ``inner``;
    otherwise a read or write, with probability ``short_io_rate``, passes ``inner`` only a prefix
    of its buffers (at least one byte and fewer than asked, so never the zero count that means
    end of file) and returns ``inner``'s count. Then it sleeps ``latency`` seconds (if positive)
    and calls ``inner``. ``refresh`` (the revalidation hook) is faulted the same way when
    ``inner`` has it; when it has not, ``inner`` is the only writer of its file and ``refresh``
    answers ``False`` without a draw, as ``CachingInode.revalidate`` would for ``inner`` itself.

    The draws happen when the call is made, before any await, and each call makes the same
    draws whatever the rates are, so the same seed and the same sequence of calls give the same
    faults (rates compared against the same numbers). Concurrent calls draw in the order they
    start.

    Attributes:
        error_rate: probability in [0, 1] that a call raises. May be changed at any time.
        short_io_rate: probability in [0, 1] that a read or write is shortened. May be changed
            at any time.
        latency: seconds every call sleeps before reaching ``inner``. May be changed at any
            time.
        inner: the wrapped backing.
        stats: the counters.

    Args:
        inner: the backing to wrap.
        seed: seeds the fault sequence.
        error_rate: initial ``error_rate``.
        short_io_rate: initial ``short_io_rate``.
        latency: initial ``latency``.

    Raises:
        ValueError: a rate outside [0, 1], or a negative latency.
    """

    __slots__ = ("_rng", "error_rate", "inner", "latency", "seed", "short_io_rate", "stats")

    def __init__(
        self,
        inner: BackingFile,
        *,
        seed: int,
        error_rate: float = 0.0,
        short_io_rate: float = 0.0,
        latency: float = 0.0,
    ) -> None:
        _check_rate("error_rate", error_rate)
        _check_rate("short_io_rate", short_io_rate)
        if not latency >= 0 or math.isinf(latency):  # also rejects NaN
            raise ValueError(f"latency must be a finite number of seconds >= 0, not {latency!r}")
        self.inner = inner
        self.seed = seed
        self.error_rate = error_rate
        self.short_io_rate = short_io_rate
        self.latency = latency
        self.stats = FaultStats()
        # The fault sequence. No lock: drawn only from the event-loop thread, with no await
        # between a call's draws.
        self._rng = random.Random(seed)

    def __repr__(self) -> str:
        return (
            f"<FaultInjector seed={self.seed} error_rate={self.error_rate}"
            f" short_io_rate={self.short_io_rate} latency={self.latency} inner={self.inner!r}>"
        )

    async def __aenter__(self) -> FaultInjector:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def reseed(self, seed: int) -> None:
        """Restart the fault sequence from ``seed`` (``stats`` are kept).

        A deterministic test reseeds before each operation with a seed derived from its own
        seed and the operation's number, so the faults an operation meets do not depend on how
        many calls earlier operations (or background tasks) made.
        """
        self.seed = seed
        self._rng = random.Random(seed)

    # -- the faults ---------------------------------------------------------------------------

    def _draw_error(self) -> bool:
        """Count the call and draw whether it fails. Sync: no await between a call's draws."""
        self.stats.calls += 1
        return self._rng.random() < self.error_rate

    def _draw_short(self, wanted: int) -> int:
        """Draw how many of ``wanted`` bytes to pass on: ``wanted``, or 1..wanted-1 if short.

        Always draws twice, so the sequence stays aligned whatever the rate and size.
        """
        rng = self._rng
        roll = rng.random()
        cut = rng.random()
        if roll < self.short_io_rate and wanted >= 2:
            return 1 + int(cut * (wanted - 1))  # cut < 1, so at most wanted - 1
        return wanted

    async def _delay_or_fail(self, fail: bool) -> None:
        if self.latency > 0:
            await anyio.sleep(self.latency)
        elif fail:
            await anyio.lowlevel.checkpoint()
        if fail:
            self.stats.errors_injected += 1
            raise OSError(errno.EIO, "injected fault")

    async def _vectored(self, offset: int, buffers: Sequence[memoryview], write: bool) -> int:
        fail = self._draw_error()
        wanted = sum(buf.nbytes for buf in buffers)
        limit = self._draw_short(wanted)
        await self._delay_or_fail(fail)
        if limit < wanted:
            self.stats.short_ios_injected += 1
            buffers = _prefix(buffers, limit)
        inner = self.inner
        if write:
            return await inner.write_from(offset, buffers)
        return await inner.read_into(offset, buffers)

    # -- BackingFile --------------------------------------------------------------------------

    def fd(self) -> int:
        """``inner.fd()``; never faulted."""
        return self.inner.fd()

    async def read_into(self, offset: int, buffers: Sequence[memoryview]) -> int:
        """``inner.read_into``, perhaps failed or shortened.

        Checkpoint: the latency sleep or an injected error's own, and ``inner.read_into``'s.
        Cancellation: during the latency, ``inner`` is not called; after, as ``inner``.

        Returns:
            ``inner``'s count; when shortened, at most the prefix length drawn.

        Raises:
            OSError: ``EIO``, injected; or whatever ``inner`` raises.
        """
        return await self._vectored(offset, buffers, False)

    async def write_from(self, offset: int, buffers: Sequence[memoryview]) -> int:
        """``inner.write_from``, perhaps failed or shortened.

        Checkpoint: the latency sleep or an injected error's own, and ``inner.write_from``'s.
        Cancellation: during the latency, ``inner`` is not called; after, as ``inner``.

        Returns:
            ``inner``'s count; when shortened, at most the prefix length drawn.

        Raises:
            OSError: ``EIO``, injected; or whatever ``inner`` raises.
        """
        return await self._vectored(offset, buffers, True)

    async def get_attributes(self) -> Attrs:
        """``inner.get_attributes``, perhaps failed.

        Checkpoint: the latency sleep or an injected error's own, and ``inner``'s.
        Cancellation: during the latency, ``inner`` is not called; after, as ``inner``.

        Raises:
            OSError: ``EIO``, injected; or whatever ``inner`` raises.
        """
        await self._delay_or_fail(self._draw_error())
        return await self.inner.get_attributes()

    async def set_attributes(self, mask: AttrMask, attrs: Attrs, force_timestamps: bool) -> None:
        """``inner.set_attributes``, perhaps failed (then nothing is applied).

        Checkpoint: the latency sleep or an injected error's own, and ``inner``'s.
        Cancellation: during the latency, ``inner`` is not called; after, as ``inner``.

        Raises:
            OSError: ``EIO``, injected; or whatever ``inner`` raises.
        """
        await self._delay_or_fail(self._draw_error())
        await self.inner.set_attributes(mask, attrs, force_timestamps)

    async def allocate(self, offset: int, length: int) -> None:
        """``inner.allocate``, perhaps failed (then nothing is allocated).

        Checkpoint: the latency sleep or an injected error's own, and ``inner``'s.
        Cancellation: during the latency, ``inner`` is not called; after, as ``inner``.

        Raises:
            OSError: ``EIO``, injected; or whatever ``inner`` raises.
        """
        await self._delay_or_fail(self._draw_error())
        await self.inner.allocate(offset, length)

    async def sync(self) -> None:
        """``inner.sync``, perhaps failed (then ``inner`` is not synced).

        Checkpoint: the latency sleep or an injected error's own, and ``inner``'s.
        Cancellation: during the latency, ``inner`` is not called; after, as ``inner``.

        Raises:
            OSError: ``EIO``, injected; or whatever ``inner`` raises.
        """
        await self._delay_or_fail(self._draw_error())
        await self.inner.sync()

    # -- Revalidating ---------------------------------------------------------------------------

    async def refresh(self) -> bool:
        """``inner.refresh``, perhaps failed (then ``inner`` is not asked); ``False`` without it.

        Without this pass-through the wrapper would hide the hook: ``CachingInode.revalidate``
        tests the backing it was given, and a wrapped S3Object or LocalFile would look like the
        only writer of its file and never be revalidated.

        Checkpoint: the latency sleep or an injected error's own, and ``inner.refresh``'s; one
        of its own when ``inner`` has no hook.
        Cancellation: during the latency, ``inner`` is not asked; after, as ``inner.refresh``.

        Returns:
            Whether ``inner``'s file changed behind the cache (always ``False`` when ``inner``
            has no hook: nothing but this wrapper writes to it).

        Raises:
            OSError: ``EIO``, injected; or whatever ``inner.refresh`` raises.
        """
        inner = self.inner
        if not isinstance(inner, Revalidating):
            # No draw: the fault sequence stays what it was before the hook existed.
            await anyio.lowlevel.checkpoint()
            return False
        await self._delay_or_fail(self._draw_error())
        return await inner.refresh()

    async def aclose(self) -> None:
        """Close ``inner`` if it has an ``aclose`` (every backing in this package does).

        Checkpoint: always (``inner.aclose``'s, or one of its own if there is none).
        Cancellation: as ``inner.aclose``.
        """
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()
        else:
            await anyio.lowlevel.checkpoint()
