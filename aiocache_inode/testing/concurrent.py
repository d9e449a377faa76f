"""A concurrent model test: many tasks at once against one small store, with a sound oracle.

The state machine in :mod:`.stateful` drives one task at a time; the races between a read, a
write-back in flight, a view's release and a truncate only show when several tasks run at once.
Here a *program* (per-task lists of operations, drawn from a seed or by Hypothesis) runs its
tasks concurrently against one :class:`~aiocache_inode.CacheStore` with a budget of a few pages:

- **owners** each own a disjoint byte range (a *region*, boundaries not page-aligned) of the main
  file ``m`` and write versioned patterns into it with ``write`` and through writable views;
- **readers** read anywhere in ``m`` and in ``t`` (plain reads, and views held for a while);
- a **housekeeper** runs ``write_out``, ``store.shrink``, eviction and flush passes, ``evict``;
- a **truncater** shrinks and regrows its own file ``t`` (regrowing by writing at EOF).

Operations sleep a drawn pause first, and some run under a cancel scope cancelled after a drawn
delay. The oracle is sound under any interleaving:

- every write stores a pattern that names its version at every byte (``TABLE`` never holds a
  zero, so a zero is never file data); a byte read from ``m`` must belong to the version settled
  there when the read started (the last acknowledged write, or any failed or cancelled one
  since, which may have applied a prefix) or to a write in flight during the read; the length is
  exactly what the file holds (``m`` never changes size);
- ``t`` only ever holds version 0 at every offset, so any byte read from it is checked exactly,
  and a read's length must lie between what the smallest and largest size during it allow;
- an operation may fail only with a :class:`~aiocache_inode.CacheError` (a ``BackingError`` only
  when faults are injected); anything else escaping (a ``ValueError`` out of ``read``) fails;
- afterwards, with faults off: ``write_out`` succeeds, the backing of ``m`` holds a settled
  version at every byte (an acknowledged write is never lost), a read returns exactly the
  backing, ``store._check_invariants()`` holds, ``store.shrink(0)`` brings usage to 0 (nothing
  is pinned any more), and after that the file still reads back the same.

It replays: the store runs no background tasks (``background=False``; passes are operations),
delays come from the program's seed, trio runs under ``MockClock(autojump_threshold=0)`` with
its scheduler seeded, and asyncio sleeps on a virtual clock advanced once per event-loop turn.
Only ``LocalFile`` (host threads) runs in real time and may not replay exactly.

Run it for long outside CI::

    python -m aiocache_inode.testing.concurrent --minutes 10 --backing local --backend trio
    python -m aiocache_inode.testing.concurrent --replay 1234 --backing delayed --backend asyncio
"""

from __future__ import annotations

import _thread
import argparse
import collections
import faulthandler
import itertools
import logging
import math
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.lowlevel
from hypothesis import strategies as st

from ..backing import FaultInjector, LocalFile, MemoryBacking
from ..errors import BackingError, CacheError, ClosedError
from ..ranges import PAGE_SIZE
from ..store import CacheStore
from .backings import DelayedCopyBacking

if TYPE_CHECKING:
    from collections.abc import Awaitable, Sequence

    from ..backing.base import BackingFile
    from ..inode import CachingInode

__all__ = [
    "BACKINGS",
    "Op",
    "Program",
    "Report",
    "TaskSpec",
    "Timing",
    "VersionMap",
    "Violation",
    "first_bad_byte",
    "generate",
    "main",
    "pattern",
    "programs",
    "random_program",
    "run_program",
    "run_program_sync",
]

P: Final = PAGE_SIZE
#: Backings a program can run over.
BACKINGS: Final = ("memory", "local", "faults", "delayed")
#: The pattern table: never a zero byte; its length is prime so versions stride through it.
TABLE_LEN: Final = 262139
TABLE: Final = bytes(b or 1 for b in random.Random(0x5EED).randbytes(TABLE_LEN))
_TABLE2: Final = TABLE * 2
#: Versions start this far apart in the table (coprime with TABLE_LEN).
STRIDE: Final = 7919
#: The largest single request or view a program makes (must stay below TABLE_LEN).
MAX_IO: Final = 6 * P
#: The truncated file never grows past this.
T_MAX: Final = 16 * P
#: The longest delay of a DelayedCopyBacking request, in (virtual) seconds.
LATENCY: Final = 0.004
#: A run whose tasks are still busy after this many virtual seconds is hung.
HANG_VIRTUAL: Final = 20.0
#: ... and after this many real seconds, where the clock is real (host threads).
HANG_REAL: Final = 120.0
#: A run still going after this many real seconds has a stuck event loop (see run_program_sync).
WATCHDOG_REAL: Final = 300.0
#: The asyncio virtual clock advances this much per event-loop turn.
TICK: Final = 0.0005

_PAUSES: Final = (0.0, 0.0005, 0.002, 0.006)
_CANCELS: Final = (None, 0.0, 0.001, 0.003, 0.008)
_HOLDS: Final = (0.0, 0.001, 0.004, 0.012)
_FAULTS: Final = ((0.0, 0.0), (0.05, 0.3), (0.15, 0.5), (0.0, 1.0))


def pattern(version: int, offset: int, length: int) -> bytes:
    """The bytes version ``version`` stores at ``[offset, offset+length)``. O(length)."""
    if length > TABLE_LEN:
        raise ValueError("pattern longer than the table")
    at = (offset + version * STRIDE) % TABLE_LEN
    return _TABLE2[at : at + length]


# ------------------------------------------------------------------------------------------------
# Programs
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of a task.

    ``kind`` names it; ``file`` is 0 for ``m`` and 1 for ``t``; ``a`` and ``n`` are an offset and
    a length (``a`` is a fraction in sixteenths for ``truncate``, a page count for ``shrink``);
    ``hold`` is how long a view is held; ``pause`` is slept before; ``cancel`` cancels the
    operation that long after it starts (None: never).
    """

    kind: str
    file: int = 0
    a: int = 0
    n: int = 0
    hold: float = 0.0
    pause: float = 0.0
    cancel: float | None = None

    def __repr__(self) -> str:
        parts = [f"{self.kind}"]
        if self.kind in ("read", "vread", "prefetch", "write", "vwrite", "evict"):
            parts.append(f"({'mt'[self.file]}:{self.a}+{self.n})")
        elif self.kind in ("truncate", "extend", "shrink", "write_out", "flush_pass"):
            parts.append(f"({'mt'[self.file] if self.kind == 'write_out' else self.a})")
        if self.hold:
            parts.append(f" hold={self.hold}")
        if self.pause:
            parts.append(f" pause={self.pause}")
        if self.cancel is not None:
            parts.append(f" cancel={self.cancel}")
        return "".join(parts)


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A task: its role, the region it owns (owners only), and its operations in order."""

    role: str
    ops: tuple[Op, ...]
    region: tuple[int, int] = (0, 0)


@dataclass(frozen=True, slots=True)
class Program:
    """Everything a run does, and the seeds of everything random in it."""

    seed: int
    write_back: bool
    budget_pages: int
    main_size: int
    t_size: int
    faults: tuple[float, float]
    tasks: tuple[TaskSpec, ...]

    @property
    def steps(self) -> int:
        """Operations in the program."""
        return sum(len(t.ops) for t in self.tasks)


#: ``draw(lo, hi)``: an integer in ``[lo, hi]``; ``lo`` is the simplest (Hypothesis shrinks to it).
Draw = Callable[[int, int], int]


def _timing(draw: Draw, *, cancel: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"pause": _PAUSES[draw(0, len(_PAUSES) - 1)]}
    if cancel:
        out["cancel"] = _CANCELS[draw(0, len(_CANCELS) - 1)] if draw(0, 3) == 3 else None
    return out


def _span(draw: Draw, lo: int, hi: int, *, align: bool) -> tuple[int, int]:
    """An offset and length inside ``[lo, hi)``, sometimes page-aligned."""
    a = draw(lo, hi - 1)
    if align and draw(0, 2) == 0:
        aligned = -(-a // P) * P
        if aligned < hi:
            a = aligned
    n = draw(1, min(hi - a, MAX_IO))
    return a, n


def generate(draw: Draw, *, max_ops: int = 12) -> Program:
    """A program built from ``draw`` (Hypothesis's or a seeded ``random.Random``'s).

    Args:
        draw: the source of every choice.
        max_ops: the most operations one task gets.
    """
    write_back = draw(0, 1) == 1
    budget = draw(8, 16)
    main_size = draw(8, 24) * P + draw(0, 1) * draw(1, P - 1)
    t_size = draw(1, T_MAX)
    faults = _FAULTS[draw(0, len(_FAULTS) - 1)]
    owners = draw(1, 4)
    cuts = sorted({draw(1, main_size - 1) for _ in range(owners - 1)})
    bounds = [0, *cuts, main_size]
    tasks: list[TaskSpec] = []
    for lo, hi in itertools.pairwise(bounds):
        ops = []
        for _ in range(draw(0, max_ops)):
            kind = ("write", "vwrite", "read")[draw(0, 2)]
            if kind == "read":
                a, n = _span(draw, 0, main_size, align=True)
                ops.append(Op("read", 0, a, n, **_timing(draw)))
                continue
            a, n = _span(draw, lo, hi, align=True)
            hold = _HOLDS[draw(0, len(_HOLDS) - 1)] if kind == "vwrite" else 0.0
            ops.append(Op(kind, 0, a, n, hold=hold, **_timing(draw)))
        tasks.append(TaskSpec("owner", tuple(ops), (lo, hi)))
    for _ in range(draw(0, 3)):
        ops = []
        for _ in range(draw(0, max_ops)):
            file = draw(0, 1)
            size = main_size if file == 0 else T_MAX
            kind = ("read", "vread", "prefetch")[draw(0, 2)]
            a, n = _span(draw, 0, size, align=True)
            hold = _HOLDS[draw(0, len(_HOLDS) - 1)] if kind == "vread" else 0.0
            ops.append(Op(kind, file, a, n, hold=hold, **_timing(draw)))
        tasks.append(TaskSpec("reader", tuple(ops)))
    ops = []
    for _ in range(draw(0, max_ops)):
        kind = ("write_out", "shrink", "evict_pass", "flush_pass", "evict")[draw(0, 4)]
        if kind == "write_out":
            ops.append(Op(kind, draw(0, 1), **_timing(draw)))
        elif kind == "shrink":
            ops.append(Op(kind, 0, draw(0, budget), **_timing(draw)))
        elif kind == "flush_pass":
            ops.append(Op(kind, 0, draw(0, 1), **_timing(draw)))
        elif kind == "evict":
            a, n = _span(draw, 0, main_size, align=False)
            ops.append(Op(kind, 0, a, n, **_timing(draw)))
        else:
            ops.append(Op(kind, **_timing(draw)))
    tasks.append(TaskSpec("housekeeper", tuple(ops)))
    ops = []
    for _ in range(draw(0, max_ops)):
        kind = ("truncate", "extend", "read")[draw(0, 2)]
        if kind == "truncate":
            ops.append(Op(kind, 1, draw(0, 15), **_timing(draw)))
        elif kind == "extend":
            ops.append(Op(kind, 1, draw(1, 4 * P), **_timing(draw)))
        else:
            a, n = _span(draw, 0, T_MAX, align=True)
            ops.append(Op(kind, 1, a, n, **_timing(draw)))
    tasks.append(TaskSpec("truncater", tuple(ops)))
    seed = draw(0, 2**32 - 1)
    return Program(seed, write_back, budget, main_size, t_size, faults, tuple(tasks))


@st.composite
def programs(draw: Any, max_ops: int = 12) -> Program:
    """Hypothesis strategy of :class:`Program` (shrinks towards fewer, simpler operations)."""
    return generate(lambda lo, hi: draw(st.integers(lo, hi)), max_ops=max_ops)


def random_program(seed: int, *, max_ops: int = 12) -> Program:
    """The program a seeded ``random.Random`` draws (what the standalone runner runs)."""
    rng = random.Random(seed)
    return generate(rng.randint, max_ops=max_ops)


# ------------------------------------------------------------------------------------------------
# The oracle
# ------------------------------------------------------------------------------------------------


class Violation(AssertionError):
    """The cache did something no interleaving of the program allows."""


class VersionMap:
    """For each byte of ``[0, size)``, the versions it may hold; kept as sorted segments.

    Invariant: ``starts[0] == 0``, ``starts`` strictly increasing, one value set per start.
    Complexity: O(k) per change, k segments.
    """

    __slots__ = ("size", "starts", "values")

    def __init__(self, size: int, initial: frozenset[int]) -> None:
        self.size = size
        self.starts = [0]
        self.values = [initial]

    def copy(self) -> VersionMap:
        """An independent copy (value sets are immutable, so shared)."""
        out = VersionMap.__new__(VersionMap)
        out.size = self.size
        out.starts = list(self.starts)
        out.values = list(self.values)
        return out

    def _split(self, x: int) -> int:
        """Make ``x`` a segment start; return its index (``len`` when ``x >= size``)."""
        import bisect

        if x >= self.size:
            return len(self.starts)
        i = bisect.bisect_right(self.starts, x) - 1
        if self.starts[i] == x:
            return i
        self.starts.insert(i + 1, x)
        self.values.insert(i + 1, self.values[i])
        return i + 1

    def assign(self, a: int, b: int, versions: frozenset[int]) -> None:
        """Bytes ``[a, b)`` hold exactly one of ``versions``."""
        i = self._split(a)
        j = self._split(b)
        self.starts[i:j] = [a]
        self.values[i:j] = [versions]

    def add(self, a: int, b: int, version: int) -> None:
        """Bytes ``[a, b)`` may also hold ``version``."""
        i = self._split(a)
        j = self._split(b)
        for k in range(i, j):
            self.values[k] = self.values[k] | {version}

    def segments(self, a: int, b: int) -> list[tuple[int, int, frozenset[int]]]:
        """The segments clipped to ``[a, b)``."""
        out = []
        ends = [*self.starts[1:], self.size]
        for s, e, v in zip(self.starts, ends, self.values, strict=True):
            if e > a and s < b:
                out.append((max(s, a), min(e, b), v))
        return out


def _nonzero_bytes(x: int, low: int) -> int:
    """A mask with bit 8i set where byte i of ``x`` (little-endian) is not zero."""
    x |= x >> 4
    x |= x >> 2
    x |= x >> 1
    return x & low


def first_bad_byte(data: bytes, offset: int, versions: frozenset[int]) -> int | None:
    """The index of the first byte of ``data`` (at file ``offset``) no version in the set stores.

    Vectorised with big integers: a byte is bad when it differs from every version's byte.
    """
    n = len(data)
    if not n:
        return None
    low = int.from_bytes(b"\x01" * n, "little")
    got = int.from_bytes(data, "little")
    bad = low
    for v in versions:
        bad &= _nonzero_bytes(got ^ int.from_bytes(pattern(v, offset, n), "little"), low)
        if not bad:
            return None
    return ((bad & -bad).bit_length() - 1) // 8


@dataclass(slots=True)
class _WriteRec:
    version: int
    start: int
    end: int
    began: int
    ended: int | None = None


class _MainModel:
    """What ``m`` may hold: settled versions per byte, and the writes in flight.

    A write that is acknowledged settles its range to its version; one that failed or was
    cancelled only adds its version (a prefix may have been applied). A read may see what was
    settled when it started, or any write in flight at some point while it ran.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.seq = 0
        self.settled = VersionMap(size, frozenset({0}))
        self.records: list[_WriteRec] = []
        self.active_reads: collections.Counter[int] = collections.Counter()
        self.versions = 0

    def begin_write(self, a: int, b: int) -> _WriteRec:
        self.seq += 1
        self.versions += 1
        rec = _WriteRec(self.versions, a, b, self.seq)
        self.records.append(rec)
        return rec

    def end_write(self, rec: _WriteRec, ok: bool) -> None:
        self.seq += 1
        rec.ended = self.seq
        if ok:
            self.settled.assign(rec.start, rec.end, frozenset({rec.version}))
        else:
            self.settled.add(rec.start, rec.end, rec.version)
        self._prune()

    def _prune(self) -> None:
        oldest = min(self.active_reads) if self.active_reads else self.seq + 1
        self.records = [r for r in self.records if r.ended is None or r.ended >= oldest]

    def begin_read(self) -> tuple[int, VersionMap]:
        self.seq += 1
        self.active_reads[self.seq] += 1
        return self.seq, self.settled.copy()

    def end_read(self, began: int) -> None:
        self.active_reads[began] -= 1
        if not self.active_reads[began]:
            del self.active_reads[began]
        self._prune()

    def admissible(
        self, began: int, snapshot: VersionMap, a: int, b: int
    ) -> list[tuple[int, int, frozenset[int]]]:
        """Per segment of ``[a, b)``: the versions a read that started at ``began`` may see."""
        vm = snapshot.copy()
        for r in self.records:
            if (r.ended is None or r.ended > began) and r.start < b and r.end > a:
                vm.add(max(r.start, a), min(r.end, b), r.version)
        return vm.segments(a, b)

    def check(self, data: bytes, a: int, began: int, snapshot: VersionMap, what: str) -> None:
        """Raise Violation unless every byte of ``data`` (read at ``a``) is admissible."""
        for s, e, versions in self.admissible(began, snapshot, a, a + len(data)):
            bad = first_bad_byte(data[s - a : e - a], s, versions)
            if bad is not None:
                at = s + bad
                byte = data[at - a]
                raise Violation(
                    f"{what}: byte at {at} is {byte:#04x}"
                    f"{' (a zero no write stored)' if byte == 0 else ''}, which no admissible"
                    f" version stores there (admissible: {sorted(versions)})"
                )


class _TruncModel:
    """What ``t`` may hold: version 0 everywhere, and the sizes possible during each read."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.inflight: list[tuple[int, ...]] = []
        self.reads: dict[int, list[int]] = {}
        self.next_read = 0

    def _widen(self, sizes: Sequence[int]) -> None:
        for span in self.reads.values():
            span[0] = min(span[0], *sizes)
            span[1] = max(span[1], *sizes)

    def begin_op(self, sizes: tuple[int, ...]) -> None:
        self.inflight.append(sizes)
        self._widen(sizes)

    def end_op(self, sizes: tuple[int, ...], settled: int) -> None:
        self.inflight.remove(sizes)
        self.size = settled
        self._widen([settled])

    def begin_read(self) -> int:
        self.next_read += 1
        span = [self.size, self.size]
        for sizes in self.inflight:
            span = [min(span[0], *sizes), max(span[1], *sizes)]
        self.reads[self.next_read] = span
        return self.next_read

    def end_read(self, token: int) -> tuple[int, int]:
        lo, hi = self.reads.pop(token)
        return lo, hi

    def check(self, data: bytes, a: int, n: int, span: tuple[int, int], what: str) -> None:
        lo, hi = span
        least = min(n, max(0, lo - a))
        most = min(n, max(0, hi - a))
        if not least <= len(data) <= most:
            raise Violation(
                f"{what}: got {len(data)} bytes; sizes during the read were {lo}..{hi}, so"
                f" between {least} and {most}"
            )
        want = pattern(0, a, len(data))
        if data != want:
            at = next(i for i in range(len(data)) if data[i] != want[i])
            raise Violation(
                f"{what}: byte at {a + at} is {data[at]:#04x}, not the file's"
                f" {want[at]:#04x}{' (zeros that were never in the file)' if not data[at] else ''}"
            )


# ------------------------------------------------------------------------------------------------
# Clocks
# ------------------------------------------------------------------------------------------------


class Timing:
    """Sleeps and the store's clock: virtual where the run allows it.

    ``mode`` ``"loop"``: the event loop's clock (trio's MockClock, or real time); ``"ticks"``: a
    virtual clock advanced by ``TICK`` once per event-loop turn by :meth:`run_ticker` (asyncio,
    where a custom loop clock is not available).
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._now = 0.0
        self.stopped = False

    def now(self) -> float:
        """Seconds on this run's clock."""
        return self._now if self.mode == "ticks" else anyio.current_time()

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on this run's clock. Checkpoint: always. Cancellation: anywhere."""
        if self.mode != "ticks":
            await anyio.sleep(seconds)
            return
        until = self._now + seconds
        await anyio.lowlevel.checkpoint()
        while self._now < until:
            await anyio.lowlevel.checkpoint()

    async def run_ticker(self, limit: float | None, on_hang: Callable[[], None]) -> None:
        """Advance the virtual clock once per loop turn until stopped (or past ``limit``)."""
        while not self.stopped:
            self._now += TICK
            if limit is not None and self._now > limit:
                on_hang()
                return
            await anyio.lowlevel.checkpoint()


# ------------------------------------------------------------------------------------------------
# Running a program
# ------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Report:
    """What a run did."""

    steps: int = 0
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    seconds: float = 0.0


def _allowed(exc: BaseException, faults: bool) -> bool:
    """Whether an operation may fail with ``exc``."""
    if isinstance(exc, ClosedError) or not isinstance(exc, CacheError):
        return False
    if isinstance(exc, BackingError) and not faults:
        return False
    # A pool allocation of a negative size is a stale size computation, never a real shortage.
    return "cannot allocate -" not in str(exc)


class _Run:
    def __init__(self, program: Program, backing: str, timing: Timing) -> None:
        self.program = program
        self.backing = backing
        self.timing = timing
        self.faulty = backing == "faults" and program.faults != (0.0, 0.0)
        self.main = _MainModel(program.main_size)
        self.trunc = _TruncModel(program.t_size)
        self.report = Report()
        self.violations: list[str] = []
        self.log: collections.deque[str] = collections.deque(maxlen=40)
        self.busy: dict[str, str] = {}
        self.injectors: list[FaultInjector] = []
        self.cleanups: list[Callable[[], Awaitable[None]]] = []
        self.read_backs: dict[str, Callable[[], Awaitable[bytes]]] = {}
        self.scope: anyio.CancelScope | None = None
        self.run_scope: anyio.CancelScope | None = None
        self.store: CacheStore | None = None
        self.m: CachingInode | None = None
        self.t: CachingInode | None = None

    # -- backings ---------------------------------------------------------------------------

    async def _make_backing(self, name: str, data: bytes, seed: int) -> BackingFile:
        kind = self.backing
        if kind == "local":
            d = Path(tempfile.mkdtemp(prefix=f"aiocache-inode-concurrent-{os.getpid()}-"))
            try:
                path = d / name
                path.write_bytes(data)
                lf = await LocalFile.open(path, writable=True)
            finally:
                shutil.rmtree(d, ignore_errors=True)

            async def read_local() -> bytes:
                fd = lf.fd()
                return os.pread(fd, os.fstat(fd).st_size, 0)

            self.read_backs[name] = read_local
            self.cleanups.append(lf.aclose)
            return lf
        mem = MemoryBacking(data)

        async def read_mem() -> bytes:
            return mem.data

        self.read_backs[name] = read_mem
        if kind == "memory":
            return mem
        delayed = DelayedCopyBacking(mem, latency=LATENCY, seed=seed, sleep=self.timing.sleep)
        if kind == "delayed":
            return delayed
        fi = FaultInjector(delayed, seed=seed)
        self.injectors.append(fi)
        return fi

    # -- operations -------------------------------------------------------------------------

    def fail(self, message: str) -> None:
        self.violations.append(message)
        if self.scope is not None:
            self.scope.cancel()

    async def _op(self, task: str, spec: TaskSpec, op: Op) -> None:
        timing = self.timing
        if op.pause:
            await timing.sleep(op.pause)
        self.report.steps += 1
        self.busy[task] = repr(op)
        self.log.append(f"{task} {op!r} starts")
        outcome = "ok"
        what = f"{task} {op!r}"
        try:
            async with anyio.create_task_group() as tg:
                with anyio.CancelScope() as scope:
                    if op.cancel is not None:
                        tg.start_soon(self._cancel_later, scope, op.cancel)
                    try:
                        await self._do(spec, op, what)
                    except CacheError as exc:
                        outcome = type(exc).__name__
                        if not _allowed(exc, self.faulty):
                            self.fail(f"{what}: {type(exc).__name__} not expected here: {exc}")
                    except Violation as exc:
                        outcome = "VIOLATION"
                        self.fail(str(exc))
                    except Exception as exc:
                        outcome = "UNEXPECTED"
                        self.fail(
                            f"{what}: unexpected {type(exc).__name__}: {exc}\n"
                            + "".join(traceback.format_exception(exc)[-6:])
                        )
                if scope.cancelled_caught:
                    outcome = "cancelled"
                tg.cancel_scope.cancel()
        finally:
            self.busy.pop(task, None)
        self.report.outcomes[f"{op.kind}:{outcome}"] += 1
        self.log.append(f"{task} {op!r} -> {outcome}")

    async def _cancel_later(self, scope: anyio.CancelScope, delay: float) -> None:
        if delay:
            await self.timing.sleep(delay)
        scope.cancel()

    async def _do(self, spec: TaskSpec, op: Op, what: str) -> None:
        store, m, t = self.store, self.m, self.t
        assert store is not None
        assert m is not None
        assert t is not None
        kind = op.kind
        if kind == "write":
            await self._write(m, op.a, op.n, what)
        elif kind == "vwrite":
            await self._vwrite(m, op, what)
        elif kind == "read" and op.file == 0:
            await self._read_m(m, op.a, op.n, what)
        elif kind == "read":
            await self._read_t(t, op.a, op.n, what)
        elif kind == "vread" and op.file == 0:
            await self._vread_m(m, op, what)
        elif kind == "vread":
            await self._vread_t(t, op, what)
        elif kind == "prefetch":
            # Synchronous: background fills of the range start; the readers and the final
            # comparison check what they cached.
            (m if op.file == 0 else t).prefetch(op.a, op.n)
            await anyio.lowlevel.checkpoint()
        elif kind == "write_out":
            await (m if op.file == 0 else t).write_out()
        elif kind == "shrink":
            await store.shrink(op.a * P)
        elif kind == "evict_pass":
            await store.run_eviction_pass()
        elif kind == "flush_pass":
            await store.run_flush_pass(everything=bool(op.a))
        elif kind == "evict":
            await m.evict(op.a, op.a + op.n)
        elif kind == "truncate":
            await self._truncate(t, op.a)
        elif kind == "extend":
            await self._extend(t, op.n)
        else:
            raise AssertionError(f"unknown operation {kind!r}")

    async def _write(self, m: CachingInode, a: int, n: int, what: str) -> None:
        main = self.main
        rec = main.begin_write(a, a + n)
        ok = False
        try:
            got = await m.write(a, pattern(rec.version, a, n))
            if got != n:
                raise Violation(f"{what}: write returned {got}, not {n}")
            ok = True
        finally:
            main.end_write(rec, ok)

    async def _vwrite(self, m: CachingInode, op: Op, what: str) -> None:
        main = self.main
        rec: _WriteRec | None = None
        ok = False
        try:
            async with m.view(op.a, op.n, writable=True) as views:
                rec = main.begin_write(op.a, op.a + op.n)
                data = pattern(rec.version, op.a, op.n)
                pos = 0
                for v in views:
                    v[:] = data[pos : pos + len(v)]
                    pos += len(v)
                if pos != op.n:
                    raise Violation(f"{what}: the views cover {pos} bytes, not {op.n}")
                if op.hold:
                    await self.timing.sleep(op.hold)
            ok = True
        finally:
            if rec is not None:
                main.end_write(rec, ok)

    def _expect_m(self, a: int, n: int) -> int:
        return min(n, max(0, self.program.main_size - a))

    async def _read_m(self, m: CachingInode, a: int, n: int, what: str) -> None:
        main = self.main
        began, snap = main.begin_read()
        try:
            data = await m.read(a, n)
            if len(data) != self._expect_m(a, n):
                raise Violation(f"{what}: got {len(data)} bytes, not {self._expect_m(a, n)}")
            main.check(data, a, began, snap, what)
        finally:
            main.end_read(began)

    async def _vread_m(self, m: CachingInode, op: Op, what: str) -> None:
        main = self.main
        began, snap = main.begin_read()
        try:
            async with m.view(op.a, op.n) as views:
                for phase in ("entered", "held"):
                    data = b"".join(bytes(v) for v in views)
                    if len(data) != self._expect_m(op.a, op.n):
                        raise Violation(f"{what} ({phase}): views cover {len(data)} bytes")
                    main.check(data, op.a, began, snap, f"{what} ({phase})")
                    if phase == "entered" and op.hold:
                        await self.timing.sleep(op.hold)
        finally:
            main.end_read(began)

    async def _read_t(self, t: CachingInode, a: int, n: int, what: str) -> None:
        trunc = self.trunc
        token = trunc.begin_read()
        data = b""
        try:
            data = await t.read(a, n)
        finally:
            span = trunc.end_read(token)
        trunc.check(data, a, n, span, what)

    async def _vread_t(self, t: CachingInode, op: Op, what: str) -> None:
        trunc = self.trunc
        token = trunc.begin_read()
        try:
            async with t.view(op.a, op.n) as views:
                data = b"".join(bytes(v) for v in views)
                # Bytes of a view that a truncate cut off stay valid memory but are not data.
                span = (trunc.reads[token][0], trunc.reads[token][1])
                trunc.check(data, op.a, op.n, (span[0], span[1]), what)
                if op.hold:
                    await self.timing.sleep(op.hold)
        finally:
            trunc.end_read(token)

    async def _truncate(self, t: CachingInode, sixteenths: int) -> None:
        trunc = self.trunc
        cur = t.size
        target = cur * sixteenths // 16
        sizes = (cur, target)
        trunc.begin_op(sizes)
        try:
            await t.truncate(target)
        finally:
            trunc.end_op(sizes, t.size)

    async def _extend(self, t: CachingInode, n: int) -> None:
        trunc = self.trunc
        cur = t.size
        n = min(n, T_MAX - cur)
        if n <= 0:
            await anyio.lowlevel.checkpoint()
            return
        sizes = (cur, cur + n)
        trunc.begin_op(sizes)
        try:
            await t.write(cur, pattern(0, cur, n))
        finally:
            trunc.end_op(sizes, t.size)

    async def _task(self, name: str, spec: TaskSpec) -> None:
        for op in spec.ops:
            await self._op(name, spec, op)

    # -- the run ----------------------------------------------------------------------------

    def _hang(self) -> None:
        busy = "; ".join(f"{k}: {v}" for k, v in sorted(self.busy.items()))
        self.violations.append(f"hang: operations still blocked at the deadline: {busy or '-'}")
        if self.run_scope is not None:
            self.run_scope.cancel()

    async def run(self, hang_real: bool) -> Report:
        """The whole run under the hang guard; the virtual clock ticks throughout."""
        timing = self.timing
        t0 = time.perf_counter()
        async with anyio.create_task_group() as ticker:
            if timing.mode == "ticks":
                ticker.start_soon(
                    timing.run_ticker, None if hang_real else HANG_VIRTUAL, self._hang
                )
            try:
                with anyio.CancelScope() as scope:
                    self.run_scope = scope
                    if timing.mode != "ticks" or hang_real:
                        limit = HANG_REAL if hang_real else HANG_VIRTUAL
                        scope.deadline = anyio.current_time() + limit
                    await self._run()
                if scope.cancelled_caught and not any(
                    v.startswith("hang") for v in self.violations
                ):
                    self._hang()
            finally:
                self.run_scope = None
                timing.stopped = True
        self.report.seconds = time.perf_counter() - t0
        return self.report

    async def _run(self) -> None:
        program = self.program
        bm = await self._make_backing("m", pattern(0, 0, program.main_size), program.seed)
        bt = await self._make_backing("t", pattern(0, 0, program.t_size), program.seed + 1)
        timing = self.timing
        store = CacheStore(
            program.budget_pages * P,
            registry=False,
            write_back=program.write_back,
            background=False,
            monotonic=timing.now,
            readahead_initial=2 * P,
            readahead_max=4 * P,
            readahead_request=2 * P,
            # Freed pages come back with another file's bytes: nothing may assume zeros.
            pool_warm_bytes=2 * P,
            dirty_background_bytes=2 * P,
            dirty_limit_bytes=max(P, program.budget_pages * P // 2),
            dirty_expire=0.01,
            writeback_max_run=4 * P,
        )
        self.store = store
        try:
            async with store, store.open("m", bm) as m, store.open("t", bt) as t:
                self.m, self.t = m, t
                # Faults start once both files are open (an open that fails is no test).
                error_rate, short_rate = program.faults
                for fi in self.injectors:
                    fi.error_rate, fi.short_io_rate = error_rate, short_rate
                await self._concurrent()
                if not self.violations:
                    await self._final(store, m, t)
                for fi in self.injectors:
                    fi.error_rate = fi.short_io_rate = 0.0
        finally:
            for cleanup in self.cleanups:
                with anyio.CancelScope(shield=True):
                    await cleanup()

    async def _concurrent(self) -> None:
        with anyio.CancelScope() as scope:
            self.scope = scope
            async with anyio.create_task_group() as tg:
                for i, spec in enumerate(self.program.tasks):
                    tg.start_soon(self._task, f"{spec.role}{i}", spec)
        self.scope = None

    async def _final(self, store: CacheStore, m: CachingInode, t: CachingInode) -> None:
        for fi in self.injectors:
            fi.error_rate = fi.short_io_rate = 0.0
        main = self.main
        try:
            await m.write_out()
            await t.write_out()
            if m.dirty_bytes or t.dirty_bytes:
                raise Violation(
                    f"dirty bytes left after write_out: {m.dirty_bytes + t.dirty_bytes}"
                )
            backed = await self.read_backs["m"]()
            if len(backed) != main.size:
                raise Violation(f"the backing of m holds {len(backed)} bytes, not {main.size}")
            began, snap = main.begin_read()
            main.check(backed, 0, began, snap, "the backing of m after write_out (a lost write?)")
            main.end_read(began)
            cached = await m.read(0, main.size)
            if cached != backed:
                at = next(i for i in range(len(backed)) if cached[i] != backed[i])
                raise Violation(f"after write_out, a read of m differs from its backing at {at}")
            t_backed = await self.read_backs["t"]()
            self.trunc.check(t_backed, 0, T_MAX, (t.size, t.size), "the backing of t")
            store._check_invariants()
            pinned = store.statistics().pinned_bytes
            if pinned:
                raise Violation(f"{pinned} bytes still pinned with no view held")
            left = await store.shrink(0)
            if left or store.usage:
                raise Violation(f"shrink(0) left {left} bytes in use (usage {store.usage})")
            store._check_invariants()
            again = await m.read(0, main.size)
            if again != backed:
                at = next(i for i in range(len(backed)) if again[i] != backed[i])
                raise Violation(f"after shrink(0), a read of m differs from its backing at {at}")
        except Violation as exc:
            self.fail(str(exc))
        except AssertionError as exc:
            self.fail(f"store invariants: {exc}")
        except Exception as exc:
            self.fail(f"final check: unexpected {type(exc).__name__}: {exc}")

    def failure_message(self) -> str:
        lines = [self.violations[0], "last events:", *self.log]
        return "\n".join(lines)


def _seed_trio_scheduler(seed: int) -> None:
    """Seed trio's scheduling randomness (deterministic batches once Hypothesis is imported)."""
    try:
        from trio._core import _run as trio_run
    except ImportError:  # pragma: no cover - trio is a dependency of the tests
        return
    r = getattr(trio_run, "_r", None)
    if isinstance(r, random.Random):
        r.seed(seed)


async def run_program(program: Program, backing: str) -> Report:
    """Run ``program`` over ``backing`` in the current event loop.

    On trio, run it under ``trio.testing.MockClock(autojump_threshold=0)`` (see
    :func:`run_program_sync`) unless the backing uses threads.

    Checkpoint: always. Cancellation: the run stops; the store is closed.

    Raises:
        AssertionError: the run broke the model (the message names what and the last events).
        ValueError: an unknown backing.
    """
    if backing not in BACKINGS:
        raise ValueError(f"unknown backing {backing!r}; one of {BACKINGS}")
    threads = backing == "local"
    trio_backend = _on_trio()
    if trio_backend:
        _seed_trio_scheduler(program.seed)
    timing = Timing("loop" if trio_backend else "ticks")
    run = _Run(program, backing, timing)
    report = await run.run(hang_real=threads)
    if run.violations:
        raise AssertionError(run.failure_message())
    return report


def _on_trio() -> bool:
    try:
        import sniffio
    except ImportError:  # pragma: no cover
        return False
    return sniffio.current_async_library() == "trio"


def run_program_sync(program: Program, backing: str, backend: str) -> Report:
    """Run ``program`` in a fresh event loop of ``backend`` (with trio's virtual clock if it can).

    Raises:
        AssertionError: the run broke the model.
    """
    options: dict[str, Any] = {}
    # A loop stuck in synchronous code (a livelock) would stop every guard that runs in it: a
    # watchdog thread dumps the stacks and interrupts the main thread instead of hanging.
    watchdog = threading.Timer(WATCHDOG_REAL, _interrupt_stuck_loop)
    watchdog.daemon = True
    watchdog.start()
    try:
        return _run_sync(program, backing, backend, options)
    finally:
        watchdog.cancel()


def _interrupt_stuck_loop() -> None:
    sys.stderr.write(f"the event loop made no progress for {WATCHDOG_REAL} s; stacks:\n")
    faulthandler.dump_traceback(all_threads=True)
    _thread.interrupt_main()


def _run_sync(program: Program, backing: str, backend: str, options: dict[str, Any]) -> Report:
    if backend == "trio" and backing != "local":
        from trio.testing import MockClock

        options["clock"] = MockClock(autojump_threshold=0)
    report: Report = anyio.run(
        run_program, program, backing, backend=backend, backend_options=options
    )
    return report


# ------------------------------------------------------------------------------------------------
# The standalone runner
# ------------------------------------------------------------------------------------------------


def _say(message: object) -> None:
    sys.stdout.write(f"{message}\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m aiocache_inode.testing.concurrent``: run random programs for a while."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=1.0, help="how long to run")
    parser.add_argument("--backing", choices=[*BACKINGS, "all"], default="all")
    parser.add_argument("--backend", choices=["asyncio", "trio", "all"], default="all")
    parser.add_argument("--seed", type=int, default=None, help="first program seed")
    parser.add_argument("--replay", type=int, default=None, help="run this one seed and stop")
    parser.add_argument("--max-ops", type=int, default=12, help="operations per task at most")
    parser.add_argument("--keep-going", action="store_true", help="do not stop at a failure")
    args = parser.parse_args(argv)
    # Failed background write-backs under injected faults are expected: do not flood the output.
    logging.getLogger("aiocache_inode").setLevel(logging.ERROR)
    backings = list(BACKINGS) if args.backing == "all" else [args.backing]
    backends = ["asyncio", "trio"] if args.backend == "all" else [args.backend]
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    if args.replay is not None:
        seed = args.replay
    deadline = time.monotonic() + args.minutes * 60
    runs = steps = failures = 0
    t0 = time.perf_counter()
    while True:
        for backend in backends:
            for backing in backings:
                program = random_program(seed, max_ops=args.max_ops)
                try:
                    report = run_program_sync(program, backing, backend)
                except AssertionError as exc:
                    failures += 1
                    _say(f"FAIL seed={seed} backing={backing} backend={backend}")
                    _say(f"program: {program!r}")
                    _say(exc)
                    if not args.keep_going:
                        return 1
                    continue
                runs += 1
                steps += report.steps
        if args.replay is not None or time.monotonic() >= deadline:
            break
        seed += 1
        if runs % 50 == 0:
            elapsed = time.perf_counter() - t0
            _say(f"{runs} runs, {steps} steps, {steps / elapsed:.0f} steps/s")
    elapsed = time.perf_counter() - t0
    rate = steps / elapsed if elapsed else math.inf
    _say(
        f"done: {runs} runs clean, {failures} failed, {steps} steps in {elapsed:.0f} s"
        f" ({rate:.0f} steps/s), last seed {seed}"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
