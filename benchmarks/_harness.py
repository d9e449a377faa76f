"""The shared benchmark harness: results, repetitions, statistics, and the printed table.

Every workload module measures a *subject* (the cache) and one or more *named baselines* in the
same process and the same run, with fixed seeds, one warm-up round, and at least five timed
repetitions. Subject and baselines are interleaved repetition by repetition (A B C A B C ...) so
that drift on a shared machine hits all of them alike. Timings use ``time.perf_counter_ns``.

Numbers are never asserted: a target that is not met is printed as MISSED, never raised.
"""

from __future__ import annotations

import gc
import math
import os
import random
import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

__all__ = [
    "KIB",
    "MIB",
    "REPEATS",
    "SEED",
    "WARMUPS",
    "Result",
    "Stats",
    "info_result",
    "print_results",
    "ratio_result",
    "rng",
    "run_interleaved",
    "summarize",
]

KIB: Final = 1 << 10
MIB: Final = 1 << 20
#: Every random choice in the suite derives from this seed.
SEED: Final = 20240601
#: Timed repetitions per measurement (the issue asks for at least 5). ``BENCH_REPEATS`` overrides
#: (never below 5) for a longer, steadier run.
REPEATS: Final = max(5, int(os.environ.get("BENCH_REPEATS", "7")))
#: Untimed warm-up rounds before the timed ones.
WARMUPS: Final = 1


def rng(salt: int = 0) -> random.Random:
    """A fresh ``random.Random`` seeded from :data:`SEED` and ``salt``."""
    return random.Random(SEED * 1000 + salt)


@dataclass(frozen=True, slots=True)
class Stats:
    """Order statistics of a sample (nearest-rank percentiles) and its relative spread."""

    n: int
    median: float
    p90: float
    p99: float
    max: float
    min: float
    #: (max - min) / median: the whole range of the sample relative to its middle.
    spread: float


def _rank(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0..1) of an ascending sample."""
    k = max(0, math.ceil(q * len(sorted_values)) - 1)
    return sorted_values[min(k, len(sorted_values) - 1)]


def summarize(values: Sequence[float]) -> Stats:
    """Median, p90, p99, max, min and relative spread of ``values`` (not empty)."""
    if not values:
        raise ValueError("no samples")
    s = sorted(values)
    med = statistics.median(s)
    spread = (s[-1] - s[0]) / med if med else 0.0
    return Stats(len(s), med, _rank(s, 0.90), _rank(s, 0.99), s[-1], s[0], spread)


@dataclass(frozen=True, slots=True)
class Result:
    """One measured comparison: ``name`` against ``baseline``, with its target.

    ``median``/``p90``/``p99``/``max`` describe the subject's samples in ``unit`` (per-repetition
    values for throughput workloads, per-operation latencies for latency workloads);
    ``baseline_median`` is the baseline's median in the same unit. ``ratio`` is defined per
    result (``ratio_desc``), always so that the target reads "at least" (``target_kind`` "min")
    or "at most" (``target_kind`` "max"). ``target`` None means the ratio is reported only.
    """

    workload: str
    name: str
    baseline: str
    unit: str
    median: float
    p90: float
    p99: float
    max: float
    spread: float
    baseline_median: float | None
    ratio: float
    ratio_desc: str
    target: float | None
    target_kind: str = "min"
    note: str = ""

    @property
    def met(self) -> bool | None:
        """Whether the target is met; None when there is no target."""
        if self.target is None:
            return None
        if self.target_kind == "min":
            return self.ratio >= self.target
        return self.ratio <= self.target

    @property
    def verdict(self) -> str:
        """``MET``, ``MISSED`` or ``info``."""
        m = self.met
        return "info" if m is None else ("MET" if m else "MISSED")

    @property
    def target_text(self) -> str:
        """The target as printed, e.g. ``>= 0.5x``."""
        if self.target is None:
            return "-"
        return f"{'>=' if self.target_kind == 'min' else '<='} {self.target:g}x"


def ratio_result(
    workload: str,
    name: str,
    subject: Sequence[float],
    baseline_name: str,
    baseline: Sequence[float],
    *,
    unit: str,
    target: float | None,
    higher_is_better: bool,
    target_kind: str = "min",
    note: str = "",
) -> Result:
    """A speed ratio of subject over baseline from their per-repetition samples.

    The samples come from :func:`run_interleaved`, so sample ``i`` of both was taken in the same
    round, back to back. The ratio is the median over rounds of the paired ratios: a burst of
    load from elsewhere slows both members of a pair, so it cancels out (a ratio of the two
    medians would not). With ``higher_is_better`` (throughputs) each pair gives
    subject / baseline, else (times) baseline / subject: above 1, the subject is faster.
    """
    if len(subject) != len(baseline):
        raise ValueError("paired samples of different lengths")
    if higher_is_better:
        pairs = [s / b for s, b in zip(subject, baseline, strict=True)]
    else:
        pairs = [b / s for s, b in zip(subject, baseline, strict=True)]
    ratio = statistics.median(pairs)
    sv = summarize(subject)
    desc = (
        f"median over rounds of paired speed ratios "
        f"({'throughput' if higher_is_better else 'time'}), subject vs baseline"
    )
    return Result(
        workload=workload,
        name=name,
        baseline=baseline_name,
        unit=unit,
        median=sv.median,
        p90=sv.p90,
        p99=sv.p99,
        max=sv.max,
        spread=sv.spread,
        baseline_median=statistics.median(baseline),
        ratio=ratio,
        ratio_desc=desc,
        target=target,
        target_kind=target_kind,
        note=note,
    )


def info_result(
    workload: str,
    name: str,
    subject: Stats,
    *,
    unit: str,
    ratio: float,
    ratio_desc: str,
    baseline: str = "-",
    baseline_median: float | None = None,
    target: float | None = None,
    target_kind: str = "min",
    note: str = "",
) -> Result:
    """A result whose ratio is computed by the caller (a count, a bound, a p99 ratio)."""
    return Result(
        workload=workload,
        name=name,
        baseline=baseline,
        unit=unit,
        median=subject.median,
        p90=subject.p90,
        p99=subject.p99,
        max=subject.max,
        spread=subject.spread,
        baseline_median=baseline_median,
        ratio=ratio,
        ratio_desc=ratio_desc,
        target=target,
        target_kind=target_kind,
        note=note,
    )


async def run_interleaved(
    cases: dict[str, Callable[[], Awaitable[float]]],
    *,
    repeats: int = REPEATS,
    warmups: int = WARMUPS,
) -> dict[str, list[float]]:
    """Run every case ``warmups`` times untimed, then ``repeats`` times interleaved.

    Each case is one repetition and returns its own measurement (e.g. ns per operation). The
    garbage collector is collected before and disabled during each repetition, so a collection
    triggered by one case is not charged to the next.
    """
    for _ in range(warmups):
        for fn in cases.values():
            await fn()
    out: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            gc.collect()
            gc.disable()
            try:
                out[name].append(await fn())
            finally:
                gc.enable()
    return out


def now_ns() -> int:
    """The benchmark clock."""
    return time.perf_counter_ns()


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e5 or a < 1e-2:
        return f"{v:.3g}"
    if a >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}"


def print_results(results: Sequence[Result], title: str = "") -> None:
    """Print one table row per result: the subject's statistics, the baseline and the ratio."""
    if title:
        print(f"\n== {title} ==")
    header = (
        f"{'result':<44} {'unit':<10} {'median':>9} {'p90':>9} {'p99':>9} {'max':>9} "
        f"{'spread':>7} {'baseline':<32} {'base med':>9} {'ratio':>8} {'target':>8} verdict"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.name:<44} {r.unit:<10} {_fmt(r.median):>9} {_fmt(r.p90):>9} {_fmt(r.p99):>9} "
            f"{_fmt(r.max):>9} {r.spread * 100:>6.1f}% {r.baseline:<32} "
            f"{_fmt(r.baseline_median):>9} {r.ratio:>7.3g}x {r.target_text:>8} {r.verdict}"
        )
        if r.note:
            print(f"    {r.note}")
