"""Build the Grafana dashboard for aiocache_inode's Prometheus series.

``python -m dashboards.build`` writes ``dashboards/aiocache_inode.json``;
``python -m dashboards.build --check`` exits 1 if the committed file differs from a fresh build.

The model is written with grafanalib (a ``dev`` dependency; the package itself never imports
it). Every series name comes from ``aiocache_inode/metrics.py``; the tests check each name in
every expression against a live registry, so a renamed series fails CI rather than a graph.
Expressions sum over the selected ``job``/``instance``: pick one instance to see it alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import attr
from grafanalib._gen import DashboardEncoder  # type: ignore[import-untyped]
from grafanalib.core import (  # type: ignore[import-untyped]
    Dashboard,
    GridPos,
    RowPanel,
    Stat,
    Target,
    Template,
    Templating,
    Time,
    TimeSeries,
)

__all__ = ["OUTPUT", "build", "main", "render"]

OUTPUT = Path(__file__).with_name("aiocache_inode.json")

P = "aiocache_inode_"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
RI = "[$__rate_interval]"

_WIDTH = 24  # Grafana's grid is 24 columns wide.
_HEIGHT = 8


def _sel(match: str = "") -> str:
    """The label matcher for the selected job and instance, plus ``match`` if given."""
    extra = f"{match}, " if match else ""
    return "{" + extra + 'job=~"$job", instance=~"$instance"}'


def _rate(metric: str, by: str = "", *, match: str = "", window: str = RI) -> str:
    """``sum [by (labels)] (rate(metric{selection}[window]))``."""
    group = f" by ({by})" if by else ""
    return f"sum{group} (rate({P}{metric}{_sel(match)}{window}))"


def _quantile(q: float, histogram: str, by: str = "") -> str:
    """The q-quantile of a histogram's durations over the rate interval."""
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, {_rate(histogram + '_bucket', labels)})"


def _target(expr: str, legend: str, ref: str, *, instant: bool = False) -> Any:
    return Target(
        expr=expr,
        legendFormat=legend,
        refId=ref,
        instant=instant,
        intervalFactor=1,  # grafanalib's default of 2 halves the resolution.
        datasource=DATASOURCE,
    )


def _targets(*pairs: tuple[str, str]) -> list[Any]:
    """One target per (expression, legend), refIds A, B, C, ..."""
    return [_target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(pairs)]


def _series(
    title: str, unit: str, *pairs: tuple[str, str], description: str = "", **extra: Any
) -> Any:
    return TimeSeries(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=_targets(*pairs),
        unit=unit,
        tooltipMode="multi",
        maxDataPoints=None,  # Let Grafana size the step to the panel, not grafanalib's 100.
        **extra,
    )


def _overview() -> list[Any]:
    hits, misses = _rate("cache_hits_total"), _rate("cache_misses_total")
    return [
        _series(
            "Cache hit ratio",
            "percentunit",
            (f"{hits} / ({hits} + {misses})", "hit ratio"),
            description="Reads served entirely from cached pages, over all reads.",
            valueMin=0,
            valueMax=1,
        ),
        _series("Hits and misses", "ops", (hits, "hits"), (misses, "misses")),
        _series(
            "Read bytes/s by source", "Bps", (_rate("read_bytes_total", "source"), "{{source}}")
        ),
    ]


def _memory() -> list[Any]:
    def gauge(name: str) -> str:
        return f"sum ({P}{name}{_sel()})"

    return [
        _series(
            "Memory",
            "bytes",
            (gauge("usage_bytes"), "usage"),
            (gauge("cached_bytes"), "cached"),
            (gauge("dirty_bytes"), "dirty"),
            (gauge("pinned_bytes"), "pinned"),
            (gauge("memory_limit_bytes"), "memory limit"),
            (gauge("dirty_limit_bytes"), "dirty limit"),
            description="Pool usage against the budget; dirty bytes against the throttle limit.",
        ),
        _series(
            "Evicted bytes/s by reason",
            "Bps",
            (_rate("evicted_bytes_total", "reason"), "{{reason}}"),
        ),
        _series("Eviction runs/s", "ops", (_rate("eviction_runs_total"), "eviction runs")),
    ]


def _writeback() -> list[Any]:
    return [
        _series(
            "Write-back bytes/s",
            "Bps",
            (_rate("writeback_bytes_total"), "written back"),
            (_rate("written_bytes_total"), "accepted by write()"),
            (_rate("writethrough_bytes_total"), "written through"),
        ),
        _series("Write-back errors/s", "ops", (_rate("writeback_errors_total"), "errors")),
        _series(
            "Write-back duration",
            "s",
            (_quantile(0.5, "writeback_seconds"), "p50"),
            (_quantile(0.99, "writeback_seconds"), "p99"),
        ),
        _series(
            "Writer throttled seconds/s",
            "s",
            (_rate("writer_throttled_seconds_total"), "throttled"),
            description="Time writers waited because dirty bytes passed the hard limit.",
        ),
    ]


def _backing() -> list[Any]:
    return [
        _series(
            "Backing requests/s by op",
            "reqps",
            (_rate("backing_requests_total", "op"), "{{op}}"),
        ),
        _series(
            "Backing request p99 by op",
            "s",
            (_quantile(0.99, "backing_request_seconds", "op"), "{{op}}"),
        ),
        _series("Backing errors/s by op", "ops", (_rate("backing_errors_total", "op"), "{{op}}")),
    ]


def _readahead() -> list[Any]:
    def outcome(name: str, window: str = RI) -> str:
        return _rate("readahead_outcome_bytes_total", match=f'outcome="{name}"', window=window)

    used, wasted = outcome("used", "[$__range]"), outcome("wasted", "[$__range]")
    return [
        _series(
            "Readahead bytes/s",
            "Bps",
            (_rate("readahead_bytes_total"), "issued"),
            (outcome("used"), "used"),
            (outcome("wasted"), "wasted"),
        ),
        Stat(
            title="Readahead used ratio",
            description="Readahead bytes later read, over those read or dropped unread, "
            "across the dashboard's time range.",
            dataSource=DATASOURCE,
            targets=[_target(f"{used} / ({used} + {wasted})", "used", "A", instant=True)],
            format="percentunit",
            reduceCalc="lastNotNull",
            graphMode="none",
            color={"mode": "thresholds"},
            maxDataPoints=None,
            thresholds=[
                {"color": "red", "value": None},
                {"color": "yellow", "value": 0.5},
                {"color": "green", "value": 0.8},
            ],
        ),
    ]


def _layout(rows: list[tuple[str, list[Any]]]) -> list[Any]:
    """Place each row header full width, then its panels left to right, two or three a line."""
    panels: list[Any] = []
    y = 0
    next_id = 1
    for title, row_panels in rows:
        panels.append(RowPanel(title=title, id=next_id, gridPos=GridPos(h=1, w=_WIDTH, x=0, y=y)))
        next_id += 1
        y += 1
        per_line = 3 if len(row_panels) % 3 == 0 else 2
        width = _WIDTH // per_line
        for i, panel in enumerate(row_panels):
            if i and i % per_line == 0:
                y += _HEIGHT
            w = width // 2 if isinstance(panel, Stat) else width
            pos = GridPos(h=_HEIGHT, w=w, x=(i % per_line) * width, y=y)
            panels.append(attr.evolve(panel, id=next_id, gridPos=pos))
            next_id += 1
        y += _HEIGHT
    return panels


def _variable(name: str, query: str) -> Any:
    return Template(
        name=name,
        label=name,
        query=query,
        dataSource=DATASOURCE,
        includeAll=True,
        multi=True,
        allValue=".*",
        refresh=2,  # On time range change: instances come and go.
    )


def build() -> dict[str, Any]:
    """Return the dashboard's JSON model as plain data (json.loads of the rendered file)."""
    dashboard = Dashboard(
        title="aiocache_inode",
        uid="aiocache-inode",
        description="Page cache hits, memory, eviction, write-back, backing and readahead.",
        tags=["aiocache_inode", "cache", "prometheus"],
        schemaVersion=39,
        editable=True,
        graphTooltip=1,  # Shared crosshair.
        refresh="30s",
        time=Time("now-1h", "now"),
        timezone="browser",
        templating=Templating(
            list=[
                Template(
                    name="DS_PROMETHEUS",
                    label="Data source",
                    query="prometheus",
                    type="datasource",
                ),
                _variable("job", f"label_values({P}memory_limit_bytes, job)"),
                _variable(
                    "instance", f'label_values({P}memory_limit_bytes{{job=~"$job"}}, instance)'
                ),
            ]
        ),
        panels=_layout(
            [
                ("Overview", _overview()),
                ("Memory & eviction", _memory()),
                ("Write-back", _writeback()),
                ("Backing store", _backing()),
                ("Readahead", _readahead()),
            ]
        ),
    )
    # Round-trip through JSON so callers get plain dicts and lists, exactly what is committed.
    data: dict[str, Any] = json.loads(json.dumps(dashboard.to_json_data(), cls=DashboardEncoder))
    return data


def render() -> str:
    """Return the committed file's exact text: sorted keys, two-space indent, final newline."""
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the dashboard, or with ``--check`` report whether the committed file is stale."""
    parser = argparse.ArgumentParser(prog="python -m dashboards.build", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the committed JSON differs from a build"
    )
    parser.add_argument("--output", type=Path, default=OUTPUT, help="default: %(default)s")
    args = parser.parse_args(argv)
    text = render()
    output: Path = args.output
    if args.check:
        current = output.read_text(encoding="utf-8") if output.exists() else ""
        if current != text:
            sys.stderr.write(f"{output} is stale; run: python -m dashboards.build\n")
            return 1
        return 0
    output.write_text(text, encoding="utf-8")
    sys.stdout.write(f"wrote {output}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
