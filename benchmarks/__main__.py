"""``python -m benchmarks`` (``make bench``): every workload, one summary, a results file, a plot.

Runs each workload module in turn (each also runs alone: ``python -m benchmarks.hot_reads``),
prints every ratio with its target and MET/MISSED, and writes

- ``benchmarks/results/latest.txt``: machine (platform, CPU model, cores), Python, package
  versions, git revision, date, the summary table and each workload's run time;
- ``benchmarks/results/latest.png``: the ratios against their targets (matplotlib, Agg).

A missed target is reported, never raised: the exit status is 0 unless a workload crashed.
``--only hot_reads,writes`` runs a subset; ``--no-write`` keeps the results files untouched.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ._harness import REPEATS, WARMUPS, Result, Stats, info_result, print_results

if TYPE_CHECKING:
    from collections.abc import Sequence

RESULTS_DIR: Final = Path(__file__).parent / "results"
WORKLOADS: Final = (
    "hot_reads",
    "seq_reads",
    "cold_readahead",
    "hit_latency",
    "writes",
    "eviction",
    "embedded",
    "hit_ratio",
    "gateway",
    "s3_proxy",
)
PACKAGES: Final = (
    "aiocache-inode",
    "anyio",
    "trio",
    "sortedcontainers",
    "fsspec",
    "aiofiles",
    "prometheus-client",
    "matplotlib",
)


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or what platform knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_revision() -> str:
    """``git describe`` of the checkout, with ``-dirty`` when it has local changes."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def environment() -> list[str]:
    """Machine, Python and package versions, one ``key: value`` line each."""
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return [
        f"date: {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC",
        f"machine: {platform.platform()}",
        f"cpu: {cpu_model()}; {os.cpu_count()} cores",
        f"python: {platform.python_implementation()} {sys.version.split()[0]}",
        f"packages: {', '.join(versions)}",
        f"revision: {git_revision()}",
        f"load average at start (1/5/15 min): {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"method: {WARMUPS} warm-up round + {REPEATS} timed repetitions per case (cold_readahead:"
        " 5), cases interleaved; median/p90/p99/max of the subject; spread = (max - min) / median"
        " over repetitions; speed ratio = median over rounds of the paired (same-round) ratios;"
        " fixed seeds",
    ]


def _hit_ratio_results(no_write: bool) -> list[Result]:
    """Run the hit-ratio simulator (it writes its own results file) and turn the default
    policy's rows into informational results (no targets: issue 4 sets none for hit ratios).
    """
    from . import hit_ratio

    rows: list[Any] = hit_ratio.main(["--no-write"] if no_write else [])
    from aiocache_inode.policies import DEFAULT_POLICY

    out: list[Result] = []
    for row in rows:
        if row.policy != DEFAULT_POLICY or row.vs_min is None:
            continue
        s = Stats(1, row.hit_ratio, row.hit_ratio, row.hit_ratio, row.hit_ratio, row.hit_ratio, 0)
        lru = row.vs_lru
        out.append(
            info_result(
                "hit_ratio",
                f"{row.policy} {row.trace} cap {row.capacity}",
                s,
                unit="hit ratio",
                ratio=row.vs_min,
                ratio_desc="hits / Belady MIN's hits",
                baseline="Belady MIN",
                baseline_median=row.hit_ratio / row.vs_min if row.vs_min else None,
                note="" if lru is None else f"{lru:.3f}x LRU's hits",
            )
        )
    return out


def run_workload(name: str, *, no_write: bool = False) -> list[Result]:
    """Import ``benchmarks.<name>`` and run it."""
    if name == "hit_ratio":
        return _hit_ratio_results(no_write)
    module = importlib.import_module(f"{__package__}.{name}")
    results: list[Result] = module.run()
    return results


def summary_table(results: Sequence[Result]) -> str:
    """Every result's ratio with its target and verdict, as text."""
    header = (
        f"{'workload':<15} {'result':<44} {'baseline':<34} {'ratio':>9} {'target':>8} "
        f"{'verdict':<7}"
    )
    lines = [header, "-" * len(header)]
    lines.extend(
        f"{r.workload:<15} {r.name:<44} {r.baseline:<34} {r.ratio:>8.3g}x "
        f"{r.target_text:>8} {r.verdict:<7}"
        for r in results
    )
    met = sum(1 for r in results if r.met is True)
    missed = [r for r in results if r.met is False]
    lines.append("")
    lines.append(
        f"{met} targets MET, {len(missed)} MISSED, {len(results) - met - len(missed)} info"
    )
    lines.append("")
    lines.append("ratio definitions:")
    seen: set[str] = set()
    for r in results:
        key = f"{r.workload}: {r.ratio_desc}"
        if r.workload != "hit_ratio" and key not in seen:
            seen.add(key)
            lines.append(f"  {key}")
    lines.append("  hit_ratio: ratio = hits / Belady MIN's hits (see results/hit_ratio.txt)")
    return "\n".join(lines)


def plot(results: Sequence[Result], path: Path, title: str) -> None:
    """Bar charts of the ratios against their targets, written to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    speed = [r for r in results if r.target_kind == "min" and r.workload != "hit_ratio"]
    bounds = [r for r in results if r.target_kind == "max"]
    hits = [r for r in results if r.workload == "hit_ratio"]
    panels = [p for p in (speed, bounds, hits) if p]
    heights = [max(1.5, 0.42 * len(p) + 1.0) for p in panels]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(11, sum(heights)), gridspec_kw={"height_ratios": heights}
    )
    if len(panels) == 1:
        axes = [axes]
    colors = {"MET": "#2e7d32", "MISSED": "#c62828", "info": "#607d8b"}

    def labels(rs: Sequence[Result]) -> list[str]:
        return [f"{r.name}\nvs {r.baseline}" if r.workload != "hit_ratio" else r.name for r in rs]

    for ax, rs in zip(axes, panels, strict=True):
        ys = list(range(len(rs)))[::-1]
        vals = [max(r.ratio, 1e-3) if rs is speed else r.ratio for r in rs]
        ax.barh(ys, vals, color=[colors[r.verdict] for r in rs], height=0.6)
        for y, r, v in zip(ys, rs, vals, strict=True):
            if r.target is not None:
                ax.plot([r.target, r.target], [y - 0.4, y + 0.4], color="black", lw=2)
            ax.text(v, y, f" {r.ratio:.3g}x {r.verdict}", va="center", fontsize=8)
        ax.set_yticks(ys)
        ax.set_yticklabels(labels(rs), fontsize=7)
        if rs is speed:
            ax.set_xscale("log")
            ax.set_title(
                "speed ratios (subject faster than baseline > 1); black tick = target (at least)",
                fontsize=9,
            )
            ax.axvline(1, color="grey", lw=0.5, ls="--")
        elif rs is bounds:
            ax.set_title("bounds (lower is better); black tick = target (at most)", fontsize=9)
        else:
            ax.set_title("hit ratio of the default policy / Belady MIN (information)", fontsize=9)
            ax.set_xlim(0, 1.15)
        ax.margins(x=0.25)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] = ()) -> int:
    """Run the workloads, print the summary, write the results files; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--only", default="", help="comma-separated workloads to run")
    parser.add_argument("--no-write", action="store_true", help="do not write results files")
    args = parser.parse_args(list(argv))
    names = [n for n in args.only.split(",") if n] or list(WORKLOADS)
    unknown = set(names) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}; known: {', '.join(WORKLOADS)}")
    env = environment()
    print("\n".join(env))
    t_start = time.perf_counter()
    results: list[Result] = []
    timings: list[str] = []
    failed: list[str] = []
    for name in names:
        print(f"\n##### {name}", flush=True)
        t0 = time.perf_counter()
        try:
            rs = run_workload(name, no_write=args.no_write)
        except Exception:
            traceback.print_exc()
            failed.append(name)
            timings.append(f"{name}: FAILED after {time.perf_counter() - t0:.1f} s")
            continue
        elapsed = time.perf_counter() - t0
        timings.append(f"{name}: {elapsed:.1f} s")
        if name != "hit_ratio":
            print_results(rs, name)
        print(f"({name}: {elapsed:.1f} s)", flush=True)
        results += rs
    total = time.perf_counter() - t_start
    table = summary_table(results)
    print("\n##### summary\n")
    print(table)
    print(f"\ntotal {total:.0f} s")
    if not args.no_write and results:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        text = "\n".join(
            [
                "# make bench (python -m benchmarks): benchmarks/results/latest.txt",
                *(f"# {line}" for line in env),
                "",
                table,
                "",
                "run time per workload: " + "; ".join(timings) + f"; total {total:.0f} s",
                "load average at end (1/5/15 min): "
                + ", ".join(f"{x:.2f}" for x in os.getloadavg()),
                *([f"FAILED: {', '.join(failed)}"] if failed else []),
                "",
            ]
        )
        latest = RESULTS_DIR / "latest.txt"
        tmp = latest.with_name(latest.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, latest)
        png = RESULTS_DIR / "latest.png"
        plot(
            results,
            png,
            f"aiocache_inode benchmarks, {git_revision()}, {cpu_model()} x{os.cpu_count()}, "
            f"Python {sys.version.split()[0]}",
        )
        print(f"written {latest} and {png}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
