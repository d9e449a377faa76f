"""The backing-store protocol the inode relies on (the seed's ``CachedFileObject``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..attrs import AttrMask, Attrs

__all__ = ["BackingFile", "Revalidating", "byte_view"]


def byte_view(buf: memoryview) -> memoryview:
    """A flat unsigned-byte view of ``buf``, so its length is its byte count.

    Every backing takes the caller's buffers through this before it counts or slices them.
    Complexity: O(1) (no copy).
    """
    return buf if buf.format == "B" and buf.ndim == 1 else buf.cast("B")


@runtime_checkable
class BackingFile(Protocol):
    """What a caching inode needs from the store behind it.

    Offsets are positional: implementations never rely on a shared file position. A read may
    return fewer bytes than asked (0 with no error means end of file); a write may be short (0
    with no error is treated as a failure by the inode, never retried forever). Failures raise
    ``OSError`` (or any exception); the inode wraps them in ``BackingError``.

    Every coroutine here is expected to checkpoint (it does I/O). The inode shields every request
    that changes the backing (``write_from``, ``set_attributes``, ``allocate``, and
    ``Revalidating.refresh``) once sent, so a cache operation being cancelled never cancels one
    mid-request; ``read_into``, ``get_attributes`` and ``sync`` may be cancelled.
    """

    async def get_attributes(self) -> Attrs:
        """The file's current attributes (size, mode, owner, times, links).

        Checkpoint: yes. Cancellation: nothing changed (a read).
        """
        ...

    async def read_into(self, offset: int, buffers: Sequence[memoryview]) -> int:
        """Fill ``buffers`` in order from ``offset``; return the byte count (may be short).

        Checkpoint: yes. Cancellation: the buffers may hold part of the data; nothing else
        changed (the inode then discards the fill).
        """
        ...

    async def write_from(self, offset: int, buffers: Sequence[memoryview]) -> int:
        """Write ``buffers`` in order at ``offset``; return the byte count (may be short).

        Checkpoint: yes. Cancellation: the inode never cancels one (it shields the request);
        cancelled by other means, any prefix of the bytes may have landed.
        """
        ...

    async def set_attributes(self, mask: AttrMask, attrs: Attrs, force_timestamps: bool) -> None:
        """Apply the fields of ``attrs`` named by ``mask``.

        ``force_timestamps`` asks that atime/mtime be set even where the store would otherwise
        maintain them itself.

        Checkpoint: yes. Cancellation: the inode shields the request, so it completes; the cache
        follows only what the backing accepted.
        """
        ...

    async def allocate(self, offset: int, length: int) -> None:
        """Reserve storage for ``[offset, offset+length)``, growing the file if needed.

        Checkpoint: yes. Cancellation: the inode shields the request, so it completes.
        """
        ...

    async def sync(self) -> None:
        """Make everything written so far durable.

        Checkpoint: yes. Cancellation: what was written stays written, maybe not yet durable;
        a later sync makes it so (``write_out`` does not shield it).
        """
        ...

    def fd(self) -> int:
        """A host file descriptor for the data, or -1 when there is none."""
        ...


@runtime_checkable
class Revalidating(Protocol):
    """A backing whose file can change behind the cache: ``CachingInode.revalidate`` asks it.

    The seed's UpdateUnstable, as an optional extra kept apart from :class:`BackingFile`, so a
    backing that is the only writer of its file needs nothing new.
    :class:`~aiocache_inode.backing.S3Object` compares ETags,
    :class:`~aiocache_inode.backing.LocalFile` compares ``(st_ino, st_size, st_mtime_ns)``.
    """

    async def refresh(self) -> bool:
        """Ask the store what it holds now; from then on serve that. Return whether it changed.

        "Changed" means a version this backing did not write itself: reads now return the new
        bytes and :meth:`BackingFile.get_attributes` its attributes, so a caller caching the old
        ones must drop them. A backing holding unsynced changes of its own raises instead of
        moving to the new version (S3Object: ``ObjectChangedError``), keeping them.

        Checkpoint: yes. Cancellation: the inode shields the request, so it completes and the
        cache follows its answer.
        """
        ...
