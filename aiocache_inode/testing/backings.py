"""Backings for tests: a wrapper that cancels the caller at a chosen backing call."""

from __future__ import annotations

from typing import TYPE_CHECKING, final

import anyio.lowlevel

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anyio import CancelScope

    from ..attrs import AttrMask, Attrs
    from ..backing.base import BackingFile

__all__ = ["CancellingBacking"]


@final
class CancellingBacking:
    """Delegates to ``inner``; once armed, cancels a scope when the n-th call starts.

    Deterministic cancellation at a chosen point of an operation: arm it with the scope the
    operation runs in and a call count; the n-th backing call cancels the scope and checkpoints
    (so the cancellation lands there, unless the caller shields the call).
    """

    __slots__ = ("_calls", "_fire_at", "_scope", "fired", "inner")

    def __init__(self, inner: BackingFile) -> None:
        self.inner = inner
        self._scope: CancelScope | None = None
        self._fire_at = 0
        self._calls = 0
        #: Whether the armed cancellation has happened.
        self.fired = False

    def arm(self, scope: CancelScope, nth_call: int) -> None:
        """Cancel ``scope`` when the ``nth_call``-th call from now starts (1 = the next one)."""
        if nth_call < 1:
            raise ValueError("nth_call counts from 1")
        self._scope = scope
        self._fire_at = self._calls + nth_call
        self.fired = False

    def disarm(self) -> None:
        """Forget the armed scope."""
        self._scope = None

    async def _maybe_cancel(self) -> None:
        self._calls += 1
        scope = self._scope
        if scope is not None and self._calls == self._fire_at:
            self._scope = None
            self.fired = True
            scope.cancel()
            await anyio.lowlevel.checkpoint()

    async def get_attributes(self) -> Attrs:
        """Delegate."""
        await self._maybe_cancel()
        return await self.inner.get_attributes()

    async def read_into(self, offset: int, buffers: Sequence[memoryview]) -> int:
        """Delegate."""
        await self._maybe_cancel()
        return await self.inner.read_into(offset, buffers)

    async def write_from(self, offset: int, buffers: Sequence[memoryview]) -> int:
        """Delegate."""
        await self._maybe_cancel()
        return await self.inner.write_from(offset, buffers)

    async def set_attributes(self, mask: AttrMask, attrs: Attrs, force_timestamps: bool) -> None:
        """Delegate."""
        await self._maybe_cancel()
        await self.inner.set_attributes(mask, attrs, force_timestamps)

    async def allocate(self, offset: int, length: int) -> None:
        """Delegate."""
        await self._maybe_cancel()
        await self.inner.allocate(offset, length)

    async def sync(self) -> None:
        """Delegate."""
        await self._maybe_cancel()
        await self.inner.sync()

    def fd(self) -> int:
        """Delegate."""
        return self.inner.fd()
