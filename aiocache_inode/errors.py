"""The library's exceptions: one root, a few leaves, each saying when it fires.

No HTTP here: the gateway maps these to S3 error responses in one handler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .ranges import Range

__all__ = [
    "BackendError",
    "BackingError",
    "CacheError",
    "ClosedError",
    "ConflictError",
    "NotFoundError",
    "WouldBlock",
    "WritebackError",
]


class CacheError(Exception):
    """Root of every error the library raises."""


class ClosedError(CacheError):
    """The inode or store was released or closed and cannot be used any more."""


class ConflictError(CacheError):
    """The backing changed behind the cache while ``ranges`` were dirty; they are kept, unsaved.

    Raised by ``CachingInode.revalidate``. The dirty bytes are neither overwritten by the new
    version nor dropped: ``write_out`` puts them over it, ``truncate`` cuts them off.
    """

    def __init__(self, message: str, ranges: list[Range] | None = None) -> None:
        super().__init__(message)
        #: File ranges that are dirty over a version the cache did not start from.
        self.ranges: list[Range] = list(ranges or [])


class WouldBlock(CacheError):
    """A ``*_nowait`` call would have had to wait (a miss, or a lock held)."""


class NotFoundError(CacheError, LookupError):
    """No resident inode or object under that key."""


class BackingError(CacheError, OSError):
    """The backing store failed; the original exception is ``__cause__``."""


# The style guide's name for the same class; both spellings are public.
BackendError = BackingError


class WritebackError(BackingError):
    """Dirty data could not be written back; ``ranges`` are still dirty and cached."""

    def __init__(self, message: str, ranges: list[Range] | None = None) -> None:
        super().__init__(message)
        #: File ranges that are still dirty because their write-back failed.
        self.ranges: list[Range] = list(ranges or [])
