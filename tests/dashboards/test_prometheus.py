"""Every dashboard query and every alert expression, evaluated by a real Prometheus.

Prometheus (Debian's package) runs as a plain process on a free loopback port with a temporary
storage directory, evaluating ``alerts.yml`` and scraping two targets every second: the S3
gateway (``python -m examples.object_store_gateway``) under boto3 traffic, which feeds every row
of the dashboard, and a CacheStore with backing faults injected, which makes the error-driven
alerts true (the gateway's local backing never fails).
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
from tests.examples.gateway.conftest import start_gateway

from .gatewayload import GatewayLoad
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
    """A CacheStore under load with backing faults injected, its registry at /metrics.

    The gateway's backing never fails; this target proves the error-driven alerts fire.
    """
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


@pytest.fixture
def gateway_target(tmp_path: Path) -> Iterator[Target]:
    """``python -m examples.object_store_gateway`` (the ``gateway_server`` fixture's start-up)
    with a 4 MiB cache, under S3 traffic from boto3; stopped with SIGTERM, which must exit 0."""
    home = tmp_path / "gateway"
    home.mkdir()
    gw = start_gateway(home, extra_args=["--memory-limit", "4MiB"])
    try:
        load = GatewayLoad(gw)
        load.start()
        try:
            yield Target(
                job="gateway",
                address=f"127.0.0.1:{gw.port}",
                gateway=True,
                # One request in ten is an unsupported subresource: 501 NotImplemented.
                firing={"AiocacheGatewayHigh5xxRatio"},
            )
        finally:
            load.stop()
        assert not load.errors, load.errors
    finally:
        code = gw.stop()
    assert code == 0, gw.log()


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


def check_panels(
    prom: Prometheus, model: dict[str, Any], target: Target, t_first: float, t_eval: float
) -> list[dict[str, Any]]:
    """Every panel target, for this job and instance, answers with data; the range results."""
    variables = check_variables(prom, model, target)
    variables |= {
        "__rate_interval": f"{4 * SCRAPE_INTERVAL:g}s",
        "__interval": f"{SCRAPE_INTERVAL:g}s",
        "__range": f"{max(round(t_eval - t_first), 1)}s",
    }
    dump: list[dict[str, Any]] = []
    empty: set[str] = set()
    for panel, t in panel_targets(model):
        expr = substitute(t["expr"], variables)
        where = f"{target.job}: {panel['title']} / {t['refId']}: {expr}"
        instant = prom.query(expr, t_eval)
        assert instant["resultType"] == "vector", where
        if t.get("instant"):
            got = instant
        else:
            got = prom.query_range(expr, t_first, t_eval, SCRAPE_INTERVAL)
            assert got["resultType"] == "matrix", where
        if target.gateway or "aiocache_gateway_" not in expr:
            assert finite_values(instant) > 0, f"no data at {t_eval}: {where}"
            assert finite_values(got) > 0, f"no data: {where}"
        else:
            # The gateway's series come from the gateway only: nothing, but no error.
            assert got["result"] == [], where
            empty.add(panel["title"])
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
    gateway_panels = {p["title"] for p in model["panels"] if "aiocache_gateway_" in json.dumps(p)}
    assert empty == (set() if target.gateway else gateway_panels)
    return dump


def check_alerts(prom: Prometheus, target: Target, t_eval: float) -> None:
    """Every alert expression evaluates; its bool form has a series for the target wherever
    the target exports the series; the alerts the load drives are true."""
    for rule in alert_rules():
        name, expr = rule["alert"], rule["expr"]
        raw = prom.query(expr, t_eval)
        assert raw["resultType"] == "vector", name
        full = prom.query(with_bool(expr), t_eval)
        assert full["resultType"] == "vector", name
        labels = {(s["metric"]["job"], s["metric"]["instance"]) for s in full["result"]}
        if target.gateway or "aiocache_gateway_" not in expr:
            assert (target.job, target.address) in labels, f"{name}: {with_bool(expr)}: {full}"
        else:
            assert (target.job, target.address) not in labels, name
        firing = {(s["metric"]["job"], s["metric"]["instance"]) for s in raw["result"]}
        if name in target.firing:
            assert (target.job, target.address) in firing, f"{name} should be true: {expr}"


def test_every_query_and_alert_on_a_real_prometheus(
    tmp_path: Path, gateway_target: Target, cache_target: Target
) -> None:
    targets = [gateway_target, cache_target]
    model = build.build()
    scrape = [(t.job, t.address) for t in targets]
    with run_prometheus(tmp_path, scrape, rule_files=[RULES]) as prom:
        # Prometheus 2.42 takes a few seconds before its first scrape: poll, bounded.
        poll("the first scrapes", lambda: all(prom.samples(t.job) >= 1 for t in targets))
        t_first = time.time()
        extra = float(os.environ.get("AIOCACHE_DASHBOARD_SECONDS", "0"))
        poll(
            f"{MIN_SCRAPES} scrapes",
            lambda: (
                all(prom.samples(t.job) >= MIN_SCRAPES for t in targets)
                and time.time() >= t_first + extra
            ),
            deadline=60 + extra,
        )
        t_eval = time.time()
        for t in targets:
            up = prom.query(f'up{{job="{t.job}"}}', t_eval)["result"]
            assert [s["value"][1] for s in up] == ["1"], t.job

        dumps = {t.job: check_panels(prom, model, t, t_first, t_eval) for t in targets}
        for t in targets:
            check_alerts(prom, t, t_eval)

        # Prometheus itself loaded and evaluated the rules; the loads put these ones pending.
        def evaluated() -> list[dict[str, Any]]:
            groups = prom.api("rules")["groups"]
            rules = [r for g in groups for r in g["rules"]]
            done = all(r.get("lastEvaluation", "").startswith("20") for r in rules)
            return rules if done and len(rules) == len(alert_rules()) else []

        for rule in poll("rule evaluation", evaluated):
            assert rule["health"] == "ok", rule
        expected = set().union(*(t.firing for t in targets))
        poll(
            "pending alerts",
            lambda: {a["labels"]["alertname"] for a in prom.api("alerts")["alerts"]} >= expected,
        )

        if path := os.environ.get("AIOCACHE_DASHBOARD_DATA"):
            Path(path).write_text(
                json.dumps({"start": t_first, "end": t_eval, "queries": dumps["gateway"]}),
                encoding="utf-8",
            )

    assert PROMTOOL is not None
    for t in targets:
        metrics = httpx.get(t.metrics_url, timeout=10).text
        lint = subprocess.run(
            [PROMTOOL, "check", "metrics"],
            input=metrics,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert lint.returncode == 0, f"{t.job}: {lint.stdout}{lint.stderr}"


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
