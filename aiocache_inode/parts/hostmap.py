"""Host-FD mode: page references on the backing's host file and internal mmaps of it.

The seed's ``hostFileMapper`` (gVisor ``fsutil/host_file_mapper.go``) and its IncRef/DecRef: a
part of its own because it shares nothing with the page cache but the backing and the size.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
from typing import TYPE_CHECKING, Final, final

from ..errors import CacheError
from ..refs import RefCountSet

if TYPE_CHECKING:
    from ..backing.base import BackingFile
    from ..ranges import Range

__all__ = ["HOST_CHUNK", "HostFileMapper"]

#: Host mappings for map_internal are made in chunks of this size (the seed's 2 MiB).
HOST_CHUNK: Final = 2 << 20


@final
class HostFileMapper:
    """Host page refcounts and 2 MiB ``mmap`` chunks of one backing's host file.

    Everything is synchronous; one event-loop thread, so no lock (loop-atomic).
    """

    __slots__ = ("_backing", "_maps", "_refs")

    def __init__(self, backing: BackingFile) -> None:
        # Immutable after __init__.
        self._backing = backing
        # Page references on the host file (inc_ref/dec_ref). Loop-atomic.
        self._refs = RefCountSet()
        # Chunk index -> (mapping, writable). Loop-atomic.
        self._maps: dict[int, tuple[mmap.mmap, bool]] = {}

    def busy(self) -> bool:
        """Whether any page reference or mapping is held (the inode is not idle)."""
        return bool(self._refs) or bool(self._maps)

    def inc_ref(self, r: Range) -> None:
        """The body of :meth:`CachingInode.inc_ref`, which states the contract."""
        if not r.is_page_aligned():
            raise ValueError("inc_ref needs a page-aligned range")
        self._refs.increment(r.start, r.end)

    def dec_ref(self, r: Range) -> None:
        """The body of :meth:`CachingInode.dec_ref`, which states the contract."""
        if not r.is_page_aligned():
            raise ValueError("dec_ref needs a page-aligned range")
        self._refs.decrement(r.start, r.end)

    def referenced_bytes(self) -> int:
        """Bytes of host-file pages with a reference."""
        return self._refs.referenced_bytes()

    def map_internal(self, r: Range, write: bool, size: int) -> list[memoryview]:
        """The body of :meth:`CachingInode.map_internal`; ``size`` is the file size."""
        fd = self._backing.fd()
        if fd < 0:
            raise CacheError("map_internal needs a backing with a host file descriptor")
        if not r:
            raise ValueError("map_internal needs a non-empty range")
        end = min(r.end, size)
        out: list[memoryview] = []
        pos = r.start
        while pos < end:
            chunk = pos // HOST_CHUNK
            base = chunk * HOST_CHUNK
            length = min(HOST_CHUNK, size - base)
            mm = self._host_map(fd, chunk, base, length, write)
            stop = min(end, base + length)
            out.append(memoryview(mm)[pos - base : stop - base])
            pos = stop
        return out

    def _host_map(self, fd: int, chunk: int, base: int, length: int, write: bool) -> mmap.mmap:
        have = self._maps.get(chunk)
        if have is not None and len(have[0]) >= length and (have[1] or not write):
            return have[0]
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if write or (have and have[1]) else 0)
        mm = mmap.mmap(fd, length, mmap.MAP_SHARED, prot, offset=base)
        if have is not None:
            # A caller may still hold a view of the old mapping: it then stays valid.
            with contextlib.suppress(BufferError):
                have[0].close()
        self._maps[chunk] = (mm, bool(prot & mmap.PROT_WRITE))
        return mm

    def regenerate(self) -> None:
        """Re-make every internal mapping onto the backing's current descriptor.

        Raises:
            OSError: the new descriptor could not be mapped (the old mappings stay).
        """
        fd = self._backing.fd()
        if not self._maps:
            return
        if fd < 0:
            raise OSError(errno.EBADF, "the backing no longer has a host descriptor")
        new: dict[int, tuple[mmap.mmap, bool]] = {}
        try:
            for chunk, (mm, w) in self._maps.items():
                prot = mmap.PROT_READ | (mmap.PROT_WRITE if w else 0)
                # Each mapping covers its own chunk of the file, at the chunk's offset.
                mapped = mmap.mmap(fd, len(mm), mmap.MAP_SHARED, prot, offset=chunk * HOST_CHUNK)
                new[chunk] = (mapped, w)
        except OSError:
            for m, _ in new.values():
                m.close()
            raise
        for mm, _w in self._maps.values():
            with contextlib.suppress(BufferError):
                mm.close()
        self._maps = new

    def close(self) -> None:
        """Unmap every internal mapping (the inode is released)."""
        for mm, _w in self._maps.values():
            mm.close()
        self._maps.clear()
