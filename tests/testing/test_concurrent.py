"""The concurrent model test: programs of concurrent tasks against one small store.

Every backing on both anyio backends, from programs Hypothesis draws and shrinks; the fast
profile runs a few hundred concurrent operations per combination, the ``slow`` test many more.
Over memory-backed backings a run replays exactly from its program (trio's virtual clock and
seeded scheduler, asyncio's virtual tick clock); LocalFile finishes on host threads.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from aiocache_inode.testing.concurrent import (
    BACKINGS,
    Op,
    Program,
    TaskSpec,
    Timing,
    VersionMap,
    first_bad_byte,
    pattern,
    programs,
    random_program,
    run_program_sync,
)
from aiocache_inode.testing.concurrent import P as PAGE

COMBOS = [(backend, backing) for backend in ("asyncio", "trio") for backing in BACKINGS]
_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large]


def _ids(combo: tuple[str, str]) -> str:
    return "-".join(combo)


@pytest.mark.parametrize("combo", COMBOS, ids=_ids)
@settings(max_examples=10, deadline=None, suppress_health_check=_HEALTH, print_blob=True)
@given(program=programs(max_ops=10))
def test_concurrent(combo: tuple[str, str], program: Program) -> None:
    backend, backing = combo
    run_program_sync(program, backing, backend)


@pytest.mark.slow
@pytest.mark.parametrize("combo", COMBOS, ids=_ids)
@settings(max_examples=150, deadline=None, suppress_health_check=_HEALTH, print_blob=True)
@given(program=programs(max_ops=16))
def test_concurrent_slow(combo: tuple[str, str], program: Program) -> None:
    backend, backing = combo
    run_program_sync(program, backing, backend)


# -- programs that pinned each bug (minimal, from the runs that found them) ----------------------


def _program(*tasks: TaskSpec, write_back: bool = True, size: int = 8 * PAGE) -> Program:
    return Program(
        seed=0,
        write_back=write_back,
        budget_pages=16,
        main_size=size,
        t_size=PAGE,
        faults=(0.0, 0.0),
        tasks=tasks,
    )


LOST_VIEW_WRITE = _program(
    # A dirty page; write_out starts writing it back; meanwhile a writable view on the page is
    # opened, written and released; the write-back then ends. The view's write must survive.
    TaskSpec("owner", (Op("write", 0, 0, PAGE), Op("vwrite", 0, 0, PAGE, pause=0.0005)), (0, PAGE)),
    TaskSpec("housekeeper", (Op("write_out", 0, pause=0.0002),)),
)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_view_write_during_writeback_survives(backend: str) -> None:
    run_program_sync(LOST_VIEW_WRITE, "delayed", backend)


FILL_BESIDE_WRITE_THROUGH = _program(
    # Write-through of byte 1 (uncached) in flight; a view on byte 2 fills its page, which stops
    # at the write-through's unaligned end: the pool refused a fill of 1 byte (ValueError).
    TaskSpec("owner", (Op("write", 0, 1, 1),), (1, 2)),
    TaskSpec("owner", (Op("vwrite", 0, 2, 1, pause=0.0005),), (2, 8 * PAGE)),
    write_back=False,
)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_fill_beside_an_unaligned_write_through(backend: str) -> None:
    run_program_sync(FILL_BESIDE_WRITE_THROUGH, "delayed", backend)


READAHEAD_OVER_PARTIAL_WRITE_BACK = _program(
    # Pages 0-2 cached as one segment and written back; then the write-back of [P+1000, P+2000)
    # in flight (the owner is done by then on either clock); a prefetch of the file steps over
    # it and must start its fill at page 3, not at P+2000 plus a page (an unaligned fill, an
    # internal assertion). What the fuzzer's seeds 7347 (trio) and 2067 (asyncio) did, made small.
    TaskSpec(
        "owner",
        (Op("write", 0, 0, 3 * PAGE), Op("write_out", 0), Op("write", 0, PAGE + 1000, 1000)),
        (0, 8 * PAGE),
    ),
    TaskSpec("housekeeper", (Op("write_out", 0, pause=0.025),)),
    TaskSpec("reader", (Op("prefetch", 0, 0, 8 * PAGE, pause=0.0265),)),
)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_readahead_over_a_partial_page_write_back(backend: str) -> None:
    run_program_sync(READAHEAD_OVER_PARTIAL_WRITE_BACK, "delayed", backend)


# -- the oracle's own pieces -----------------------------------------------------------------------


def test_pattern_never_holds_a_zero_and_names_its_version() -> None:
    a = pattern(1, 100, 3 * PAGE)
    assert 0 not in a
    assert len(a) == 3 * PAGE
    assert pattern(2, 100, 3 * PAGE) != a
    assert pattern(1, 100 + PAGE, PAGE) == a[PAGE : 2 * PAGE]


def test_first_bad_byte() -> None:
    data = bytearray(pattern(3, 50, 1000))
    assert first_bad_byte(bytes(data), 50, frozenset({3})) is None
    assert first_bad_byte(bytes(data), 50, frozenset({1})) == 0
    data[700:] = pattern(5, 750, 300)  # a prefix of 5 applied over 3 is fine with both
    assert first_bad_byte(bytes(data), 50, frozenset({3, 5})) is None
    data[900] = 0
    assert first_bad_byte(bytes(data), 50, frozenset({3, 5})) == 900


def test_version_map() -> None:
    vm = VersionMap(100, frozenset({0}))
    vm.assign(10, 20, frozenset({1}))
    vm.add(15, 30, 2)
    snap = vm.copy()
    vm.assign(0, 100, frozenset({9}))
    assert snap.segments(0, 100) == [
        (0, 10, frozenset({0})),
        (10, 15, frozenset({1})),
        (15, 20, frozenset({1, 2})),
        (20, 30, frozenset({0, 2})),
        (30, 100, frozenset({0})),
    ]
    assert vm.segments(5, 7) == [(5, 7, frozenset({9}))]


def test_random_programs_are_reproducible() -> None:
    assert random_program(7) == random_program(7)
    assert random_program(7) != random_program(8)
    assert random_program(7).steps > 0


def test_a_run_replays() -> None:
    # Same program, same backing, same outcome, operation for operation.
    program = random_program(3)
    first = run_program_sync(program, "memory", "trio")
    second = run_program_sync(program, "memory", "trio")
    assert first.outcomes == second.outcomes
    assert first.steps == program.steps


def test_unknown_backing_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown backing"):
        run_program_sync(random_program(0), "tape", "asyncio")


async def test_tick_clock_sleeps_virtually() -> None:
    timing = Timing("ticks")
    assert timing.now() == 0.0
    import anyio

    async with anyio.create_task_group() as tg:
        tg.start_soon(timing.run_ticker, None, lambda: None)
        await timing.sleep(0.01)
        assert timing.now() >= 0.01
        timing.stopped = True
