"""Every dashboard query and every alert expression, evaluated by a real Prometheus.

Prometheus (Debian's package) runs as a plain process on a free loopback port with a temporary
storage directory, scraping a process under load every second and evaluating ``alerts.yml``.
Then each panel target, parsed from the built dashboard with the variables substituted as
Grafana would, goes through ``/api/v1/query`` and ``/api/v1/query_range`` and must answer with
series holding finite values; each alert expression must evaluate, and its ``bool`` form (every
comparison kept as 0/1) must return series, so a wrong name or a label mismatch between the two
sides of a ratio fails here rather than staying silent in production.

Set ``AIOCACHE_DASHBOARD_DATA=path.json`` to keep the range results for ``dashboards/plot.py``
(``make dashboard-picture``), and ``AIOCACHE_DASHBOARD_SECONDS`` to run the load longer first.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]

from dashboards import build

from .loadserver import LoadServer
from .promserver import (
    PROMETHEUS,
    PROMTOOL,
    SCRAPE_INTERVAL,
    Prometheus,
    finite_values,
    grafana_variable_query,
    poll,
    regex_of,
    run_prometheus,
    substitute,
    with_bool,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="prometheus/promtool not installed (Debian package 'prometheus'; .ci/run installs it)",
)

RULES = Path(build.__file__).with_name("alerts.yml")
#: Scrapes held before the queries run: $__rate_interval is four, so rates have data.
MIN_SCRAPES = 8


@dataclass
class Target:
    """A process Prometheus scrapes, and what its load is expected to show.

    Attributes:
        job: the scrape job's name.
        address: ``host:port`` of its ``/metrics``.
        gateway: whether it exports the gateway's HTTP series (the gateway row has data).
        firing: alerts whose expressions the load makes return series (before ``for:``).
    """

    job: str
    address: str
    gateway: bool
    firing: set[str] = field(default_factory=set)

    @property
    def metrics_url(self) -> str:
        return f"http://{self.address}/metrics"


@pytest.fixture
def cache_target() -> Iterator[Target]:
    """A CacheStore under load with backing faults injected, its registry at /metrics."""
    server = LoadServer()
    server.start()
    try:
        yield Target(
            job="aiocache",
            address=f"127.0.0.1:{server.port}",
            gateway=False,
            # Only the alerts that compare ratios or test for > 0: a 5m rate over the test's
            # few seconds of samples is that increase over 300 s, far below a rate threshold.
            firing={"AiocacheWritebackFailing", "AiocacheBackingErrors"},
        )
    finally:
        server.stop()
    assert not server.errors, server.errors


def panel_targets(model: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every query of every panel, rows' nested panels included."""
    out: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for panel in model["panels"]:
        for p in [panel, *panel.get("panels", [])]:
            out.extend((p, t) for t in p.get("targets", []))
    return out


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def check_variables(prom: Prometheus, model: dict[str, Any], target: Target) -> dict[str, str]:
    """The job and instance variables list the target; return the variables as Grafana would
    interpolate them with exactly this job and instance selected."""
    variables: dict[str, str] = {}
    for var in model["templating"]["list"]:
        if var["type"] != "query":
            continue
        values = grafana_variable_query(prom, var["query"], variables)
        mine = {"job": target.job, "instance": target.address}[var["name"]]
        assert mine in values, (var["name"], values)
        variables[var["name"]] = regex_of([mine])
    return variables


def test_every_query_and_alert_on_a_real_prometheus(tmp_path: Path, cache_target: Target) -> None:
    target = cache_target
    model = build.build()
    with run_prometheus(tmp_path, [(target.job, target.address)], rule_files=[RULES]) as prom:
        # Prometheus 2.42 takes a few seconds before its first scrape: poll, bounded.
        poll("the first scrape", lambda: prom.samples(target.job) >= 1)
        t_first = time.time()
        extra = float(os.environ.get("AIOCACHE_DASHBOARD_SECONDS", "0"))
        poll(
            f"{MIN_SCRAPES} scrapes",
            lambda: prom.samples(target.job) >= MIN_SCRAPES and time.time() >= t_first + extra,
            deadline=60 + extra,
        )
        t_eval = time.time()
        up = prom.query(f'up{{job="{target.job}"}}', t_eval)["result"]
        assert [s["value"][1] for s in up] == ["1"]

        variables = check_variables(prom, model, target)
        variables |= {
            "__rate_interval": f"{4 * SCRAPE_INTERVAL:g}s",
            "__interval": f"{SCRAPE_INTERVAL:g}s",
            "__range": f"{max(round(t_eval - t_first), 1)}s",
        }
        dump: list[dict[str, Any]] = []
        empty: list[str] = []
        for panel, t in panel_targets(model):
            expr = substitute(t["expr"], variables)
            where = f"{panel['title']} / {t['refId']}: {expr}"
            has_data = target.gateway or "aiocache_gateway_" not in expr
            instant = prom.query(expr, t_eval)
            assert instant["resultType"] == "vector", where
            if t.get("instant"):
                got = instant
            else:
                got = prom.query_range(expr, t_first, t_eval, SCRAPE_INTERVAL)
                assert got["resultType"] == "matrix", where
            if has_data:
                assert finite_values(instant) > 0, f"no data at {t_eval}: {where}"
                assert finite_values(got) > 0, f"no data: {where}"
            else:
                # The gateway's series come from the gateway only: nothing, but no error.
                assert got["result"] == [], where
                empty.append(panel["title"])
            dump.append(
                {
                    "panel": panel["id"],
                    "refId": t["refId"],
                    "legendFormat": t.get("legendFormat", ""),
                    "instant": bool(t.get("instant")),
                    "expr": expr,
                    "result": got["result"],
                }
            )
        assert target.gateway or set(empty) == {
            p["title"] for p in model["panels"] if "aiocache_gateway_" in json.dumps(p)
        }

        for rule in alert_rules():
            name, expr = rule["alert"], rule["expr"]
            has_data = target.gateway or "aiocache_gateway_" not in expr
            raw = prom.query(expr, t_eval)
            assert raw["resultType"] == "vector", name
            full = prom.query(with_bool(expr), t_eval)
            assert full["resultType"] == "vector", name
            if has_data:
                assert full["result"], f"{name}: no series match: {with_bool(expr)}"
                labels = {(s["metric"]["job"], s["metric"]["instance"]) for s in full["result"]}
                assert labels == {(target.job, target.address)}, name
            if name in target.firing:
                assert raw["result"], f"{name} should be true under this load: {expr}"

        # Prometheus itself loaded and evaluated the rules; the load puts these ones pending.
        def evaluated() -> list[dict[str, Any]]:
            groups = prom.api("rules")["groups"]
            rules = [r for g in groups for r in g["rules"]]
            done = all(r.get("lastEvaluation", "").startswith("20") for r in rules)
            return rules if done and len(rules) == len(alert_rules()) else []

        for rule in poll("rule evaluation", evaluated):
            assert rule["health"] == "ok", rule
        active = poll(
            "pending alerts",
            lambda: (
                {a["labels"]["alertname"] for a in prom.api("alerts")["alerts"]} >= target.firing
            ),
        )
        assert active

        if path := os.environ.get("AIOCACHE_DASHBOARD_DATA"):
            Path(path).write_text(
                json.dumps({"start": t_first, "end": t_eval, "queries": dump}), encoding="utf-8"
            )

    metrics = httpx.get(target.metrics_url, timeout=10).text
    assert PROMTOOL is not None
    lint = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=metrics,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_with_bool_keeps_label_matchers() -> None:
    expr = 'sum(rate(x{status=~"5..", a!="b"}[5m])) / sum(y) > 0.05 and z{l=">"} <= 1'
    assert with_bool(expr) == (
        'sum(rate(x{status=~"5..", a!="b"}[5m])) / sum(y) > bool 0.05 and z{l=">"} <= bool 1'
    )
    assert with_bool("a > bool 1") == "a > bool 1"


def test_substitute_refuses_unknown_variables() -> None:
    variables = {"job": "a", "__rate_interval": "4s"}
    assert substitute('x{job=~"$job"}[$__rate_interval]', variables) == 'x{job=~"a"}[4s]'
    with pytest.raises(AssertionError, match="unsubstituted"):
        substitute("x[$__range]", {"job": "a"})
    assert regex_of(["127.0.0.1:80"]) == r"127\\.0\\.0\\.1:80"
    assert regex_of(["a", "b"]) == "(a|b)"
