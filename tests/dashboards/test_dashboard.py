"""The shipped Grafana dashboard: committed JSON is fresh, every series it queries exists, every
selector filters by the job and instance variables, and every panel names the data source
variable."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client import CollectorRegistry

from aiocache_inode import PAGE_SIZE, CacheStore, MemoryBacking
from dashboards import build

if TYPE_CHECKING:
    from pathlib import Path

CACHE_SERIES = re.compile(r"aiocache_inode_[a-z_]+")
#: The gateway's HTTP series, fixed by the gateway's contract (histograms by their _bucket).
GATEWAY_SERIES = {
    "aiocache_gateway_requests_total",
    "aiocache_gateway_request_seconds_bucket",
    "aiocache_gateway_received_bytes_total",
    "aiocache_gateway_sent_bytes_total",
    "aiocache_gateway_requests_in_flight",
    "aiocache_gateway_cache_results_total",
}
#: A metric name followed by its label matchers, if any.
SELECTOR = re.compile(r"(aiocache_[a-z_]+)(\{[^}]*\})?")
DS = {"type": "prometheus", "uid": "${datasource}"}


def panels(model: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including any nested in a collapsed row."""
    out: list[dict[str, Any]] = []
    for panel in model["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def targets(model: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for p in panels(model) for t in p.get("targets", [])]


def queries(model: dict[str, Any]) -> list[str]:
    """Every PromQL expression: panel targets and template variable queries."""
    exprs = [t["expr"] for t in targets(model)]
    exprs += [v["query"] for v in model["templating"]["list"] if v["type"] == "query"]
    return exprs


@pytest.fixture(scope="module")
def model() -> dict[str, Any]:
    return build.build()


def test_committed_json_is_a_fresh_build() -> None:
    committed = build.OUTPUT.read_text(encoding="utf-8")
    assert committed == build.render(), "run: python -m dashboards.build"
    assert json.loads(committed) == build.build()
    assert build.main(["--check"]) == 0


def test_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "stale.json"
    stale.write_text("{}\n", encoding="utf-8")
    assert build.main(["--check", "--output", str(stale)]) == 1
    assert build.main(["--check", "--output", str(tmp_path / "missing.json")]) == 1
    assert build.main(["--output", str(stale)]) == 0
    assert build.main(["--check", "--output", str(stale)]) == 0


def test_unknown_panel_kind_is_refused() -> None:
    spec = build.PanelSpec("x", "short", (("up", "up"),), kind="gauge")
    with pytest.raises(ValueError, match="unknown panel kind 'gauge'"):
        build._panel(spec, 1)


def test_schema_is_grafana_11() -> None:
    committed = json.loads(build.OUTPUT.read_text(encoding="utf-8"))
    assert committed["schemaVersion"] >= 41


async def test_every_queried_cache_series_exists(model: dict[str, Any]) -> None:
    registry = CollectorRegistry()
    backing = MemoryBacking(bytes(4 * PAGE_SIZE))
    async with CacheStore(1 << 20, registry=registry) as store:
        async with store.open("k", backing) as inode:
            assert await inode.read(0, PAGE_SIZE) == bytes(PAGE_SIZE)
            await inode.write(0, b"x" * 100)  # a cached page: dirty, written back below
            await inode.write_out()
        # Collect while the store is open: closing unregisters its series.
        names = {s.name for m in registry.collect() for s in m.samples}
        assert registry.get_sample_value("aiocache_inode_writeback_seconds_count") == 1
    referenced = {name for expr in queries(model) for name in CACHE_SERIES.findall(expr)}
    assert len(referenced) >= 20
    assert referenced <= names, f"not exported: {sorted(referenced - names)}"


def test_gateway_row_uses_the_contract_names(model: dict[str, Any]) -> None:
    referenced = {name for expr in queries(model) for name, _ in SELECTOR.findall(expr)} - set(
        CACHE_SERIES.findall(" ".join(queries(model)))
    )
    assert referenced == GATEWAY_SERIES


def test_every_selector_filters_by_job_and_instance(model: dict[str, Any]) -> None:
    exprs = [t["expr"] for t in targets(model)]
    assert exprs
    for expr in exprs:
        found = SELECTOR.findall(expr)
        assert found, expr
        for name, matchers in found:
            assert 'job=~"$job"' in matchers, (name, expr)
            assert 'instance=~"$instance"' in matchers, (name, expr)


def test_every_panel_refers_to_the_datasource_variable(model: dict[str, Any]) -> None:
    data_panels = [p for p in panels(model) if p["type"] != "row"]
    assert len(data_panels) == 20
    for p in data_panels:
        assert p["datasource"] == DS, p["title"]
        assert p["fieldConfig"]["defaults"]["unit"], p["title"]
        assert p["targets"], p["title"]
        assert all(t["datasource"] == DS for t in p["targets"]), p["title"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"]), p["title"]


def test_panel_ids_unique_and_layout_fits_the_grid(model: dict[str, Any]) -> None:
    ids = [p["id"] for p in panels(model)]
    assert len(ids) == len(set(ids))
    assert all(isinstance(i, int) for i in ids)
    cells: set[tuple[int, int]] = set()
    for p in panels(model):
        pos = p["gridPos"]
        assert pos["x"] >= 0, p["title"]
        assert pos["x"] + pos["w"] <= 24, p["title"]
        mine = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine


def test_rows_and_variables(model: dict[str, Any]) -> None:
    rows = [p["title"] for p in model["panels"] if p["type"] == "row"]
    assert rows == [
        "Cache",
        "Memory & eviction",
        "Write-back",
        "Backing store",
        "Readahead",
        "S3 gateway",
    ]
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "instance"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == DS
        assert variables[name]["includeAll"] is True
    assert variables["job"]["query"] == "label_values(aiocache_inode_memory_limit_bytes, job)"
    assert 'job=~"$job"' in variables["instance"]["query"]
    assert [p["type"] for p in panels(model)].count("stat") == 1


def test_issue_panels_are_all_there(model: dict[str, Any]) -> None:
    exprs = " ".join(queries(model))
    for series in (
        "cache_hits_total",
        "read_bytes_total",
        "usage_bytes",
        "cached_bytes",
        "pinned_bytes",
        "dirty_bytes",
        "memory_limit_bytes",
        "dirty_limit_bytes",
        "writeback_bytes_total",
        "writeback_seconds_bucket",
        "writeback_errors_total",
        "evicted_bytes_total",
        "backing_requests_total",
        "backing_request_seconds_bucket",
        "writer_throttled_seconds_total",
        'readahead_outcome_bytes_total{outcome="used"',
        'readahead_outcome_bytes_total{outcome="wasted"',
        "inodes",
    ):
        assert f"aiocache_inode_{series}" in exprs, series
    gateway = [p for p in panels(model) if "aiocache_gateway_" in json.dumps(p.get("targets"))]
    legends = {t["legendFormat"] for p in gateway for t in p["targets"]}
    assert {"p50 {{operation}}", "p99 {{operation}}", "{{operation}} {{status}}"} <= legends
    assert "{{result}}" in legends
