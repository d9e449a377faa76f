"""Shared fixtures of the workloads: data files, and fsspec files over the same bytes.

fsspec's local filesystem ignores ``cache_type`` (it hands out plain OS files), so its caches are
measured the way remote filesystems use them: an ``AbstractBufferedFile`` subclass whose
``_fetch_range`` reads the bytes, with the cache class picked by ``cache_type``.
"""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from fsspec.implementations.memory import MemoryFileSystem
from fsspec.spec import AbstractBufferedFile

from ._harness import rng

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["LocalBufferedFile", "SlowBufferedFile", "data_bytes", "temp_data_file"]


def data_bytes(size: int, salt: int = 0) -> bytes:
    """``size`` reproducible pseudo-random bytes."""
    return rng(salt).randbytes(size)


@contextmanager
def temp_data_file(size: int, salt: int = 0) -> Iterator[str]:
    """A temporary file of ``size`` reproducible bytes, read once so it is warm in the kernel
    page cache; removed afterwards.
    """
    fd, path = tempfile.mkstemp(prefix="aiocache_bench_", suffix=".bin")
    try:
        chunk = 8 << 20
        written = 0
        while written < size:
            n = min(chunk, size - written)
            os.write(fd, data_bytes(n, salt + written))
            written += n
        os.fsync(fd)
        os.lseek(fd, 0, os.SEEK_SET)
        while os.read(fd, chunk):
            pass
        os.close(fd)
        yield path
    finally:
        os.unlink(path)


class LocalBufferedFile(AbstractBufferedFile):  # type: ignore[misc]
    """An fsspec buffered file whose fetches are ``os.pread`` on a local file."""

    def __init__(self, path: str, size: int, **kwargs: Any) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        super().__init__(MemoryFileSystem(), path, mode="rb", size=size, **kwargs)

    def _fetch_range(self, start: int, end: int) -> bytes:
        return os.pread(self._fd, end - start, start)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


class SlowBufferedFile(AbstractBufferedFile):  # type: ignore[misc]
    """An fsspec buffered file over in-memory bytes with an object store's delay per fetch.

    Each fetch sleeps ``latency + size / bandwidth`` seconds (synchronously: fsspec's file API
    is synchronous, so this is the best case for it; in an event loop it would also block every
    other task, or cost a thread hop per fetch), the same model as ``MemoryBacking``.
    """

    def __init__(self, data: bytes, *, latency: float, bandwidth: float, **kwargs: Any) -> None:
        self._data = memoryview(data)
        self._latency = latency
        self._bandwidth = bandwidth
        self.fetches = 0
        self.fetched_bytes = 0
        super().__init__(MemoryFileSystem(), "/bench", mode="rb", size=len(data), **kwargs)

    def _fetch_range(self, start: int, end: int) -> bytes:
        end = min(end, len(self._data))
        n = max(0, end - start)
        time.sleep(self._latency + n / self._bandwidth)
        self.fetches += 1
        self.fetched_bytes += n
        return bytes(self._data[start:end])
