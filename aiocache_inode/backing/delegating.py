"""A backing that forwards every call to another: the base of every wrapper that changes a few.

A wrapper (the store's meter, a test double that fails one call, a backing changed behind the
cache) subclasses :class:`DelegatingBacking` and overrides only the calls it changes, instead of
restating the six that it passes on. The optional
:class:`~aiocache_inode.backing.base.Revalidating` hook is deliberately *not* forwarded here:
``CachingInode.revalidate`` tests whether its backing has ``refresh``, so a base that always had
one would make every wrapped backing look as if its file could change behind the cache. A
wrapper that should pass the hook on defines ``refresh`` itself. Nor is ``aclose``: closing
stays with whoever made ``inner`` (the store closes the backing it was given, not its meter).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar

from .base import BackingFile

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..attrs import AttrMask, Attrs

__all__ = ["DelegatingBacking"]

B = TypeVar("B", bound=BackingFile)


class DelegatingBacking(Generic[B]):
    """A :class:`~aiocache_inode.backing.BackingFile` that passes every call on to ``inner``.

    Each call's checkpoint and cancellation are ``inner``'s. Subclasses override what they
    change; ``inner`` keeps its own type (``DelegatingBacking[MemoryBacking]`` reads
    ``self.inner.data`` without a cast).

    Attributes:
        inner: the wrapped backing.
    """

    __slots__ = ("inner",)

    def __init__(self, inner: B) -> None:
        self.inner = inner

    def __repr__(self) -> str:
        return f"<{type(self).__name__} inner={self.inner!r}>"

    async def get_attributes(self) -> Attrs:
        """``inner.get_attributes()``. Checkpoint and Cancellation: as ``inner``."""
        return await self.inner.get_attributes()

    async def read_into(self, offset: int, buffers: Sequence[memoryview]) -> int:
        """``inner.read_into(offset, buffers)``. Checkpoint and Cancellation: as ``inner``."""
        return await self.inner.read_into(offset, buffers)

    async def write_from(self, offset: int, buffers: Sequence[memoryview]) -> int:
        """``inner.write_from(offset, buffers)``. Checkpoint and Cancellation: as ``inner``."""
        return await self.inner.write_from(offset, buffers)

    async def set_attributes(self, mask: AttrMask, attrs: Attrs, force_timestamps: bool) -> None:
        """``inner.set_attributes(...)``. Checkpoint and Cancellation: as ``inner``."""
        await self.inner.set_attributes(mask, attrs, force_timestamps)

    async def allocate(self, offset: int, length: int) -> None:
        """``inner.allocate(offset, length)``. Checkpoint and Cancellation: as ``inner``."""
        await self.inner.allocate(offset, length)

    async def sync(self) -> None:
        """``inner.sync()``. Checkpoint and Cancellation: as ``inner``."""
        await self.inner.sync()

    def fd(self) -> int:
        """``inner.fd()``."""
        return self.inner.fd()
