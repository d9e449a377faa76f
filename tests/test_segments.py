"""SegmentMap: unit tests, and a stateful comparison against a per-unit model.

With either policy the segmentation is canonical given the per-unit contents (touching units
share a segment exactly when they can merge), so the machine compares ``segments()`` with the
model's runs exactly: that checks contents, merging and splitting at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from aiocache_inode.segments import SegmentMap

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

N = 48  # offsets the machines use: [0, N)

Model = list[int | None]


def offset_map() -> SegmentMap[int]:
    """Values are offsets into something else, as in the cache: split advances them."""
    return SegmentMap(
        split=lambda v, delta: v + delta,
        can_merge=lambda left, length, right: left + length == right,
    )


def unit_values(start: int, end: int, value: int, offsets: bool) -> Iterator[int]:
    """The value each unit of a segment ``[start, end) -> value`` carries."""
    for i in range(start, end):
        yield value + (i - start) if offsets else value


def runs(model: Model, start: int, end: int, offsets: bool) -> list[tuple[int, int, int]]:
    """Maximal mergeable runs of covered units in ``[start, end)``: the canonical segments."""
    out: list[tuple[int, int, int]] = []
    for i in range(start, end):
        v = model[i]
        if v is None:
            continue
        if out:
            s, e, first = out[-1]
            expected = first + (e - s) if offsets else first
            if e == i and v == expected:
                out[-1] = (s, i + 1, first)
                continue
        out.append((i, i + 1, v))
    return out


def expand(segments: list[tuple[int, int, int]], offsets: bool) -> Model:
    model: Model = [None] * N
    for s, e, v in segments:
        for i, uv in zip(range(s, e), unit_values(s, e, v, offsets), strict=True):
            assert model[i] is None, "segments overlap"
            model[i] = uv
    return model


# --------------------------------------------------------------------------- unit tests


def test_empty_map() -> None:
    m: SegmentMap[int] = SegmentMap()
    assert len(m) == 0
    assert not m
    assert m.total() == 0
    assert m.find(0) is None
    assert m.bounds() is None
    assert list(m.gaps(0, 10)) == [(0, 10)]
    assert m.first_gap_from(3, 7) == (3, 7)
    assert m.next_segment_start(0) is None
    assert not m.is_covered(0, 1)
    assert m.is_covered(5, 5)
    m.check_invariants()


def test_insert_merges_equal_neighbours_only() -> None:
    m: SegmentMap[str] = SegmentMap()
    m.insert(0, 10, "a")
    m.insert(20, 30, "a")
    m.insert(10, 20, "a")
    assert list(m.segments()) == [(0, 30, "a")]
    m.insert(30, 40, "b")
    assert list(m.segments()) == [(0, 30, "a"), (30, 40, "b")]
    assert m.total() == 40
    assert m.bounds() == (0, 40)
    m.check_invariants()


def test_insert_into_covered_range_raises_and_changes_nothing() -> None:
    m: SegmentMap[int] = SegmentMap()
    m.insert(10, 20, 1)
    for start, end in [(5, 11), (19, 25), (12, 13), (0, 30), (10, 20)]:
        with pytest.raises(ValueError, match="overlaps"):
            m.insert(start, end, 2)
    assert list(m.segments()) == [(10, 20, 1)]
    assert m.total() == 10


def test_custom_split_and_merge() -> None:
    m = offset_map()
    m.insert(0, 10, 100)
    m.insert(10, 20, 110)  # continues the first in "pool" too: merges
    m.insert(20, 30, 500)  # touches in file only: stays apart
    assert list(m.segments()) == [(0, 20, 100), (20, 30, 500)]
    assert list(m.clipped(5, 25)) == [(5, 20, 105), (20, 25, 500)]
    assert list(m.overlapping(5, 25)) == [(0, 20, 100), (20, 30, 500)]
    assert m.remove(5, 8) == [(5, 8, 105)]
    assert list(m.segments()) == [(0, 5, 100), (8, 20, 108), (20, 30, 500)]
    assert m.find(9) == (8, 20, 108)
    m.check_invariants()


def test_remove_strictly_inside_keeps_both_sides() -> None:
    m: SegmentMap[str] = SegmentMap()
    m.insert(0, 30, "x")
    assert m.remove(10, 20) == [(10, 20, "x")]
    assert list(m.segments()) == [(0, 10, "x"), (20, 30, "x")]
    assert m.total() == 20
    assert m.remove(40, 50) == []
    m.check_invariants()


def test_assign_overwrites_and_merges() -> None:
    m: SegmentMap[str] = SegmentMap()
    m.insert(0, 10, "a")
    m.insert(10, 20, "b")
    m.insert(25, 30, "a")
    m.assign(5, 25, "a")
    assert list(m.segments()) == [(0, 30, "a")]
    assert m.total() == 30
    m.check_invariants()


def test_split_at_then_merge_adjacent_round_trip() -> None:
    m: SegmentMap[str] = SegmentMap()
    m.insert(0, 10, "a")
    m.split_at(4)
    assert list(m.segments()) == [(0, 4, "a"), (4, 10, "a")]
    with pytest.raises(AssertionError, match="not merged"):
        m.check_invariants()
    m.split_at(4)  # already a boundary: nothing to cut
    m.split_at(0)
    m.split_at(10)
    assert len(m) == 2
    m.merge_adjacent(4, 4)
    assert list(m.segments()) == [(0, 10, "a")]
    m.check_invariants()


def test_merge_adjacent_stops_at_unmergeable() -> None:
    m: SegmentMap[str] = SegmentMap()
    m.insert(0, 10, "a")
    m.split_at(5)
    m.insert(10, 20, "b")
    m.split_at(15)
    m.merge_adjacent(0, 20)
    assert list(m.segments()) == [(0, 10, "a"), (10, 20, "b")]


def test_update_removes_and_coalesces() -> None:
    m: SegmentMap[int] = SegmentMap()
    m.insert(0, 10, 1)
    m.insert(10, 20, 2)
    m.insert(30, 40, 1)
    removed = m.update(5, 35, lambda v: None if v in (1, 2) else v)
    assert removed == [(5, 20), (30, 35)]
    assert list(m.segments()) == [(0, 5, 1), (35, 40, 1)]
    assert m.total() == 10
    # Mapping both sides to the same value merges them with the untouched neighbours.
    m.insert(5, 35, 3)
    assert m.update(0, 40, lambda v: 7) == []
    assert list(m.segments()) == [(0, 40, 7)]
    m.check_invariants()


def test_queries() -> None:
    m: SegmentMap[str] = SegmentMap()
    m.insert(10, 20, "a")
    m.insert(20, 30, "b")
    m.insert(40, 50, "c")
    assert m.find(9) is None
    assert m.find(10) == (10, 20, "a")
    assert m.find(29) == (20, 30, "b")
    assert m.find(30) is None
    assert list(m.gaps(0, 60)) == [(0, 10), (30, 40), (50, 60)]
    assert list(m.gaps(15, 45)) == [(30, 40)]
    assert m.first_gap_from(10, 60) == (30, 40)
    assert m.first_gap_from(10, 30) is None
    assert m.next_segment_start(11) == 20
    assert m.next_segment_start(20) == 20
    assert m.next_segment_start(41) is None
    assert m.is_covered(12, 28)
    assert not m.is_covered(12, 31)
    assert m.covered_bytes(15, 45) == 20
    assert m.total() == 30


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.insert(-1, 3, 0),
        lambda m: m.insert(5, 3, 0),
        lambda m: m.assign(5, 3, 0),
        lambda m: m.remove(-2, -1),
        lambda m: m.update(4, 2, lambda v: v),
        lambda m: m.overlapping(3, 2),
        lambda m: m.clipped(-1, 2),
        lambda m: m.gaps(3, 2),
        lambda m: m.first_gap_from(3, 2),
        lambda m: m.is_covered(3, 2),
        lambda m: m.covered_bytes(-3, 2),
        lambda m: m.merge_adjacent(3, 2),
        lambda m: m.find(-1),
        lambda m: m.next_segment_start(-1),
        lambda m: m.split_at(-1),
    ],
)
def test_invalid_ranges_raise_eagerly(call: Callable[[SegmentMap[int]], object]) -> None:
    m: SegmentMap[int] = SegmentMap()
    m.insert(0, 10, 0)
    with pytest.raises(ValueError, match=r"invalid range|negative offset"):
        call(m)
    assert list(m.segments()) == [(0, 10, 0)]


def test_empty_ranges_are_noops() -> None:
    m: SegmentMap[int] = SegmentMap()
    m.insert(0, 10, 0)
    m.insert(5, 5, 1)  # inside a segment, but empty: not an overlap
    m.assign(5, 5, 1)
    assert m.remove(5, 5) == []
    assert m.update(5, 5, lambda v: None) == []
    assert list(m.overlapping(5, 5)) == []
    assert list(m.clipped(5, 5)) == []
    assert list(m.gaps(20, 20)) == []
    assert m.first_gap_from(20, 20) is None
    assert m.covered_bytes(5, 5) == 0
    assert list(m.segments()) == [(0, 10, 0)]


def test_clear() -> None:
    m: SegmentMap[int] = SegmentMap()
    m.insert(0, 10, 0)
    m.clear()
    assert not m
    assert m.total() == 0
    m.check_invariants()


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda m: m._map.__setitem__(50, (50, 0)), "empty"),
        (lambda m: m._map.__setitem__(5, (15, 1)), "overlaps"),
        (lambda m: m._map.__setitem__(10, (12, 0)), "not merged"),
        (lambda m: setattr(m, "_total", 3), "total"),
    ],
)
def test_check_invariants_detects_corruption(
    corrupt: Callable[[SegmentMap[int]], object], message: str
) -> None:
    m: SegmentMap[int] = SegmentMap()
    m.insert(0, 10, 0)
    m.insert(20, 30, 1)
    m.check_invariants()
    corrupt(m)
    with pytest.raises(AssertionError, match=message):
        m.check_invariants()


# --------------------------------------------------------------------------- stateful

offsets_st = st.integers(0, N)
values_st = st.integers(0, 2)
# update() functions for the flag policy, as tables: value -> new value or None (remove).
tables_st = st.fixed_dictionaries({v: st.none() | values_st for v in range(3)})


class SegmentMapMachine(RuleBasedStateMachine):
    """Applies each operation to a SegmentMap and to one value per unit; compares after each."""

    offsets = False

    def __init__(self) -> None:
        super().__init__()
        self.map: SegmentMap[int] = offset_map() if self.offsets else SegmentMap()
        self.model: Model = [None] * N

    def _range(self, a: int, b: int) -> tuple[int, int]:
        return (a, b) if a <= b else (b, a)

    def _value(self, v: int) -> int:
        # Offset values far apart so independent inserts are rarely contiguous by chance, but
        # sometimes (v == 0 continues at the unit's own index) they are.
        return v * 1000 if self.offsets else v

    @rule(a=offsets_st, b=offsets_st, v=values_st)
    def insert(self, a: int, b: int, v: int) -> None:
        start, end = self._range(a, b)
        value = self._value(v) + (start if self.offsets and v == 0 else 0)
        note(f"insert({start}, {end}, {value})")
        if any(x is not None for x in self.model[start:end]):
            before = list(self.map.segments())
            with pytest.raises(ValueError, match="overlaps"):
                self.map.insert(start, end, value)
            assert list(self.map.segments()) == before
            return
        self.map.insert(start, end, value)
        for i, uv in zip(
            range(start, end), unit_values(start, end, value, self.offsets), strict=True
        ):
            self.model[i] = uv

    @rule(a=offsets_st, b=offsets_st, v=values_st)
    def assign(self, a: int, b: int, v: int) -> None:
        start, end = self._range(a, b)
        value = self._value(v) + (start if self.offsets and v == 0 else 0)
        note(f"assign({start}, {end}, {value})")
        self.map.assign(start, end, value)
        for i, uv in zip(
            range(start, end), unit_values(start, end, value, self.offsets), strict=True
        ):
            self.model[i] = uv

    @rule(a=offsets_st, b=offsets_st)
    def remove(self, a: int, b: int) -> None:
        start, end = self._range(a, b)
        note(f"remove({start}, {end})")
        expected = runs(self.model, start, end, self.offsets)
        removed = self.map.remove(start, end)
        # Removed pieces are clipped segments, which are the canonical runs of the range.
        assert removed == expected
        for i in range(start, end):
            self.model[i] = None

    @precondition(lambda self: not self.offsets)
    @rule(a=offsets_st, b=offsets_st, table=tables_st)
    def update(self, a: int, b: int, table: dict[int, int | None]) -> None:
        start, end = self._range(a, b)
        note(f"update({start}, {end}, {table})")
        removed = self.map.update(start, end, table.__getitem__)
        expected: list[tuple[int, int]] = []
        for i in range(start, end):
            old = self.model[i]
            if old is None:
                continue
            self.model[i] = table[old]
            if self.model[i] is None:
                if expected and expected[-1][1] == i:
                    expected[-1] = (expected[-1][0], i + 1)
                else:
                    expected.append((i, i + 1))
        assert removed == expected

    @precondition(lambda self: self.offsets)
    @rule(a=offsets_st, b=offsets_st, shift=st.sampled_from([0, 1, 2000]), drop=st.booleans())
    def update_offsets(self, a: int, b: int, shift: int, drop: bool) -> None:
        start, end = self._range(a, b)
        note(f"update({start}, {end}, shift={shift}, drop={drop})")
        removed = self.map.update(start, end, lambda v: None if drop else v + shift)
        expected = [(s, e) for s, e, _ in runs(self.model, start, end, False)] if drop else []
        for i in range(start, end):
            v = self.model[i]
            if v is not None:
                self.model[i] = None if drop else v + shift
        if drop:
            # Runs of covered units, whatever their values, coalesce in the result.
            merged: list[tuple[int, int]] = []
            for s, e in expected:
                if merged and merged[-1][1] == s:
                    merged[-1] = (merged[-1][0], e)
                else:
                    merged.append((s, e))
            expected = merged
        assert removed == expected

    @rule(x=offsets_st)
    def split_then_merge(self, x: int) -> None:
        note(f"split_at({x}); merge_adjacent({x}, {x})")
        before = list(self.map.segments())
        inside = any(s < x < e for s, e, _ in before)
        self.map.split_at(x)
        assert len(self.map) == len(before) + inside
        assert expand(list(self.map.segments()), self.offsets) == self.model
        if inside:
            found = self.map.find(x)
            assert found is not None
            assert found[0] == x
        self.map.merge_adjacent(x, x)
        assert list(self.map.segments()) == before

    @rule(a=offsets_st, b=offsets_st)
    def merge_adjacent_is_noop_when_merged(self, a: int, b: int) -> None:
        start, end = self._range(a, b)
        before = list(self.map.segments())
        self.map.merge_adjacent(start, end)
        assert list(self.map.segments()) == before

    @precondition(lambda self: len(self.map) > 0)
    @rule(data=st.data())
    def clear_sometimes(self, data: st.DataObject) -> None:
        if data.draw(st.integers(0, 9)) == 0:
            note("clear()")
            self.map.clear()
            self.model = [None] * N

    @rule(a=offsets_st, b=offsets_st)
    def range_queries(self, a: int, b: int) -> None:
        start, end = self._range(a, b)
        covered = [i for i in range(start, end) if self.model[i] is not None]
        canonical = runs(self.model, 0, N, self.offsets)
        # An empty range meets nothing, even inside a segment.
        meeting = [(s, e, v) for s, e, v in canonical if start < end and s < end and start < e]
        assert list(self.map.overlapping(start, end)) == meeting
        assert list(self.map.clipped(start, end)) == runs(self.model, start, end, self.offsets)
        gaps: list[tuple[int, int]] = []
        for i in range(start, end):
            if self.model[i] is not None:
                continue
            if gaps and gaps[-1][1] == i:
                gaps[-1] = (gaps[-1][0], i + 1)
            else:
                gaps.append((i, i + 1))
        assert list(self.map.gaps(start, end)) == gaps
        assert self.map.first_gap_from(start, end) == (gaps[0] if gaps else None)
        assert self.map.is_covered(start, end) == (not gaps)
        assert self.map.covered_bytes(start, end) == len(covered)

    @rule(x=offsets_st)
    def point_queries(self, x: int) -> None:
        canonical = runs(self.model, 0, N, self.offsets)
        containing = [seg for seg in canonical if seg[0] <= x < seg[1]]
        assert self.map.find(x) == (containing[0] if containing else None)
        starts = [s for s, _, _ in canonical if s >= x]
        assert self.map.next_segment_start(x) == (starts[0] if starts else None)

    @invariant()
    def matches_model(self) -> None:
        self.map.check_invariants()
        canonical = runs(self.model, 0, N, self.offsets)
        assert list(self.map.segments()) == canonical
        assert len(self.map) == len(canonical)
        assert bool(self.map) == bool(canonical)
        assert self.map.total() == sum(v is not None for v in self.model)
        assert self.map.bounds() == ((canonical[0][0], canonical[-1][1]) if canonical else None)


class OffsetSegmentMapMachine(SegmentMapMachine):
    offsets = True


# These machines are cheap: run more of them than the profile's default, never fewer.
_settings = settings(
    max_examples=max(150, settings().max_examples),
    stateful_step_count=max(50, settings().stateful_step_count),
)
TestSegmentMapMachine = SegmentMapMachine.TestCase
TestSegmentMapMachine.settings = _settings
TestOffsetSegmentMapMachine = OffsetSegmentMapMachine.TestCase
TestOffsetSegmentMapMachine.settings = _settings


@given(
    st.lists(st.tuples(st.integers(0, 100), st.integers(1, 20)), max_size=6),
    st.lists(st.tuples(st.integers(0, 130), st.integers(1, 30)), min_size=1, max_size=20),
)
def test_intersects_agrees_with_overlapping(
    segs: list[tuple[int, int]], queries: list[tuple[int, int]]
) -> None:
    m: SegmentMap[int] = SegmentMap()
    for i, (s, length) in enumerate(segs):
        if next(iter(m.overlapping(s, s + length)), None) is None:
            m.insert(s, s + length, i)
    for s, length in queries:
        want = next(iter(m.overlapping(s, s + length)), None) is not None
        assert m.intersects(s, s + length) == want, (list(m.segments()), s, length)
