"""The shipped Grafana dashboard: committed JSON is fresh, every series it queries exists, and
every panel is well formed."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client import CollectorRegistry

from aiocache_inode import PAGE_SIZE, CacheStore, MemoryBacking
from dashboards import build

if TYPE_CHECKING:
    from pathlib import Path

SERIES = re.compile(r"aiocache_inode_[a-z_]+")


def panels(model: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including any nested in a collapsed row."""
    out: list[dict[str, Any]] = []
    for panel in model["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def queries(model: dict[str, Any]) -> list[str]:
    """Every PromQL expression: panel targets and template variable queries."""
    exprs = [t["expr"] for p in panels(model) for t in p.get("targets", [])]
    exprs += [v["query"] for v in model["templating"]["list"] if v["type"] == "query"]
    return exprs


@pytest.fixture(scope="module")
def model() -> dict[str, Any]:
    return build.build()


def test_committed_json_is_a_fresh_build() -> None:
    committed = build.OUTPUT.read_text(encoding="utf-8")
    assert committed == build.render(), "run: python -m dashboards.build"
    assert build.main(["--check"]) == 0


def test_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "stale.json"
    stale.write_text("{}\n", encoding="utf-8")
    assert build.main(["--check", "--output", str(stale)]) == 1
    assert build.main(["--output", str(stale)]) == 0
    assert build.main(["--check", "--output", str(stale)]) == 0


async def test_every_queried_series_exists(model: dict[str, Any]) -> None:
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
        assert registry.get_sample_value(
            "aiocache_inode_backing_request_seconds_count", {"op": "read"}
        )
    referenced = {name for expr in queries(model) for name in SERIES.findall(expr)}
    assert len(referenced) >= 20
    assert referenced <= names, f"not exported: {sorted(referenced - names)}"


def test_panel_ids_unique(model: dict[str, Any]) -> None:
    ids = [p["id"] for p in panels(model)]
    assert len(ids) == len(set(ids))
    assert all(isinstance(i, int) for i in ids)


def test_every_panel_has_datasource_and_unit(model: dict[str, Any]) -> None:
    ds = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    data_panels = [p for p in panels(model) if p["type"] != "row"]
    assert len(data_panels) == 15
    for p in data_panels:
        assert p["datasource"] == ds, p["title"]
        assert p["fieldConfig"]["defaults"]["unit"], p["title"]
        assert p["targets"], p["title"]
        assert all(t["datasource"] == ds for t in p["targets"]), p["title"]


def test_rows_and_variables(model: dict[str, Any]) -> None:
    rows = [p["title"] for p in model["panels"] if p["type"] == "row"]
    assert rows == ["Overview", "Memory & eviction", "Write-back", "Backing store", "Readahead"]
    assert model["schemaVersion"] == 39
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert "aiocache_inode_memory_limit_bytes" in variables["instance"]["query"]
    assert {"job", "instance"} <= variables.keys()
    assert [p["type"] for p in panels(model)].count("stat") == 1
