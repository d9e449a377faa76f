"""DirtySet: the seed's dirty_set_test, each operation's rule, and a per-byte model."""

from __future__ import annotations

import pytest
from hypothesis import note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from aiocache_inode.dirty import DirtySet
from aiocache_inode.ranges import PAGE_SIZE

P = PAGE_SIZE
N = 64  # bytes the machine uses: [0, N); ranges need not be page-aligned

# Per byte: None (clean), False (dirty), True (dirty and kept).
Model = list[bool | None]


def canonical(model: Model, start: int, end: int) -> list[tuple[int, int, bool]]:
    """Maximal runs of dirty bytes in ``[start, end)`` with equal keep flags."""
    out: list[tuple[int, int, bool]] = []
    for i in range(start, end):
        keep = model[i]
        if keep is None:
            continue
        if out and out[-1][1] == i and out[-1][2] == keep:
            out[-1] = (out[-1][0], i + 1, keep)
        else:
            out.append((i, i + 1, keep))
    return out


# --------------------------------------------------------------------------- unit tests


def test_dirty_set_seed() -> None:
    # The seed's dirty_set_test: mark [0, 2 pages) dirty, keep-dirty [1, 2), mark [0, 2) clean.
    d = DirtySet()
    d.mark_dirty(0, 2 * P)
    d.keep_dirty(P, 2 * P)
    d.mark_clean(0, 2 * P)
    assert list(d.segments()) == [(P, 2 * P, True)]
    d.check_invariants()


def test_mark_dirty_never_clears_keep() -> None:
    d = DirtySet()
    d.keep_dirty(10, 20)
    d.mark_dirty(0, 30)
    assert list(d.segments()) == [(0, 10, False), (10, 20, True), (20, 30, False)]
    assert d.total() == 30


def test_keep_clean_removes_kept() -> None:
    d = DirtySet()
    d.mark_dirty(0, 30)
    d.keep_dirty(10, 20)
    d.keep_clean(5, 15)
    assert list(d.segments()) == [(0, 5, False), (15, 20, True), (20, 30, False)]


def test_allow_clean_cleans_nothing_then_mark_clean_does() -> None:
    d = DirtySet()
    d.mark_dirty(0, 10)
    d.keep_dirty(3, 7)
    d.allow_clean(0, 10)
    assert list(d.segments()) == [(0, 10, False)]
    d.mark_clean(0, 10)
    assert not d
    assert d.total() == 0


def test_dirty_ranges_are_clipped() -> None:
    d = DirtySet()
    d.mark_dirty(100, 5000)
    d.keep_dirty(4096, 4200)
    assert d.dirty_ranges(0, 4100) == [(100, 4096, False), (4096, 4100, True)]
    assert d.dirty_ranges(4150, 4150) == []
    assert d.dirty_ranges(6000, 7000) == []


def test_invalid_range_raises() -> None:
    d = DirtySet()
    for method in (d.mark_dirty, d.keep_dirty, d.mark_clean, d.keep_clean, d.allow_clean):
        with pytest.raises(ValueError, match="invalid range"):
            method(5, 4)
    with pytest.raises(ValueError, match="invalid range"):
        d.dirty_ranges(-1, 4)


# --------------------------------------------------------------------------- stateful

offsets_st = st.integers(0, N)


class DirtySetMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dirty = DirtySet()
        self.model: Model = [None] * N

    @rule(a=offsets_st, b=offsets_st)
    def mark_dirty(self, a: int, b: int) -> None:
        start, end = min(a, b), max(a, b)
        note(f"mark_dirty({start}, {end})")
        self.dirty.mark_dirty(start, end)
        for i in range(start, end):
            if self.model[i] is None:
                self.model[i] = False

    @rule(a=offsets_st, b=offsets_st)
    def keep_dirty(self, a: int, b: int) -> None:
        start, end = min(a, b), max(a, b)
        note(f"keep_dirty({start}, {end})")
        self.dirty.keep_dirty(start, end)
        for i in range(start, end):
            self.model[i] = True

    @rule(a=offsets_st, b=offsets_st)
    def mark_clean(self, a: int, b: int) -> None:
        start, end = min(a, b), max(a, b)
        note(f"mark_clean({start}, {end})")
        self.dirty.mark_clean(start, end)
        for i in range(start, end):
            if self.model[i] is False:
                self.model[i] = None

    @rule(a=offsets_st, b=offsets_st)
    def keep_clean(self, a: int, b: int) -> None:
        start, end = min(a, b), max(a, b)
        note(f"keep_clean({start}, {end})")
        self.dirty.keep_clean(start, end)
        for i in range(start, end):
            self.model[i] = None

    @rule(a=offsets_st, b=offsets_st)
    def allow_clean(self, a: int, b: int) -> None:
        start, end = min(a, b), max(a, b)
        note(f"allow_clean({start}, {end})")
        self.dirty.allow_clean(start, end)
        for i in range(start, end):
            if self.model[i] is not None:
                self.model[i] = False

    @rule(a=offsets_st, b=offsets_st)
    def dirty_ranges(self, a: int, b: int) -> None:
        start, end = min(a, b), max(a, b)
        assert self.dirty.dirty_ranges(start, end) == canonical(self.model, start, end)

    @invariant()
    def matches_model(self) -> None:
        self.dirty.check_invariants()
        assert list(self.dirty.segments()) == canonical(self.model, 0, N)
        assert self.dirty.total() == sum(k is not None for k in self.model)


TestDirtySetMachine = DirtySetMachine.TestCase
TestDirtySetMachine.settings = settings(
    max_examples=max(150, settings().max_examples),
    stateful_step_count=max(50, settings().stateful_step_count),
)
