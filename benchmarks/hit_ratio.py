"""Hit ratio of every eviction policy against LRU and Belady's MIN, on synthetic traces.

Usage: ``python -m benchmarks.hit_ratio [--requests N] [--universe N] [--no-write]``.

A simulated cache of fixed capacity, counted in keys (the store's 64 KiB chunks), drives each
policy in :data:`aiocache_inode.policies.POLICIES` as the store does: a miss inserts the key, then
victims are popped until the cache is back at capacity (nothing pinned). Traces, all with a fixed
seed:

- ``zipf-0.8``, ``zipf-1.0``, ``zipf-1.2``: independent Zipf draws over the key universe.
- ``zipf+scan``: Zipf 1.0 in segments, each followed by a sequential scan of keys never seen
  again (a backup or a big ``cat`` passing through).
- ``loop-1.1x``: keys ``0 .. 1.1 * capacity`` over and over (LRU's worst case).

Capacities are 1% and 10% of the universe. Baselines: LRU (``vs LRU``) and Belady's MIN, the
offline optimum (``vs MIN``), computed from next-use indices with a heap and allowed to bypass a
key whose next use is the furthest. The first ``WARMUP`` requests fill the cache and are not
counted. Hit ratios are deterministic; ``us/req`` (simulator plus policy, one run) is only a rough
cost indication. Results go to ``benchmarks/results/hit_ratio.txt`` with machine and versions.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import os
import platform
import random
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

from aiocache_inode.policies import POLICIES

if TYPE_CHECKING:
    from collections.abc import Sequence

    from aiocache_inode.policies import EvictionPolicy

# ----------------------------------------------------------------------------------------------
# Parameters (sized to run in well under a minute on a slow two-core machine with CPython)
# ----------------------------------------------------------------------------------------------

SEED: Final = 2023  # every trace is drawn from random.Random(SEED + trace number)
UNIVERSE: Final = 100_000  # distinct keys of the Zipf traces
REQUESTS: Final = 500_000  # requests per trace, warm-up included
WARMUP_FRACTION: Final = 1 / 6  # leading share of each trace not counted (cache fill)
CAPACITY_FRACTIONS: Final = (0.01, 0.10)  # cache size as a share of the universe
ZIPF_ALPHAS: Final = (0.8, 1.0, 1.2)
SCAN_ALPHA: Final = 1.0  # the Zipf part of zipf+scan
SCAN_SEGMENT: Final = 40_000  # Zipf requests between two scans
SCAN_LENGTH: Final = 10_000  # keys per scan: >= the larger capacity, so LRU is flushed
LOOP_FACTOR: Final = 1.1  # loop length as a multiple of the capacity
MAX_SCAN: Final = 64  # pop_victim's budget, the store's default
BASELINE: Final = "lru"
OPTIMUM: Final = "min"  # the row name of Belady's MIN
RESULTS: Final = Path(__file__).parent / "results" / "hit_ratio.txt"


@dataclass(frozen=True, slots=True)
class Row:
    """One policy on one trace at one capacity."""

    trace: str
    capacity: int
    policy: str
    hits: int
    counted: int  # requests after warm-up
    us_per_request: float
    vs_lru: float | None = None  # hit ratio / LRU's; None when LRU hit nothing
    vs_min: float | None = None  # hit ratio / MIN's

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.counted if self.counted else 0.0


# ----------------------------------------------------------------------------------------------
# Traces
# ----------------------------------------------------------------------------------------------


def zipf_trace(alpha: float, universe: int, requests: int, rng: random.Random) -> list[int]:
    """Draw ``requests`` keys from a Zipf(``alpha``) distribution over ``range(universe)``.

    Key k has weight ``1 / (k + 1) ** alpha``; ``random.choices`` bisects the cumulative table.
    """
    cumulative = list(itertools.accumulate(1.0 / rank**alpha for rank in range(1, universe + 1)))
    return rng.choices(range(universe), cum_weights=cumulative, k=requests)


def zipf_with_scans(universe: int, requests: int, rng: random.Random) -> list[int]:
    """Zipf segments, each followed by a scan of fresh keys (ids above the universe)."""
    per_round = SCAN_SEGMENT + SCAN_LENGTH
    rounds = max(1, requests // per_round)
    zipf = zipf_trace(SCAN_ALPHA, universe, rounds * SCAN_SEGMENT, rng)
    trace: list[int] = []
    cold = universe
    for start in range(0, len(zipf), SCAN_SEGMENT):
        trace += zipf[start : start + SCAN_SEGMENT]
        trace += range(cold, cold + SCAN_LENGTH)
        cold += SCAN_LENGTH
    return trace


def loop_trace(length: int, requests: int) -> list[int]:
    """Keys ``0 .. length - 1`` cyclically."""
    return [i % length for i in range(requests)]


# ----------------------------------------------------------------------------------------------
# Simulators
# ----------------------------------------------------------------------------------------------


def _evictable(_key: int) -> bool:
    return True


def simulate(policy: EvictionPolicy[int], trace: list[int], capacity: int, warmup: int) -> int:
    """Run ``trace`` through a cache of ``capacity`` keys; return hits after ``warmup``."""
    resident: set[int] = set()
    insert = policy.insert
    access = policy.access
    pop_victim = policy.pop_victim

    def run(keys: list[int]) -> int:
        hits = 0
        for key in keys:
            if key in resident:
                access(key)
                hits += 1
                continue
            insert(key)
            resident.add(key)
            if len(resident) > capacity:
                victim = pop_victim(_evictable, MAX_SCAN)
                while victim is None:  # every key examined was referenced; keep going
                    victim = pop_victim(_evictable, MAX_SCAN)
                resident.remove(victim)
        return hits

    run(trace[:warmup])
    return run(trace[warmup:])


def belady_hits(trace: list[int], capacity: int, warmup: int) -> int:
    """Hits of Belady's MIN (evict the key used furthest in the future) after ``warmup``.

    Complexity: O(r log r) for r requests. The heap holds next-use indices (negated, a max-heap);
    an entry is stale once its key was hit again or evicted, and is dropped when it surfaces.
    A key never used again gets the unique index ``len(trace) + i``, i its last position, so
    every index names exactly one key.
    """
    n = len(trace)
    next_use = [0] * n
    last: dict[int, int] = {}
    for i in range(n - 1, -1, -1):
        key = trace[i]
        next_use[i] = last.get(key, n + i)
        last[key] = i
    resident: dict[int, int] = {}  # key -> its next use
    heap: list[int] = []
    heappush = heapq.heappush
    heappop = heapq.heappop
    hits = 0
    for i in range(n):
        key = trace[i]
        nxt = next_use[i]
        if key in resident:
            if i >= warmup:
                hits += 1
        elif len(resident) >= capacity:
            while True:  # surface the furthest live entry
                far = -heap[0]
                victim = trace[far] if far < n else trace[far - n]
                if resident.get(victim) == far:
                    break
                heappop(heap)
            if nxt >= far:
                continue  # bypass: the new key is needed last of all
            heappop(heap)
            del resident[victim]
        resident[key] = nxt
        heappush(heap, -nxt)
    return hits


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------


def _traces(universe: int, requests: int) -> list[tuple[str, list[int] | None]]:
    """The capacity-independent traces, and a None placeholder for the loop."""
    traces: list[tuple[str, list[int] | None]] = []
    for number, alpha in enumerate(ZIPF_ALPHAS):
        rng = random.Random(SEED + number)
        traces.append((f"zipf-{alpha:.1f}", zipf_trace(alpha, universe, requests, rng)))
    rng = random.Random(SEED + len(ZIPF_ALPHAS))
    traces.append(("zipf+scan", zipf_with_scans(universe, requests, rng)))
    traces.append((f"loop-{LOOP_FACTOR:.1f}x", None))
    return traces


def measure(universe: int = UNIVERSE, requests: int = REQUESTS) -> list[Row]:
    """Every trace x capacity x policy, plus MIN; ratios filled in."""
    rows: list[Row] = []
    traces = _traces(universe, requests)
    for fraction in CAPACITY_FRACTIONS:
        capacity = max(1, int(universe * fraction))
        for name, maybe_trace in traces:
            trace = maybe_trace or loop_trace(int(capacity * LOOP_FACTOR), requests)
            warmup = int(len(trace) * WARMUP_FRACTION)
            counted = len(trace) - warmup
            group: list[Row] = []
            for policy_name in sorted(POLICIES):
                policy: EvictionPolicy[int] = POLICIES[policy_name]()
                start = time.perf_counter()
                hits = simulate(policy, trace, capacity, warmup)
                elapsed = time.perf_counter() - start
                policy.check_invariants()
                group.append(
                    Row(name, capacity, policy_name, hits, counted, elapsed * 1e6 / len(trace))
                )
            start = time.perf_counter()
            hits = belady_hits(trace, capacity, warmup)
            elapsed = time.perf_counter() - start
            group.append(Row(name, capacity, OPTIMUM, hits, counted, elapsed * 1e6 / len(trace)))
            lru = next(row.hits for row in group if row.policy == BASELINE)
            best = group[-1].hits
            rows += [
                Row(
                    row.trace,
                    row.capacity,
                    row.policy,
                    row.hits,
                    row.counted,
                    row.us_per_request,
                    vs_lru=row.hits / lru if lru else None,
                    vs_min=row.hits / best if best else None,
                )
                for row in group
            ]
    return rows


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_table(rows: Sequence[Row]) -> str:
    """The rows as a fixed-width text table."""
    header = (
        f"{'trace':<10} {'capacity':>8} {'policy':<7} {'hit ratio':>9} "
        f"{'vs LRU':>7} {'vs MIN':>7} {'us/req':>7}"
    )
    lines = [header, "-" * len(header)]
    previous: tuple[str, int] | None = None
    for row in rows:
        if previous is not None and previous != (row.trace, row.capacity):
            lines.append("")
        previous = (row.trace, row.capacity)
        lines.append(
            f"{row.trace:<10} {row.capacity:>8} {row.policy:<7} {row.hit_ratio:>9.4f} "
            f"{_ratio(row.vs_lru):>7} {_ratio(row.vs_min):>7} {row.us_per_request:>7.2f}"
        )
    return "\n".join(lines)


def environment(universe: int, requests: int) -> str:
    """Machine, versions and parameters, as comment lines for the results file."""
    cpu = platform.processor() or platform.machine()
    return "\n".join(
        [
            f"# benchmarks/hit_ratio.py, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            f"# machine: {platform.platform()}; cpu: {cpu}; {os.cpu_count()} cpus",
            f"# python: {platform.python_implementation()} {sys.version.split()[0]}",
            f"# universe={universe} requests={requests} warmup={WARMUP_FRACTION:.3f} "
            f"seed={SEED} max_scan={MAX_SCAN} capacities={CAPACITY_FRACTIONS}",
            f"# zipf+scan: zipf-{SCAN_ALPHA} segments of {SCAN_SEGMENT}, "
            f"then {SCAN_LENGTH} fresh keys; loop: {LOOP_FACTOR}x capacity",
            "# hit ratio counts requests after warm-up; vs LRU / vs MIN are ratios of hits;",
            "# MIN is Belady's offline optimum (with bypass); us/req is one run, indicative only.",
        ]
    )


def main(argv: Sequence[str] = ()) -> list[Row]:
    """Measure, print the table, write the results file; return the rows."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hit_ratio")
    parser.add_argument("--requests", type=int, default=REQUESTS)
    parser.add_argument("--universe", type=int, default=UNIVERSE)
    parser.add_argument("--no-write", action="store_true", help="do not write the results file")
    args = parser.parse_args(list(argv))
    start = time.perf_counter()
    rows = measure(args.universe, args.requests)
    elapsed = time.perf_counter() - start
    text = f"{environment(args.universe, args.requests)}\n\n{format_table(rows)}\n"
    print(text)
    print(f"({elapsed:.1f} s)")
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        temporary = RESULTS.with_name(RESULTS.name + ".tmp")
        temporary.write_text(text)
        os.replace(temporary, RESULTS)
        print(f"written to {RESULTS}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
