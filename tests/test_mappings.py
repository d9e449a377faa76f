"""MappingSet: newly mapped / unmapped reports, invalidation, and a per-offset model."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from aiocache_inode.mappings import Mapping, MappingSet, MappingSpace
from aiocache_inode.ranges import PAGE_SIZE, Range

P = PAGE_SIZE
N = 32  # file offsets the machine uses: [0, N)
ADDRS = 64  # addresses the machine maps at: [0, ADDRS)


class FakeSpace:
    """An address space that records what it was told to invalidate."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[tuple[Range, bool]] = []

    def invalidate(self, addr_range: Range, private: bool) -> None:
        self.calls.append((addr_range, private))

    def __repr__(self) -> str:
        return f"FakeSpace({self.name})"


# Statically check that FakeSpace satisfies the protocol.
_space_check: MappingSpace = FakeSpace("check")


# --------------------------------------------------------------------------- unit tests


def test_add_reports_newly_mapped_only() -> None:
    ms = MappingSet()
    a, b = FakeSpace("a"), FakeSpace("b")
    assert ms.add_mapping(a, Range(0x10000, 0x10000 + 2 * P), P, True) == [Range(P, 3 * P)]
    assert ms.add_mapping(b, Range(0, 4 * P), 0, False) == [Range(0, P), Range(3 * P, 4 * P)]
    assert ms.mapped_bytes() == 4 * P
    assert ms.mapped_ranges(0, 8 * P) == [Range(0, 4 * P)]
    assert ms.unmapped_ranges(0, 8 * P) == [Range(4 * P, 8 * P)]
    assert ms.writable_ranges(0, 8 * P) == [Range(P, 3 * P)]
    assert ms.is_mapped(0)
    assert not ms.is_mapped(4 * P)
    ms.check_invariants()


def test_remove_reports_fully_unmapped_only() -> None:
    ms = MappingSet()
    a, b = FakeSpace("a"), FakeSpace("b")
    ms.add_mapping(a, Range(0, 4 * P), 0, True)
    ms.add_mapping(b, Range(P, 2 * P), P, False)
    assert ms.remove_mapping(a, Range(0, 4 * P), 0, True) == [Range(0, P), Range(2 * P, 4 * P)]
    assert ms.mapped_ranges(0, 4 * P) == [Range(P, 2 * P)]
    assert ms.remove_mapping(b, Range(P, 2 * P), P, False) == [Range(P, 2 * P)]
    assert not ms
    ms.check_invariants()


def test_adjacent_pieces_of_one_mapping_merge() -> None:
    ms = MappingSet()
    a = FakeSpace("a")
    ms.add_mapping(a, Range(0, P), 0, True)
    ms.add_mapping(a, Range(P, 2 * P), P, True)  # continues the first mapping exactly
    assert len(ms) == 1
    # Same space, but the addresses do not continue: a different entry, no merge.
    ms.add_mapping(a, Range(10 * P, 11 * P), 2 * P, True)
    assert len(ms) == 2
    # Partial removal splits, and the remaining pieces keep their entries.
    assert ms.remove_mapping(a, Range(P // 2, P), P // 2, True) == [Range(P // 2, P)]
    assert [(s, e) for s, e, _ in ms.segments()] == [(0, P // 2), (P, 2 * P), (2 * P, 3 * P)]
    ms.check_invariants()


def test_remove_absent_mapping_raises_and_changes_nothing() -> None:
    ms = MappingSet()
    a, b = FakeSpace("a"), FakeSpace("b")
    ms.add_mapping(a, Range(0, 2 * P), 0, True)
    ms.add_mapping(a, Range(3 * P, 4 * P), 3 * P, True)  # the same entry, after a gap
    before = list(ms.segments())
    bad = [
        (a, Range(0, 4 * P), 0, True),  # a hole in the middle
        (a, Range(2 * P, 4 * P), 2 * P, True),  # a hole at the start
        (b, Range(0, P), 0, True),  # other space
        (a, Range(0, P), 0, False),  # other writability
        (a, Range(P, 2 * P), 0, True),  # other addresses
        (a, Range(0, 3 * P), 0, True),  # runs past the mapping
        (a, Range(5 * P, 6 * P), 5 * P, True),  # nothing mapped there
    ]
    for space, ar, offset, writable in bad:
        with pytest.raises(ValueError, match="does not map"):
            ms.remove_mapping(space, ar, offset, writable)
        assert list(ms.segments()) == before


def test_invalidate_clips_and_translates_addresses() -> None:
    ms = MappingSet()
    a, b = FakeSpace("a"), FakeSpace("b")
    ms.add_mapping(a, Range(0x100000, 0x100000 + 4 * P), 0, True)
    ms.add_mapping(b, Range(0x200000, 0x200000 + P), 3 * P, False)
    ms.invalidate(Range(2 * P, 8 * P), True)
    assert a.calls == [
        (Range(0x100000 + 2 * P, 0x100000 + 3 * P), True),
        (Range(0x100000 + 3 * P, 0x100000 + 4 * P), True),
    ]
    assert b.calls == [(Range(0x200000, 0x200000 + P), True)]
    a.calls.clear()
    b.calls.clear()
    ms.invalidate(Range(5 * P, 6 * P), False)
    assert a.calls == b.calls == []
    ms.invalidate_all(False)
    assert a.calls == [
        (Range(0x100000, 0x100000 + 3 * P), False),
        (Range(0x100000 + 3 * P, 0x100000 + 4 * P), False),
    ]
    assert b.calls == [(Range(0x200000, 0x200000 + P), False)]


def test_empty_and_invalid() -> None:
    ms = MappingSet()
    a = FakeSpace("a")
    assert ms.add_mapping(a, Range(5, 5), 0, True) == []
    assert ms.remove_mapping(a, Range(5, 5), 0, True) == []
    assert not ms
    with pytest.raises(ValueError, match="negative"):
        ms.add_mapping(a, Range(0, P), -P, True)
    with pytest.raises(ValueError, match="negative"):
        ms.remove_mapping(a, Range(0, P), -P, True)


def test_mapping_entry_equality() -> None:
    a, b = FakeSpace("a"), FakeSpace("b")
    assert Mapping(a, 5, True) == Mapping(a, 5, True)
    assert Mapping(a, 5, True) != Mapping(b, 5, True)
    assert len({Mapping(a, 5, True), Mapping(a, 5, False), Mapping(a, 6, True)}) == 3
    assert Mapping(a, 5, True).addr_range(10, 20) == Range(15, 25)


# --------------------------------------------------------------------------- stateful

# One entry in the model: (space index, delta = address - offset, writable).
Entry = tuple[int, int, bool]
Model = list[frozenset[Entry]]

offsets_st = st.integers(0, N)
spaces_st = st.integers(0, 2)


def runs(units: list[int]) -> list[Range]:
    """Sorted unit offsets joined into ranges."""
    out: list[Range] = []
    for i in units:
        if out and out[-1].end == i:
            out[-1] = Range(out[-1].start, i + 1)
        else:
            out.append(Range(i, i + 1))
    return out


class MappingSetMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.spaces = [FakeSpace(str(i)) for i in range(3)]
        self.index = {id(space): i for i, space in enumerate(self.spaces)}
        self.set = MappingSet()
        self.model: Model = [frozenset()] * N

    def _entry(self, mapping: Mapping) -> Entry:
        return (self.index[id(mapping.space)], mapping.delta, mapping.writable)

    def _canonical(self) -> list[tuple[int, int, frozenset[Entry]]]:
        out: list[tuple[int, int, frozenset[Entry]]] = []
        for i, value in enumerate(self.model):
            if not value:
                continue
            if out and out[-1][1] == i and out[-1][2] == value:
                out[-1] = (out[-1][0], i + 1, value)
            else:
                out.append((i, i + 1, value))
        return out

    @rule(
        space=spaces_st,
        a=offsets_st,
        b=offsets_st,
        addr=st.integers(0, ADDRS - N),
        writable=st.booleans(),
    )
    def add_mapping(self, space: int, a: int, b: int, addr: int, writable: bool) -> None:
        start, end = min(a, b), max(a, b)
        ar = Range(addr, addr + end - start)
        note(f"add_mapping(space {space}, {ar}, {start}, {writable})")
        newly = self.set.add_mapping(self.spaces[space], ar, start, writable)
        assert newly == runs([i for i in range(start, end) if not self.model[i]])
        entry = (space, addr - start, writable)
        for i in range(start, end):
            self.model[i] = self.model[i] | {entry}

    @rule(
        space=spaces_st,
        a=offsets_st,
        b=offsets_st,
        addr=st.integers(0, ADDRS - N),
        writable=st.booleans(),
    )
    def remove_arbitrary(self, space: int, a: int, b: int, addr: int, writable: bool) -> None:
        start, end = min(a, b), max(a, b)
        ar = Range(addr, addr + end - start)
        entry = (space, addr - start, writable)
        present = all(entry in self.model[i] for i in range(start, end))
        note(f"remove_mapping(space {space}, {ar}, {start}, {writable}), present={present}")
        if not present:
            before = list(self.set.segments())
            with pytest.raises(ValueError, match="does not map"):
                self.set.remove_mapping(self.spaces[space], ar, start, writable)
            assert list(self.set.segments()) == before
            return
        self._remove(entry, start, end)

    @precondition(lambda self: any(self.model))
    @rule(data=st.data())
    def remove_existing(self, data: st.DataObject) -> None:
        # Random removals rarely hit a present mapping; draw one that is present.
        unit = data.draw(st.sampled_from([i for i, v in enumerate(self.model) if v]))
        entry = data.draw(st.sampled_from(sorted(self.model[unit])))
        lo = unit
        while lo > 0 and entry in self.model[lo - 1]:
            lo -= 1
        hi = unit + 1
        while hi < N and entry in self.model[hi]:
            hi += 1
        start = data.draw(st.integers(lo, hi))
        end = data.draw(st.integers(start, hi))
        self._remove(entry, start, end)

    def _remove(self, entry: Entry, start: int, end: int) -> None:
        space, delta, writable = entry
        ar = Range(start + delta, end + delta)
        note(f"remove_mapping(space {space}, {ar}, {start}, {writable})")
        unmapped = self.set.remove_mapping(self.spaces[space], ar, start, writable)
        for i in range(start, end):
            self.model[i] = self.model[i] - {entry}
        assert unmapped == runs([i for i in range(start, end) if not self.model[i]])

    def _expected_calls(
        self, start: int, end: int, private: bool
    ) -> Counter[tuple[int, int, bool]]:
        # Per address unit: each (mapping, offset) in the range is invalidated exactly once.
        expected: Counter[tuple[int, int, bool]] = Counter()
        for i in range(start, end):
            for space, delta, _ in self.model[i]:
                expected[(space, i + delta, private)] += 1
        return expected

    def _actual_calls(self) -> Counter[tuple[int, int, bool]]:
        actual: Counter[tuple[int, int, bool]] = Counter()
        for index, space in enumerate(self.spaces):
            for addr_range, private in space.calls:
                assert addr_range, "empty invalidation"
                for addr in range(addr_range.start, addr_range.end):
                    actual[(index, addr, private)] += 1
            space.calls.clear()
        return actual

    @rule(a=offsets_st, b=offsets_st, private=st.booleans())
    def invalidate(self, a: int, b: int, private: bool) -> None:
        start, end = min(a, b), max(a, b)
        note(f"invalidate([{start}, {end}), {private})")
        self.set.invalidate(Range(start, end), private)
        assert self._actual_calls() == self._expected_calls(start, end, private)

    @rule(private=st.booleans())
    def invalidate_all(self, private: bool) -> None:
        self.set.invalidate_all(private)
        assert self._actual_calls() == self._expected_calls(0, N, private)

    @rule(a=offsets_st, b=offsets_st)
    def range_queries(self, a: int, b: int) -> None:
        start, end = min(a, b), max(a, b)
        units = range(start, end)
        assert self.set.mapped_ranges(start, end) == runs([i for i in units if self.model[i]])
        assert self.set.unmapped_ranges(start, end) == runs([i for i in units if not self.model[i]])
        assert self.set.writable_ranges(start, end) == runs(
            [i for i in units if any(w for _, _, w in self.model[i])]
        )

    @rule(x=st.integers(0, N - 1))
    def is_mapped(self, x: int) -> None:
        assert self.set.is_mapped(x) == bool(self.model[x])

    @invariant()
    def matches_model(self) -> None:
        self.set.check_invariants()
        got = [
            (s, e, frozenset(self._entry(m) for m in value)) for s, e, value in self.set.segments()
        ]
        assert got == self._canonical()
        assert self.set.mapped_bytes() == sum(bool(v) for v in self.model)


TestMappingSetMachine = MappingSetMachine.TestCase
TestMappingSetMachine.settings = settings(
    max_examples=max(150, settings().max_examples),
    stateful_step_count=max(50, settings().stateful_step_count),
)
