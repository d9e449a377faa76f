"""Build the Grafana dashboard for aiocache_inode's and the gateway's Prometheus series.

``python -m dashboards.build`` writes ``dashboards/aiocache_inode.json``;
``python -m dashboards.build --check`` exits 1 if the committed file differs from a fresh build.

The model is written with Grafana's own maintained SDK, ``grafana-foundation-sdk`` (a ``dev``
dependency pinned to the 11.6 schema, ``schemaVersion`` 41; the package itself never imports it).
Series names come from ``aiocache_inode/metrics.py`` and the gateway's HTTP metrics; the tests
check each name against a live registry and evaluate every expression on a real Prometheus, so
a renamed series fails CI rather than a graph.

Every selector carries ``job=~"$job", instance=~"$instance"`` and every panel and query names the
data source through the ``datasource`` variable, so the JSON imports with no questions asked and
the user's Prometheus is picked from the drop-down. Expressions sum over the selection: pick one
instance to see it alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.builders.common import (
    ReduceDataOptions,
    VizLegendOptions,
    VizTooltipOptions,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    BigValueColorMode,
    BigValueGraphMode,
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    TooltipDisplayMode,
)
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    VariableRefresh,
    VariableSort,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["DATASOURCE", "OUTPUT", "PanelSpec", "build", "main", "render"]

OUTPUT: Final = Path(__file__).with_name("aiocache_inode.json")

CACHE: Final = "aiocache_inode_"
GATEWAY: Final = "aiocache_gateway_"
#: The data source variable's name; every panel and query refers to it, never to a fixed uid.
DS_VARIABLE: Final = "datasource"
DATASOURCE: Final = DataSourceRef(type_val="prometheus", uid="${" + DS_VARIABLE + "}")
#: Grafana's rate window: at least four scrapes, so rate() always has two samples.
RI: Final = "[$__rate_interval]"
#: The series every instance exports as long as its store is open; the variables list from it.
_ANCHOR: Final = CACHE + "memory_limit_bytes"

_WIDTH: Final = 24  # Grafana's grid is 24 columns wide.
_HEIGHT: Final = 8


def sel(match: str = "") -> str:
    """The label matcher for the selected job and instance, plus ``match`` if given."""
    extra = f"{match}, " if match else ""
    return "{" + extra + 'job=~"$job", instance=~"$instance"}'


def rate(metric: str, by: str = "", *, match: str = "", window: str = RI) -> str:
    """``sum [by (labels)] (rate(metric{selection}[window]))``; ``metric`` is the full name."""
    group = f" by ({by})" if by else ""
    return f"sum{group} (rate({metric}{sel(match)}{window}))"


def gauge(metric: str) -> str:
    """``sum (metric{selection})``; ``metric`` is the full name."""
    return f"sum ({metric}{sel()})"


def quantile(q: float, histogram: str, by: str = "") -> str:
    """The q-quantile of a histogram over the rate interval (``histogram``: the full name)."""
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, {rate(histogram + '_bucket', labels)})"


@dataclass(frozen=True)
class PanelSpec:
    """One panel before layout: what it shows and how; ``width`` in grid columns.

    Attributes:
        title: the panel's title.
        unit: Grafana's unit id (``bytes``, ``Bps``, ``s``, ``percentunit``, ...).
        queries: (PromQL expression, legend) pairs, one Grafana target each.
        description: the hover text under the title's (i).
        width: grid columns (of 24).
        kind: ``timeseries`` or ``stat`` (an instant query reduced to one number).
        min_max: fixed y-axis bounds, e.g. (0, 1) for ratios.
    """

    title: str
    unit: str
    queries: tuple[tuple[str, str], ...]
    description: str = ""
    width: int = 8
    kind: str = "timeseries"
    min_max: tuple[float, float] | None = None


def _series(
    title: str,
    unit: str,
    *queries: tuple[str, str],
    description: str = "",
    width: int = 8,
    min_max: tuple[float, float] | None = None,
) -> PanelSpec:
    return PanelSpec(title, unit, queries, description, width, "timeseries", min_max)


# ---------------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------------


def _cache_row() -> list[PanelSpec]:
    hits, misses = rate(CACHE + "cache_hits_total"), rate(CACHE + "cache_misses_total")
    from_cache = rate(CACHE + "read_bytes_total", match='source="cache"')
    all_bytes = rate(CACHE + "read_bytes_total")
    return [
        _series(
            "Hit ratio",
            "percentunit",
            (f"{hits} / ({hits} + {misses})", "by requests"),
            (f"{from_cache} / {all_bytes}", "by bytes"),
            description="Reads served entirely from cached pages over all reads, and bytes "
            "returned from the cache over all bytes returned.",
            min_max=(0, 1),
        ),
        _series(
            "Bytes served: cache vs backing",
            "Bps",
            (rate(CACHE + "read_bytes_total", "source"), "{{source}}"),
            description="Bytes returned to readers per second, by where they came from.",
        ),
        _series(
            "Hits and misses",
            "ops",
            (hits, "hits"),
            (misses, "misses"),
            description="Reads per second served from cache (hits) or filled from the backing.",
        ),
    ]


def _memory_row() -> list[PanelSpec]:
    return [
        _series(
            "Memory against the limits",
            "bytes",
            (gauge(CACHE + "usage_bytes"), "usage"),
            (gauge(CACHE + "cached_bytes"), "cached"),
            (gauge(CACHE + "pinned_bytes"), "pinned"),
            (gauge(CACHE + "dirty_bytes"), "dirty"),
            (gauge(CACHE + "memory_limit_bytes"), "memory limit"),
            (gauge(CACHE + "dirty_limit_bytes"), "dirty limit"),
            description="Pool usage (cached, being filled, pinned) against the memory budget; "
            "dirty bytes against the limit above which writers are throttled.",
        ),
        _series(
            "Evictions by reason",
            "Bps",
            (rate(CACHE + "evicted_bytes_total", "reason"), "{{reason}}"),
            description="Bytes dropped from the cache per second, by why.",
        ),
        _series(
            "Resident inodes",
            "short",
            (gauge(CACHE + "inodes"), "inodes"),
            description="Inodes held in the store's table (open or idle with cached pages).",
        ),
    ]


def _writeback_row() -> list[PanelSpec]:
    return [
        _series(
            "Write-back rate",
            "Bps",
            (rate(CACHE + "writeback_bytes_total"), "written back"),
            (rate(CACHE + "written_bytes_total"), "accepted by write()"),
            (rate(CACHE + "writethrough_bytes_total"), "written through"),
            width=6,
        ),
        _series(
            "Write-back latency",
            "s",
            (quantile(0.5, CACHE + "writeback_seconds"), "p50"),
            (quantile(0.99, CACHE + "writeback_seconds"), "p99"),
            width=6,
        ),
        _series(
            "Write-back errors",
            "ops",
            (rate(CACHE + "writeback_errors_total"), "errors"),
            description="Failed write-back requests per second; the data stays dirty and is "
            "retried.",
            width=6,
        ),
        _series(
            "Writer throttling",
            "percentunit",
            (rate(CACHE + "writer_throttled_seconds_total"), "throttled"),
            description="Seconds per second writers waited because dirty bytes passed the "
            "hard limit (1 = one writer blocked all the time).",
            width=6,
        ),
    ]


def _backing_row() -> list[PanelSpec]:
    return [
        _series(
            "Backing requests by operation",
            "reqps",
            (rate(CACHE + "backing_requests_total", "op"), "{{op}}"),
        ),
        _series(
            "Backing latency by operation",
            "s",
            (quantile(0.5, CACHE + "backing_request_seconds", "op"), "p50 {{op}}"),
            (quantile(0.99, CACHE + "backing_request_seconds", "op"), "p99 {{op}}"),
        ),
        _series(
            "Backing errors by operation",
            "ops",
            (rate(CACHE + "backing_errors_total", "op"), "{{op}}"),
        ),
    ]


def _readahead_row() -> list[PanelSpec]:
    def outcome(name: str, window: str = RI) -> str:
        return rate(
            CACHE + "readahead_outcome_bytes_total", match=f'outcome="{name}"', window=window
        )

    used, wasted = outcome("used", "[$__range]"), outcome("wasted", "[$__range]")
    return [
        _series(
            "Readahead used vs wasted",
            "Bps",
            (rate(CACHE + "readahead_bytes_total"), "issued"),
            (outcome("used"), "used"),
            (outcome("wasted"), "wasted"),
            description="Speculative bytes requested, later read (used) or dropped unread "
            "(wasted).",
            width=16,
        ),
        PanelSpec(
            "Readahead used ratio",
            "percentunit",
            ((f"{used} / ({used} + {wasted})", "used"),),
            description="Readahead bytes later read, over those read or dropped unread, "
            "across the dashboard's time range.",
            width=8,
            kind="stat",
            min_max=(0, 1),
        ),
    ]


def _gateway_row() -> list[PanelSpec]:
    requests = GATEWAY + "requests_total"
    return [
        _series(
            "Requests by S3 operation and status",
            "reqps",
            (rate(requests, "operation, status"), "{{operation}} {{status}}"),
            width=12,
        ),
        _series(
            "Request latency by operation",
            "s",
            (quantile(0.5, GATEWAY + "request_seconds", "operation"), "p50 {{operation}}"),
            (quantile(0.99, GATEWAY + "request_seconds", "operation"), "p99 {{operation}}"),
            width=12,
        ),
        _series(
            "Bytes in and out",
            "Bps",
            (rate(GATEWAY + "received_bytes_total"), "received (request bodies)"),
            (rate(GATEWAY + "sent_bytes_total"), "sent (response bodies)"),
        ),
        _series(
            "Requests in flight",
            "short",
            (gauge(GATEWAY + "requests_in_flight"), "in flight"),
        ),
        _series(
            "x-cache outcomes",
            "reqps",
            (rate(GATEWAY + "cache_results_total", "result"), "{{result}}"),
            description="Object responses per second by their x-cache header: HIT, MISS or "
            "PARTIAL.",
        ),
    ]


ROWS: Final = (
    ("Cache", _cache_row),
    ("Memory & eviction", _memory_row),
    ("Write-back", _writeback_row),
    ("Backing store", _backing_row),
    ("Readahead", _readahead_row),
    ("S3 gateway", _gateway_row),
)


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


def _targets(queries: Sequence[tuple[str, str]], *, instant: bool) -> list[Any]:
    out = []
    for i, (expr, legend) in enumerate(queries):
        q = (
            prometheus.Dataquery()
            .expr(expr)
            .legend_format(legend)
            .ref_id(chr(ord("A") + i))
            .datasource(DATASOURCE)
        )
        out.append(q.instant() if instant else q.range())
    return out


def _panel(spec: PanelSpec, panel_id: int) -> Any:
    panel: Any
    if spec.kind == "stat":
        panel = (
            stat.Panel()
            .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
            .graph_mode(BigValueGraphMode.NONE)
            .color_mode(BigValueColorMode.VALUE)
            .thresholds(
                dashboard.ThresholdsConfig()
                .mode(ThresholdsMode.ABSOLUTE)
                .steps(
                    [
                        Threshold(color="red", value=None),
                        Threshold(color="yellow", value=0.5),
                        Threshold(color="green", value=0.8),
                    ]
                )
            )
        )
    elif spec.kind == "timeseries":
        panel = (
            timeseries.Panel()
            .tooltip(VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.NONE))
            .legend(
                VizLegendOptions()
                .display_mode(LegendDisplayMode.LIST)
                .placement(LegendPlacement.BOTTOM)
                .show_legend(True)
            )
            .fill_opacity(10)
        )
    else:
        raise ValueError(f"unknown panel kind {spec.kind!r}")
    panel = (
        panel.id(panel_id)
        .title(spec.title)
        .datasource(DATASOURCE)
        .unit(spec.unit)
        .span(spec.width)
        .height(_HEIGHT)
        .targets(_targets(spec.queries, instant=spec.kind == "stat"))
    )
    if spec.description:
        panel = panel.description(spec.description)
    if spec.min_max is not None:
        panel = panel.min(spec.min_max[0]).max(spec.min_max[1])
    return panel


def _variable(name: str, query: str) -> Any:
    return (
        dashboard.QueryVariable(name)
        .label(name)
        .query(query)
        .datasource(DATASOURCE)
        .include_all(True)
        .multi(True)
        .all_value(".*")
        .sort(VariableSort.ALPHABETICAL_ASC)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)  # Instances come and go.
    )


def build() -> dict[str, Any]:
    """Return the dashboard's JSON model as plain data (json.loads of the rendered file)."""
    builder = (
        dashboard.Dashboard("aiocache_inode")
        .uid("aiocache-inode")
        .description(
            "Page cache hits, memory, eviction, write-back, backing store, readahead, and the "
            "S3 gateway's requests."
        )
        .tags(["aiocache_inode", "cache", "s3", "prometheus"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .with_variable(
            dashboard.DatasourceVariable(DS_VARIABLE)
            .label("Data source")
            .type("prometheus")
            .regex("")
        )
        .with_variable(_variable("job", f"label_values({_ANCHOR}, job)"))
        .with_variable(_variable("instance", f'label_values({_ANCHOR}{{job=~"$job"}}, instance)'))
    )
    panel_id = 1
    for title, row in ROWS:
        builder = builder.with_row(dashboard.Row(title).id(panel_id))
        panel_id += 1
        for spec in row():
            builder = builder.with_panel(_panel(spec, panel_id))
            panel_id += 1
    # Round-trip through JSON so callers get plain dicts and lists, exactly what is committed.
    data: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
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
