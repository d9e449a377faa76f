"""Which cached bytes differ from the backing file (the seed's ``DirtySet``).

A :class:`DirtySet` maps dirty file ranges to a ``keep`` flag. ``keep`` marks a range that is
writable through a mapping (a writable view): write-back cannot make it clean for good, because
the mapping may write again at any moment, so cleaning leaves it dirty. ``keep`` is a boolean,
not a count: the mapping set does the counting, and :meth:`DirtySet.allow_clean` is called only
once a range has no mappings left.

Touching segments merge only when their flags are equal. Ranges need not be page-aligned: a
partial-page write dirties only its bytes. Writing the dirty bytes back (the seed's
``SyncDirty``) belongs to the inode, which owns both the cache and the backing file; this module
keeps the set. The owner's ``_data_lock`` protects it (lock order: see ``inode.py``).
"""

from __future__ import annotations

from typing import final

from .segments import SegmentMap

__all__ = ["DirtySet"]


def _clean_unless_kept(keep: bool) -> bool | None:
    """``mark_clean``'s rule: a kept piece stays, any other piece goes."""
    return True if keep else None


def _unkeep(keep: bool) -> bool:
    """``allow_clean``'s rule: still dirty, no longer kept."""
    return False


@final
class DirtySet(SegmentMap[bool]):
    """Dirty file ranges, each with a ``keep`` flag; equal flags merge.

    Every method takes ``[start, end)`` with ``0 <= start <= end``; an empty range is a no-op,
    an invalid one raises ``ValueError``.
    """

    __slots__ = ()

    def __init__(self) -> None:
        # The defaults are the seed's: a flag splits into two equal flags, equal flags merge.
        super().__init__()

    def mark_dirty(self, start: int, end: int) -> None:
        """Dirty the clean parts of ``[start, end)`` with ``keep=False``.

        Parts already dirty stay as they are; in particular ``keep`` is never cleared here.

        Complexity: O((k + 1) log n).
        """
        # Materialised: inserting merges segments under the iterator.
        for gap_start, gap_end in list(self.gaps(start, end)):
            self.insert(gap_start, gap_end, False)

    def keep_dirty(self, start: int, end: int) -> None:
        """Make the whole of ``[start, end)`` dirty with ``keep=True``.

        Complexity: O((k + 1) log n).
        """
        self.assign(start, end, True)

    def mark_clean(self, start: int, end: int) -> None:
        """Clean the parts of ``[start, end)`` whose ``keep`` is ``False``; kept parts stay.

        Complexity: O((k + 1) log n).
        """
        self.update(start, end, _clean_unless_kept)

    def keep_clean(self, start: int, end: int) -> None:
        """Clean all of ``[start, end)``, kept or not (truncate, evict, release).

        Complexity: O((k + 1) log n).
        """
        self.remove(start, end)

    def allow_clean(self, start: int, end: int) -> None:
        """Set ``keep=False`` over ``[start, end)``; clean nothing.

        Called once the range has no mappings left, so a later clean may be final.

        Complexity: O((k + 1) log n).
        """
        self.update(start, end, _unkeep)

    def dirty_ranges(self, start: int, end: int) -> list[tuple[int, int, bool]]:
        """The dirty parts of ``[start, end)`` as ``(start, end, keep)``, clipped, in order.

        Complexity: O(log n + k).
        """
        return list(self.clipped(start, end))
