"""An ordered map of non-overlapping half-open ranges to values: the only range arithmetic.

This is the Python form of gVisor's generic ``segment.Set`` (``pkg/segment/set.go``), which
``FileRangeSet``, ``DirtySet`` and ``MappingSet`` instantiate. Here :class:`SegmentMap` is the one
generic map; ``cache.py``, ``dirty.py`` and ``mappings.py`` only choose the value type and the
two policies:

- ``split(value, delta)``: the value of the right piece when a segment ``[s, e)`` is cut at
  ``s + delta`` (a pool offset moves by ``delta``; a flag stays the same).
- ``can_merge(left_value, left_length, right_value)``: whether two touching segments may become
  one that keeps ``left_value``.

Representation: ``_map`` is a ``SortedDict`` from segment start to ``(end, value)``. Other
modules in the package read it directly on hot paths, so it stays exactly that. A B-tree keyed
by start (as gVisor has) was the alternative; ``SortedDict`` gives the same ``O(log n)``
search and ordered iteration with its bisect on a plain ``dict``, so a value lookup by start is
``O(1)`` once the start is known.

Invariants (checked by :meth:`SegmentMap.check_invariants`)::

    all(0 <= s < e for s, (e, _) in _map.items())                # non-empty
    all(e1 <= s2 for consecutive (s1, e1), (s2, e2))             # sorted, non-overlapping
    not (e1 == s2 and can_merge(v1, e1 - s1, v2))                # touching mergeable merged
    _total == sum(e - s for s, (e, _) in _map.items())

Only :meth:`SegmentMap.split_at` may leave the third one broken, on purpose, until a matching
:meth:`SegmentMap.merge_adjacent`.

Every range argument is ``[start, end)`` with ``0 <= start <= end``; an empty range is a no-op
(except for :meth:`SegmentMap.merge_adjacent`, whose range is widened by one on each side), and
a negative or reversed range raises ``ValueError``. Complexities use *n* for the number of
segments and *k* for the number of segments the call visits.

Not thread-safe, and not safe to mutate while one of its iterators is live: materialise with
``list()`` first. The owner's lock protects it (see the lock order in ``inode.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Generic, TypeVar

from sortedcontainers import SortedDict

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["SegmentMap"]

V = TypeVar("V")

# The plain dict accessors of the SortedDict, for a key known to be present (append's in-place
# extension): no SortedDict method in between.
_dict_getitem: Final = dict.__getitem__
_dict_setitem: Final = dict.__setitem__


def _same(value: V, delta: int) -> V:
    """Default split: both pieces keep the value."""
    return value


def _equal(left: object, left_length: int, right: object) -> bool:
    """Default merge rule: touching segments merge when their values are equal."""
    return left == right


def _check_range(start: int, end: int) -> None:
    if start < 0 or start > end:
        raise ValueError(f"invalid range [{start}, {end})")


def _check_offset(offset: int) -> None:
    if offset < 0:
        raise ValueError(f"negative offset {offset}")


class SegmentMap(Generic[V]):
    """Non-overlapping half-open ranges ``[start, end)`` mapped to values, in order.

    Args:
        split: value of the right piece when a segment with value ``v`` is cut ``delta`` past
            its start. Default: ``v`` unchanged.
        can_merge: whether touching segments ``(left_value, left_length, right_value)`` merge
            into one keeping ``left_value``. Default: ``left_value == right_value``.
    """

    __slots__ = ("_can_merge", "_map", "_split", "_total")

    def __init__(
        self,
        *,
        split: Callable[[V, int], V] | None = None,
        can_merge: Callable[[V, int, V], bool] | None = None,
    ) -> None:
        # start -> (end, value). Read directly by cache.py, dirty.py, mappings.py and inode.py.
        self._map: SortedDict[int, tuple[int, V]] = SortedDict()
        # Sum of segment lengths, kept up to date by every mutation so total() is O(1).
        self._total = 0
        # Immutable after __init__.
        self._split: Callable[[V, int], V] = split if split is not None else _same
        self._can_merge: Callable[[V, int, V], bool] = (
            can_merge if can_merge is not None else _equal
        )

    # ------------------------------------------------------------------ size and iteration

    def __len__(self) -> int:
        """The number of segments. Complexity: O(1)."""
        return len(self._map)

    def __bool__(self) -> bool:
        """Whether any segment exists. Complexity: O(1)."""
        return bool(self._map)

    def __repr__(self) -> str:
        shown = ", ".join(f"[{s:#x}, {e:#x}): {v!r}" for s, e, v in self.segments())
        return f"{type(self).__name__}({{{shown}}})"

    def total(self) -> int:
        """The number of offsets covered, the sum of all segment lengths.

        Complexity: O(1); maintained incrementally.
        """
        return self._total

    def segments(self) -> Iterator[tuple[int, int, V]]:
        """Every segment as ``(start, end, value)``, in order.

        Complexity: O(n) for the whole iteration.
        """
        for start, (end, value) in self._map.items():
            yield start, end, value

    def bounds(self) -> tuple[int, int] | None:
        """``(start of the first segment, end of the last)``, or ``None`` when empty.

        Complexity: O(log n).
        """
        m = self._map
        if not m:
            return None
        return m.keys()[0], m.peekitem(-1)[1][0]

    # ------------------------------------------------------------------ queries

    def find(self, offset: int) -> tuple[int, int, V] | None:
        """The segment containing ``offset`` as ``(start, end, value)``, or ``None`` (a gap).

        Complexity: O(log n).

        Raises:
            ValueError: ``offset`` is negative.
        """
        _check_offset(offset)
        m = self._map
        i = m.bisect_right(offset) - 1
        if i < 0:
            return None
        start = m.keys()[i]
        end, value = m[start]
        if offset < end:
            return start, end, value
        return None

    def intersects(self, start: int, end: int) -> bool:
        """Whether any segment meets ``[start, end)`` (``start < end``, not checked).

        Hot path (every fast write asks it of the in-flight table): a range at or past the
        end of the last segment, as an append's is, is answered from the last key in O(1)
        C-level steps; otherwise the one segment that could meet the range is found by one
        bisect, since segments are disjoint and in order (the last one starting before
        ``end`` ends furthest).

        Complexity: O(1) for a range past the last segment, else O(log n).
        """
        m = self._map
        if not m:
            return False
        # The last key, as in append.
        last_start = m._list._lists[-1][-1]  # noqa: SLF001
        if last_start < end:
            return bool(_dict_getitem(m, last_start)[0] > start)
        i = m.bisect_left(end) - 1
        if i < 0:
            return False
        return bool(_dict_getitem(m, m.keys()[i])[0] > start)

    def overlapping(self, start: int, end: int) -> Iterator[tuple[int, int, V]]:
        """Segments meeting ``[start, end)``, unclipped, as ``(start, end, value)``, in order.

        Complexity: O(log n + k).

        Raises:
            ValueError: the range is negative or reversed (raised at the call, not lazily).
        """
        _check_range(start, end)
        return self._overlapping(start, end)

    def _overlapping(self, start: int, end: int) -> Iterator[tuple[int, int, V]]:
        if start == end:
            return
        m = self._map
        # Only the last segment starting before `start` can reach into the range; every other
        # one starts inside it, which irange finds without visiting anything else.
        i = m.bisect_left(start) - 1
        if i >= 0:
            s = m.keys()[i]
            e, v = m[s]
            if e > start:
                yield s, e, v
        for s in m.irange(start, end, inclusive=(True, False)):
            e, v = m[s]
            yield s, e, v

    def clipped(self, start: int, end: int) -> Iterator[tuple[int, int, V]]:
        """Segments meeting ``[start, end)``, clipped to it, values split to match.

        Complexity: O(log n + k).

        Raises:
            ValueError: the range is negative or reversed.
        """
        _check_range(start, end)
        return self._clipped(start, end)

    def _clipped(self, start: int, end: int) -> Iterator[tuple[int, int, V]]:
        split = self._split
        for s, e, v in self._overlapping(start, end):
            if s < start:
                v = split(v, start - s)
                s = start
            yield s, min(e, end), v

    def gaps(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """The uncovered subranges of ``[start, end)`` as ``(start, end)``, in order.

        Complexity: O(log n + k).

        Raises:
            ValueError: the range is negative or reversed.
        """
        _check_range(start, end)
        return self._gaps(start, end)

    def _gaps(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        if start == end:
            return
        cursor = start
        for s, e, _ in self._overlapping(start, end):
            if s > cursor:
                yield cursor, s
            cursor = e
        if cursor < end:
            yield cursor, end

    def first_gap_from(self, offset: int, limit: int) -> tuple[int, int] | None:
        """The first uncovered subrange of ``[offset, limit)``, or ``None`` if it is all covered.

        Complexity: O(log n + k); k segments touch end to end before the gap.

        Raises:
            ValueError: the range is negative or reversed.
        """
        _check_range(offset, limit)
        return next(self._gaps(offset, limit), None)

    def next_segment_start(self, offset: int) -> int | None:
        """The smallest segment start ``>= offset``, or ``None`` if no segment starts there.

        Complexity: O(log n).

        Raises:
            ValueError: ``offset`` is negative.
        """
        _check_offset(offset)
        m = self._map
        i = m.bisect_left(offset)
        if i < len(m):
            start: int = m.keys()[i]
            return start
        return None

    def is_covered(self, start: int, end: int) -> bool:
        """Whether every offset of ``[start, end)`` lies in some segment (an empty range does).

        Complexity: O(log n + k).

        Raises:
            ValueError: the range is negative or reversed.
        """
        _check_range(start, end)
        return next(self._gaps(start, end), None) is None

    def covered_bytes(self, start: int, end: int) -> int:
        """How many offsets of ``[start, end)`` lie in some segment.

        Complexity: O(log n + k).

        Raises:
            ValueError: the range is negative or reversed.
        """
        _check_range(start, end)
        covered = 0
        for s, e, _ in self._overlapping(start, end):
            covered += min(e, end) - max(s, start)
        return covered

    # ------------------------------------------------------------------ mutation

    def insert(self, start: int, end: int, value: V) -> None:
        """Add ``[start, end) -> value``; merge with touching neighbours per ``can_merge``.

        Complexity: O(log n).

        Raises:
            ValueError: the range is negative or reversed, or meets an existing segment (the
                map is unchanged).
        """
        _check_range(start, end)
        if start == end:
            return
        m = self._map
        keys = m.keys()
        i = m.bisect_left(start)
        right_start: int | None = None
        if i < len(m):
            right_start = keys[i]
            if right_start < end:
                raise ValueError(f"[{start}, {end}) overlaps the segment at {right_start}")
        new_start = start
        new_value = value
        if i > 0:
            left_start = keys[i - 1]
            left_end, left_value = m[left_start]
            if left_end > start:
                raise ValueError(f"[{start}, {end}) overlaps the segment at {left_start}")
            if left_end == start and self._can_merge(left_value, start - left_start, value):
                new_start = left_start
                new_value = left_value
        new_end = end
        if right_start == end:
            right_end, right_value = m[right_start]
            if self._can_merge(new_value, end - new_start, right_value):
                del m[right_start]
                new_end = right_end
        m[new_start] = (new_end, new_value)
        self._total += end - start

    def append(self, start: int, end: int, value: V) -> bool:
        """Add ``[start, end) -> value`` if it lies at or past the end of the last segment.

        The append fast path (sequential writes): extending the last segment in place is one
        dict update. Returns False, changing nothing, when the range is not past the end.

        Hot path (every write-back append, twice): the last start is read from the sorted
        key list's last sublist and the value set with ``dict.__setitem__`` (the key exists,
        so the key order does not change), which skips ``peekitem`` and ``SortedDict``'s own
        ``__setitem__``: four Python-level calls, about half the cost of the append.

        Complexity: O(1) when it extends the last segment, else O(log n).
        """
        if start >= end:
            return start == end
        m = self._map
        if m:
            # SortedDict keeps its keys in a SortedList whose sublists are in order: the last
            # key is the last sublist's last item (sortedcontainers' own __getitem__(-1)).
            last_start = m._list._lists[-1][-1]  # noqa: SLF001
            last_end, last_value = _dict_getitem(m, last_start)
            if last_end > start:
                return False
            if last_end == start:
                can_merge = self._can_merge
                if (
                    last_value == value
                    if can_merge is _equal
                    else can_merge(last_value, last_end - last_start, value)
                ):
                    _dict_setitem(m, last_start, (end, last_value))
                    self._total += end - start
                    return True
        m[start] = (end, value)
        self._total += end - start
        return True

    def assign(self, start: int, end: int, value: V) -> None:
        """Make ``[start, end)`` map to ``value``, replacing whatever was there, then merge.

        Complexity: O((k + 1) log n).

        Raises:
            ValueError: the range is negative or reversed.
        """
        _check_range(start, end)
        if start == end:
            return
        self._cut(start, end, None)
        self.insert(start, end, value)

    def remove(self, start: int, end: int) -> list[tuple[int, int, V]]:
        """Cut ``[start, end)`` out of every segment.

        Pieces left outside the range keep their (split) values and need no merging: the new
        gap separates them.

        Complexity: O((k + 1) log n).

        Returns:
            The removed pieces as ``(start, end, value)``, clipped to the range, values split
            to match, in order.

        Raises:
            ValueError: the range is negative or reversed.
        """
        _check_range(start, end)
        removed: list[tuple[int, int, V]] = []
        if start != end:
            self._cut(start, end, removed)
        return removed

    def _cut(self, start: int, end: int, removed: list[tuple[int, int, V]] | None) -> None:
        """Remove ``[start, end)`` (non-empty); append the clipped pieces to ``removed``."""
        m = self._map
        split = self._split
        for s, e, v in list(self._overlapping(start, end)):
            if s < start:
                m[s] = (start, v)  # existing key: a plain dict store
                piece_start = start
                piece_value = split(v, start - s)
            else:
                del m[s]
                piece_start = s
                piece_value = v
            if e > end:
                m[end] = (e, split(v, end - s))
                piece_end = end
            else:
                piece_end = e
            self._total -= piece_end - piece_start
            if removed is not None:
                removed.append((piece_start, piece_end, piece_value))

    def update(self, start: int, end: int, fn: Callable[[V], V | None]) -> list[tuple[int, int]]:
        """Replace the value ``v`` of every covered part of ``[start, end)`` with ``fn(v)``.

        Segments are split at the range's edges first, so ``fn`` sees only clipped pieces, and
        merged afterwards. Gaps are left alone. ``fn`` returning ``None`` removes that piece,
        so ``V`` should not itself include ``None``.

        Complexity: O((k + 1) log n); ``fn`` is called k times.

        Returns:
            The ranges removed because ``fn`` returned ``None``, touching ones coalesced.

        Raises:
            ValueError: the range is negative or reversed.
        """
        _check_range(start, end)
        removed: list[tuple[int, int]] = []
        if start == end:
            return removed
        self.split_at(start)
        self.split_at(end)
        m = self._map
        for s in list(m.irange(start, end, inclusive=(True, False))):
            e, v = m[s]
            new_value = fn(v)
            if new_value is None:
                del m[s]
                self._total -= e - s
                if removed and removed[-1][1] == s:
                    removed[-1] = (removed[-1][0], e)
                else:
                    removed.append((s, e))
            else:
                m[s] = (e, new_value)
        self.merge_adjacent(start, end)
        return removed

    def split_at(self, offset: int) -> None:
        """Cut the segment strictly containing ``offset`` (if any) into two at ``offset``.

        This may leave two touching mergeable segments, breaking the merge invariant on
        purpose (gVisor's ``Isolate``); callers restore it with :meth:`merge_adjacent`.

        Complexity: O(log n).

        Raises:
            ValueError: ``offset`` is negative.
        """
        _check_offset(offset)
        m = self._map
        i = m.bisect_right(offset) - 1
        if i < 0:
            return
        start = m.keys()[i]
        end, value = m[start]
        if start < offset < end:
            m[start] = (offset, value)
            m[offset] = (end, self._split(value, offset - start))

    def merge_adjacent(self, start: int, end: int) -> None:
        """Merge touching mergeable segments among those meeting ``[start - 1, end + 1)``.

        The range is widened by one on each side so that the segments touching at its edges
        are considered too; hence ``merge_adjacent(x, x)`` undoes ``split_at(x)`` and, unlike
        every other method, an empty range is not a no-op here.

        Complexity: O(log n + k), plus O(log n) per segment merged away.

        Raises:
            ValueError: the range is negative or reversed.
        """
        _check_range(start, end)
        m = self._map
        can_merge = self._can_merge
        it = self._overlapping(max(start - 1, 0), end + 1)
        first = next(it, None)
        if first is None:
            return
        cur_start, cur_end, cur_value = first
        rest = list(it)  # materialised: the loop below deletes keys
        for s, e, v in rest:
            if cur_end == s and can_merge(cur_value, cur_end - cur_start, v):
                del m[s]
                m[cur_start] = (e, cur_value)
                cur_end = e
            else:
                cur_start, cur_end, cur_value = s, e, v

    def clear(self) -> None:
        """Remove every segment.

        Complexity: O(n).
        """
        self._map.clear()
        self._total = 0

    # ------------------------------------------------------------------ checking

    def check_invariants(self) -> None:
        """Check the invariants in the module docstring.

        Complexity: O(n).

        Raises:
            AssertionError: one does not hold (raised explicitly, so ``python -O`` still checks).
        """
        can_merge = self._can_merge
        total = 0
        prev: tuple[int, int, V] | None = None
        for s, e, v in self.segments():
            if not 0 <= s < e:
                raise AssertionError(f"empty or negative segment [{s}, {e})")
            if prev is not None:
                ps, pe, pv = prev
                if pe > s:
                    raise AssertionError(f"[{ps}, {pe}) overlaps [{s}, {e})")
                if pe == s and can_merge(pv, pe - ps, v):
                    raise AssertionError(f"[{ps}, {pe}) and [{s}, {e}) touch but are not merged")
            total += e - s
            prev = (s, e, v)
        if total != self._total:
            raise AssertionError(f"total is {self._total}, segments sum to {total}")
