"""The shipped alert rules: promtool accepts them, their unit tests pass, and every rule carries
``for:``, a severity and runbook text, with a firing and a not-firing unit test."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
RULES = DASHBOARDS / "alerts.yml"
RULE_TESTS = DASHBOARDS / "alerts_test.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian package 'prometheus'; .ci/run installs it)",
)
#: What the rules must cover, by alert name.
REQUIRED = {
    "AiocacheWritebackFailing",
    "AiocacheDirtyNearLimit",
    "AiocacheHitRatioCollapse",
    "AiocacheUsageOverBudget",
    "AiocacheBackingErrors",
    "AiocacheGatewayHigh5xxRatio",
    "AiocacheWritersThrottled",
}


def load_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def promtool(*args: str, cwd: Path = DASHBOARDS) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@needs_promtool
def test_promtool_check_rules() -> None:
    out = promtool("check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in out.stdout


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    out = promtool("test", "rules", str(RULE_TESTS))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


@needs_promtool
def test_promtool_catches_a_broken_rule_and_a_wrong_expectation(tmp_path: Path) -> None:
    """The two promtool checks above can fail: a bad expression, an alert that does not fire."""
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: rate(x[5m] > 0\n",
        encoding="utf-8",
    )
    assert promtool("check", "rules", str(broken)).returncode != 0
    # The shipped unit tests against rules that never fire: every firing case must fail.
    never = tmp_path / "alerts.yml"
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["expr"] = "vector(1) == 0"
    never.write_text(yaml.safe_dump(rules), encoding="utf-8")
    shutil.copy(RULE_TESTS, tmp_path / "alerts_test.yml")
    out = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert out.returncode != 0
    assert out.stdout.count("alertname: ") + out.stderr.count("alertname: ") == len(REQUIRED)


def test_every_rule_has_for_severity_and_runbook() -> None:
    rules = load_rules()
    assert {r["alert"] for r in rules} == REQUIRED
    for rule in rules:
        name = rule["alert"]
        assert rule["for"].endswith("m"), name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook"} <= annotations.keys(), name
        assert len(annotations["runbook"]) > 100, name
        assert "by (job, instance" in rule["expr"], name


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    assert tests["rule_files"] == ["alerts.yml"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
            for alert in check["exp_alerts"]:
                assert {"summary", "description", "runbook"} <= alert["exp_annotations"].keys()
    assert firing == REQUIRED
    assert quiet == REQUIRED
