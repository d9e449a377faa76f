"""The README picture's plotter: draws every panel from query_range data, refuses bad input."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from dashboards import build, plot

if TYPE_CHECKING:
    from pathlib import Path


def synthetic(model: dict[str, Any]) -> dict[str, Any]:
    """One two-point series per target, as the Prometheus test writes them."""
    series = {
        "metric": {"op": "read", "operation": "GetObject", "status": "200"},
        "values": [[100.0, "0.5"], [101.0, "NaN"], [102.0, "0.75"]],
    }
    queries = [
        {
            "panel": panel["id"],
            "refId": t["refId"],
            "legendFormat": t["legendFormat"],
            "instant": t["instant"],
            "expr": t["expr"],
            "result": [series],
        }
        for panel in model["panels"]
        for t in panel.get("targets", [])
    ]
    return {"start": 100.0, "end": 102.0, "queries": queries}


def test_plot_writes_a_png(tmp_path: Path) -> None:
    data = tmp_path / "data.json"
    data.write_text(json.dumps(synthetic(build.build())), encoding="utf-8")
    out = tmp_path / "dashboard.png"
    assert plot.main([str(data), "--output", str(out)]) == 0
    head = out.read_bytes()[:8]
    assert head == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 20_000


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("{not json", "not JSON"),
        ("[1, 2]", "expected an object with start, end and queries"),
        ('{"start": 0, "end": 1, "queries": [{"panel": 1}]}', "every query needs"),
    ],
)
def test_bad_data_is_refused_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    data = tmp_path / "data.json"
    if content is not None:
        data.write_text(content, encoding="utf-8")
    out = tmp_path / "dashboard.png"
    assert plot.main([str(data), "--output", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_legend_and_units() -> None:
    assert plot.legend("p99 {{op}}", {"op": "read"}) == "p99 read"
    assert plot.legend("", {"b": "2", "a": "1"}) == "a=1, b=2"
    assert plot.legend("{{reason}}", {}) == "value"
    assert plot.format_value(0.25, "percentunit") == "25%"
    assert plot.format_value(3 << 20, "Bps") == "3 MiB/s"
    assert plot.format_value(0.004, "s") == "4 ms"
    assert plot.format_value(1500, "reqps") == "1.5k/s"
    assert plot.format_value(float("nan"), "bytes") == "-"
