"""CacheMap: page alignment, pool offsets, drop/truncate extents, and a per-page model."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from aiocache_inode.cache import CacheMap
from aiocache_inode.ranges import PAGE_SIZE

if TYPE_CHECKING:
    from collections.abc import Callable

P = PAGE_SIZE
PAGES = 32  # file pages the machine uses: [0, PAGES)

# Per file page, the pool page caching it (None: not cached).
Model = list[int | None]


def canonical(model: Model, first: int, last: int) -> list[tuple[int, int, int]]:
    """Maximal runs of pages in ``[first, last)`` contiguous in file and pool, in bytes."""
    out: list[tuple[int, int, int]] = []
    for page in range(first, last):
        pool_page = model[page]
        if pool_page is None:
            continue
        if out:
            s, e, pool = out[-1]
            if e == page * P and pool + (e - s) == pool_page * P:
                out[-1] = (s, e + P, pool)
                continue
        out.append((page * P, (page + 1) * P, pool_page * P))
    return out


# --------------------------------------------------------------------------- unit tests


def test_merges_only_when_contiguous_in_file_and_pool() -> None:
    c = CacheMap()
    c.insert(0, P, 10 * P)
    c.insert(P, 2 * P, 11 * P)  # contiguous in both: one extent
    c.insert(2 * P, 3 * P, 20 * P)  # contiguous in file only
    c.insert(3 * P, 4 * P, 12 * P)  # continues [0, 2P) in the pool only
    assert list(c.segments()) == [
        (0, 2 * P, 10 * P),
        (2 * P, 3 * P, 20 * P),
        (3 * P, 4 * P, 12 * P),
    ]
    c.check_invariants()


def test_pool_offset() -> None:
    c = CacheMap()
    c.insert(2 * P, 5 * P, 7 * P)
    assert c.pool_offset(2 * P - 1) is None
    assert c.pool_offset(2 * P) == (2 * P, 5 * P, 7 * P)
    assert c.pool_offset(3 * P + 17) == (2 * P, 5 * P, 8 * P + 17)
    assert c.pool_offset(5 * P) is None


def test_drop_returns_freed_extents_and_splits() -> None:
    c = CacheMap()
    c.insert(0, 4 * P, 100 * P)
    c.insert(4 * P, 6 * P, 0)
    assert c.drop(P, 5 * P) == [(101 * P, 3 * P), (0, P)]
    assert list(c.segments()) == [(0, P, 100 * P), (5 * P, 6 * P, P)]
    assert c.total() == 2 * P
    c.check_invariants()


def test_truncate_pages() -> None:
    c = CacheMap()
    c.insert(0, 3 * P, 10 * P)
    c.insert(5 * P, 6 * P, 50 * P)
    assert c.truncate_pages(8 * P) == []
    assert c.truncate_pages(2 * P) == [(12 * P, P), (50 * P, P)]
    assert list(c.segments()) == [(0, 2 * P, 10 * P)]
    assert c.truncate_pages(0) == [(10 * P, 2 * P)]
    assert not c
    assert c.truncate_pages(0) == []


def test_assign_replaces() -> None:
    c = CacheMap()
    c.insert(0, 3 * P, 10 * P)
    c.assign(P, 2 * P, 11 * P)  # same pool page as before: re-merges
    assert list(c.segments()) == [(0, 3 * P, 10 * P)]
    c.assign(P, 2 * P, 40 * P)
    assert list(c.segments()) == [(0, P, 10 * P), (P, 2 * P, 40 * P), (2 * P, 3 * P, 12 * P)]
    c.check_invariants()


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.insert(1, P, 0),
        lambda c: c.insert(0, P + 1, 0),
        lambda c: c.insert(0, P, 5),
        lambda c: c.assign(0, P - 1, 0),
        lambda c: c.assign(0, P, 3),
        lambda c: c.remove(0, 10),
        lambda c: c.drop(7, P),
        lambda c: c.truncate_pages(P + 1),
        lambda c: c.truncate_pages(-P),
        lambda c: c.split_at(P // 2),
    ],
)
def test_requires_page_alignment(call: Callable[[CacheMap], object]) -> None:
    c = CacheMap()
    c.insert(0, 2 * P, 4 * P)
    with pytest.raises(ValueError, match=r"page-aligned|negative"):
        call(c)
    assert list(c.segments()) == [(0, 2 * P, 4 * P)]


def test_check_invariants_detects_overlapping_pool_extents() -> None:
    c = CacheMap()
    c.insert(0, 2 * P, 10 * P)
    c.insert(5 * P, 6 * P, 11 * P)  # pool page 11 is already used by file page 1
    with pytest.raises(AssertionError, match="pool extents overlap"):
        c.check_invariants()


def test_check_invariants_detects_unaligned_segment() -> None:
    c = CacheMap()
    c._map[3 * P] = (3 * P + 5, 0)
    c._total = 5
    with pytest.raises(AssertionError, match="not page-aligned"):
        c.check_invariants()


# --------------------------------------------------------------------------- stateful

pages_st = st.integers(0, PAGES)
# Pool placement: file page p with bias b lives at pool page p + 1000 * b, so pages with the
# same bias are pool-contiguous exactly when file-contiguous, and no two file pages can ever
# share a pool page. "fresh" uses a bump allocator far above, never reused.
placement_st = st.sampled_from(["b0", "b1", "b2", "fresh"])


class CacheMapMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.cache = CacheMap()
        self.model: Model = [None] * PAGES
        self.next_fresh = 10_000

    def _pool_page(self, first: int, last: int, placement: str) -> int:
        if placement == "fresh":
            pool_page = self.next_fresh
            self.next_fresh += last - first
            return pool_page
        return first + 1000 * int(placement[1])

    def _freed(self, first: int, last: int) -> list[tuple[int, int]]:
        return [(pool, e - s) for s, e, pool in canonical(self.model, first, last)]

    @rule(a=pages_st, b=pages_st, placement=placement_st)
    def insert(self, a: int, b: int, placement: str) -> None:
        first, last = min(a, b), max(a, b)
        pool_page = self._pool_page(first, last, placement)
        note(f"insert(pages [{first}, {last}) at pool page {pool_page})")
        if any(x is not None for x in self.model[first:last]):
            with pytest.raises(ValueError, match="overlaps"):
                self.cache.insert(first * P, last * P, pool_page * P)
            return
        self.cache.insert(first * P, last * P, pool_page * P)
        for i, page in enumerate(range(first, last)):
            self.model[page] = pool_page + i

    @rule(a=pages_st, b=pages_st, placement=placement_st)
    def drop_then_assign(self, a: int, b: int, placement: str) -> None:
        # assign() over cached pages would leak their pool extents; a real caller drops first.
        first, last = min(a, b), max(a, b)
        pool_page = self._pool_page(first, last, placement)
        note(f"drop+assign(pages [{first}, {last}) at pool page {pool_page})")
        assert self.cache.drop(first * P, last * P) == self._freed(first, last)
        self.cache.assign(first * P, last * P, pool_page * P)
        for i, page in enumerate(range(first, last)):
            self.model[page] = pool_page + i

    @rule(a=pages_st, b=pages_st)
    def drop(self, a: int, b: int) -> None:
        first, last = min(a, b), max(a, b)
        note(f"drop(pages [{first}, {last}))")
        assert self.cache.drop(first * P, last * P) == self._freed(first, last)
        for page in range(first, last):
            self.model[page] = None

    @rule(end=pages_st)
    def truncate_pages(self, end: int) -> None:
        note(f"truncate_pages(page {end})")
        assert self.cache.truncate_pages(end * P) == self._freed(end, PAGES)
        for page in range(end, PAGES):
            self.model[page] = None

    @rule(offset=st.integers(0, PAGES * P - 1))
    def pool_offset(self, offset: int) -> None:
        page = offset // P
        got = self.cache.pool_offset(offset)
        pool_page = self.model[page]
        if pool_page is None:
            assert got is None
            return
        assert got is not None
        seg_start, seg_end, pool = got
        assert pool == pool_page * P + offset % P
        assert seg_start <= offset < seg_end
        (segment,) = [seg for seg in canonical(self.model, 0, PAGES) if seg[0] <= offset < seg[1]]
        assert (seg_start, seg_end) == segment[:2]

    @invariant()
    def matches_model(self) -> None:
        self.cache.check_invariants()
        assert list(self.cache.segments()) == canonical(self.model, 0, PAGES)
        assert self.cache.total() == P * sum(x is not None for x in self.model)


TestCacheMapMachine = CacheMapMachine.TestCase
TestCacheMapMachine.settings = settings(
    max_examples=max(150, settings().max_examples),
    stateful_step_count=max(50, settings().stateful_step_count),
)
