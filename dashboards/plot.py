"""Draw the dashboard's panels from real Prometheus data, in the dashboard's own grid layout.

``python -m dashboards.plot DATA.json [--output dashboards/dashboard.png]``: DATA is what
``tests/dashboards/test_prometheus.py`` writes when ``AIOCACHE_DASHBOARD_DATA`` names a file (the
``query_range`` result of every panel target, from a real Prometheus scraping a process under
load); ``make dashboard-picture`` runs both. The layout, titles, units and legends come from
``aiocache_inode.json``, so the picture is the dashboard, not a separate drawing of it. A dark
theme close to Grafana's; matplotlib (a ``dev`` dependency) with the Agg backend.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Final

from .build import OUTPUT as DASHBOARD

__all__ = ["DataError", "format_value", "legend", "load", "main", "plot"]

PICTURE: Final = Path(__file__).with_name("dashboard.png")

_BACKGROUND: Final = "#111217"
_PANEL: Final = "#181b1f"
_TEXT: Final = "#ccccdc"
_GRID: Final = "#2c3235"
_COLORS: Final = (
    "#73bf69",
    "#f2cc0c",
    "#8ab8ff",
    "#ff780a",
    "#f2495c",
    "#5794f2",
    "#b877d9",
    "#705da0",
    "#37872d",
    "#fade2a",
)
#: Inches per Grafana grid column and per grid row.
_COLUMN: Final = 0.8
_ROW: Final = 0.42
_LEGEND: Final = re.compile(r"\{\{\s*(\w+)\s*\}\}")


class DataError(ValueError):
    """The data file is missing, not JSON, or not what the Prometheus test writes."""


def load(path: Path) -> dict[str, Any]:
    """Read and check a data file written by the Prometheus test.

    Raises:
        DataError: the file is missing, not JSON, or lacks ``start``, ``end`` or ``queries``.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such file (run: make dashboard-picture)") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not JSON: {exc}") from exc
    if not isinstance(data, dict) or not {"start", "end", "queries"} <= data.keys():
        raise DataError(f"{path}: expected an object with start, end and queries")
    for q in data["queries"]:
        if not isinstance(q, dict) or not {"panel", "refId", "result"} <= q.keys():
            raise DataError(f"{path}: every query needs panel, refId and result: {q!r}")
    return data


def legend(fmt: str, labels: dict[str, str]) -> str:
    """Grafana's legend format: ``{{name}}`` replaced by the series' label value."""
    if not fmt:
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"
    return _LEGEND.sub(lambda m: labels.get(m.group(1), ""), fmt).strip() or "value"


def format_value(value: float, unit: str) -> str:
    """A number in the panel's unit, as Grafana would label an axis tick, roughly."""
    if not math.isfinite(value):
        return "-"
    if unit == "percentunit":
        return f"{value * 100:.0f}%"
    if unit in ("bytes", "Bps"):
        suffix = "/s" if unit == "Bps" else ""
        for name, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if abs(value) >= size:
                return f"{value / size:.3g} {name}{suffix}"
        return f"{value:.3g} B{suffix}"
    if unit == "s":
        if value and abs(value) < 1:
            return f"{value * 1000:.3g} ms"
        return f"{value:.3g} s"
    suffix = "/s" if unit in ("ops", "reqps") else ""
    for name, scale in (("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{name}{suffix}"
    return f"{value:.3g}{suffix}"


def _panels(model: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in model["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def _style(ax: Any) -> None:
    ax.set_facecolor(_PANEL)
    ax.tick_params(colors=_TEXT, labelsize=7)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.grid(color=_GRID, linewidth=0.6)


def _draw_series(ax: Any, panel: dict[str, Any], queries: list[dict[str, Any]], t0: float) -> None:
    import matplotlib.ticker as mticker

    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    unit = defaults.get("unit", "short")
    n = 0
    for q in queries:
        for series in q["result"]:
            points = [
                (float(t) - t0, float(v))
                for t, v in series.get("values", [series.get("value", [t0, "NaN"])])
            ]
            xs = [t for t, _ in points]
            ys = [v if math.isfinite(v) else math.nan for _, v in points]
            ax.plot(
                xs,
                ys,
                color=_COLORS[n % len(_COLORS)],
                linewidth=1.2,
                label=legend(q.get("legendFormat", ""), series.get("metric", {})),
            )
            n += 1
    if "min" in defaults and "max" in defaults:
        ax.set_ylim(defaults["min"], defaults["max"] * 1.02)
    ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: format_value(v, unit)))
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:.0f}s"))
    ax.yaxis.set_major_locator(mticker.MaxNLocator(4))
    if n:
        ax.legend(
            loc="upper left",
            fontsize=6,
            frameon=False,
            labelcolor=_TEXT,
            ncol=2 if n > 4 else 1,
        )
    else:
        ax.text(0.5, 0.5, "No data", color=_TEXT, ha="center", va="center", transform=ax.transAxes)


def _draw_stat(ax: Any, panel: dict[str, Any], queries: list[dict[str, Any]]) -> None:
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    unit = defaults.get("unit", "short")
    values = [
        float(points[-1][1])
        for q in queries
        for s in q["result"]
        for points in [s.get("values") or [s.get("value")]]
        if points and points[-1] is not None
    ]
    value = next((v for v in reversed(values) if math.isfinite(v)), math.nan)
    color = _TEXT
    for step in defaults.get("thresholds", {}).get("steps", []):
        if step.get("value") is None or (math.isfinite(value) and value >= step["value"]):
            color = {"red": "#f2495c", "yellow": "#fade2a", "green": "#73bf69"}.get(
                step["color"], step["color"]
            )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(
        0.5,
        0.45,
        format_value(value, unit) if math.isfinite(value) else "No data",
        color=color,
        fontsize=30,
        ha="center",
        va="center",
        weight="bold",
        transform=ax.transAxes,
    )


def plot(data: dict[str, Any], model: dict[str, Any], output: Path) -> None:
    """Draw every panel of ``model`` at its grid position from ``data``; write a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _panels(model)
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    width, height = 24 * _COLUMN, rows * _ROW + 0.6
    fig = plt.figure(figsize=(width, height), facecolor=_BACKGROUND)
    by_panel: dict[int, list[dict[str, Any]]] = {}
    for q in data["queries"]:
        by_panel.setdefault(q["panel"], []).append(q)
    top = 0.6 / height  # the title strip
    seconds = float(data["end"]) - float(data["start"])
    fig.text(
        0.01,
        1 - top / 2,
        f"{model.get('title', 'dashboard')}: real Prometheus data, last {seconds:.0f} s",
        color=_TEXT,
        fontsize=13,
        va="center",
    )

    def box(pos: dict[str, int]) -> tuple[float, float, float, float]:
        x, y, w, h = pos["x"], pos["y"], pos["w"], pos["h"]
        left = x / 24
        bottom = 1 - top - (y + h) * _ROW / height
        return left, bottom, w / 24, h * _ROW / height

    for panel in panels:
        left, bottom, w, h = box(panel["gridPos"])
        if panel["type"] == "row":
            fig.text(
                left + 0.005,
                bottom + h / 2,
                panel["title"],
                color="#ffffff",
                fontsize=11,
                weight="bold",
                va="center",
            )
            continue
        # Inside the cell: room for the title on top, tick labels left and below.
        stat = panel["type"] == "stat"
        pad_left = (0.25 if stat else 0.85) / width
        pad_bottom = (0.15 if stat else 0.45) / height
        pad_right, pad_top = 0.2 / width, 0.4 / height
        ax = fig.add_axes(
            (
                left + pad_left,
                bottom + pad_bottom,
                w - pad_left - pad_right,
                h - pad_bottom - pad_top,
            )
        )
        _style(ax)
        ax.set_title(panel["title"], color=_TEXT, fontsize=9, loc="left", pad=4)
        queries = by_panel.get(panel["id"], [])
        if stat:
            _draw_stat(ax, panel, queries)
        else:
            _draw_series(ax, panel, queries, float(data["start"]))
    fig.savefig(output, dpi=72, facecolor=_BACKGROUND)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Plot a data file to a PNG; 2 on bad input (with the reason on stderr)."""
    parser = argparse.ArgumentParser(prog="python -m dashboards.plot", description=__doc__)
    parser.add_argument("data", type=Path, help="JSON written by the Prometheus test")
    parser.add_argument("--output", type=Path, default=PICTURE, help="default: %(default)s")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD, help="default: %(default)s")
    args = parser.parse_args(argv)
    try:
        data = load(args.data)
        model = json.loads(Path(args.dashboard).read_text(encoding="utf-8"))
    except (DataError, OSError, json.JSONDecodeError) as exc:
        sys.stderr.write(f"python -m dashboards.plot: {exc}\n")
        return 2
    plot(data, model, args.output)
    sys.stdout.write(f"wrote {args.output}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
