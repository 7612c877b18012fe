"""Alert and recording rules (deploy/prometheus): promtool checks them and runs their unit tests, and the
suite keeps the promises around them: every alert has a unit test that fires it, the normal-traffic test names
every alert, every alert has a runbook section, and the Kubernetes PrometheusRule carries the same groups.

promtool ships with the Debian `prometheus` package (.ci/run installs it); without it those tests skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ROOT

RULES_DIR = ROOT / "deploy" / "prometheus"
RULE_FILES = sorted(RULES_DIR.glob("*.rules.yml"))
UNIT_TESTS = sorted((RULES_DIR / "tests").glob("*.test.yml"))
OPERATIONS = ROOT / "docs" / "operations.md"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not on PATH (Debian package `prometheus`)")


def rules(kind: str) -> list[dict[str, Any]]:
    return [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if kind in rule]


ALERTS = rules("alert")


def alert_cases(path: Path) -> list[dict[str, Any]]:
    return [case for test in yaml.safe_load(path.read_text())["tests"] for case in test.get("alert_rule_test", [])]


def test_rule_files_exist() -> None:
    assert [p.name for p in RULE_FILES] == ["alerts.rules.yml", "recording.rules.yml"]
    assert len(ALERTS) >= 15 and len(rules("record")) >= 10


@needs_promtool
def test_promtool_check_rules() -> None:
    done = subprocess.run([PROMTOOL, "check", "rules", *map(str, RULE_FILES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_check_rejects_a_broken_rule(tmp_path: Path) -> None:
    """The check above means something: a PromQL syntax error fails it."""
    broken = tmp_path / "broken.rules.yml"
    broken.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [
        {"alert": "Broken", "expr": "sum(rate(weaver_requests_total[5m])"}]}]}))
    done = subprocess.run([PROMTOOL, "check", "rules", str(broken)], capture_output=True, text=True)
    assert done.returncode != 0


@pytest.mark.slow
@needs_promtool
@pytest.mark.parametrize("unit_test", UNIT_TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(unit_test: Path) -> None:
    done = subprocess.run([PROMTOOL, "test", "rules", unit_test.name], cwd=unit_test.parent, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_unit_test_fails_when_an_alert_is_not_expected(tmp_path: Path) -> None:
    """A unit test that expects silence where the rule fires fails: the suite detects a wrong expectation."""
    test = {
        "rule_files": [str(RULES_DIR / "recording.rules.yml"), str(RULES_DIR / "alerts.rules.yml")],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m",
                   "input_series": [{"series": 'weaver_queue_workers{job="weaver-gateway"}', "values": "0x10"}],
                   "alert_rule_test": [{"eval_time": "6m", "alertname": "WeaverNoLiveWorkers", "exp_alerts": []}]}],
    }
    path = tmp_path / "wrong.test.yml"
    path.write_text(yaml.safe_dump(test))
    done = subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "WeaverNoLiveWorkers" in done.stdout + done.stderr


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    fired = {case["alertname"] for path in UNIT_TESTS if path.name != "normal.test.yml"
             for case in alert_cases(path) if case.get("exp_alerts")}
    missing = sorted({a["alert"] for a in ALERTS} - fired)
    assert not missing, f"alerts without a unit test that expects them to fire: {missing}"


def test_normal_traffic_test_covers_every_alert() -> None:
    cases = alert_cases(RULES_DIR / "tests" / "normal.test.yml")
    assert all(case["exp_alerts"] == [] for case in cases)
    covered = {case["alertname"] for case in cases}
    missing = sorted({a["alert"] for a in ALERTS} - covered)
    assert not missing, f"normal.test.yml does not check that these stay silent: {missing}"


def test_alerts_are_labelled_annotated_and_have_runbooks() -> None:
    headings = {re.sub(r"[^a-z0-9_ -]", "", h.strip().lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.+)$", OPERATIONS.read_text(), re.MULTILINE)}
    for alert in ALERTS:
        name = alert["alert"]
        assert re.fullmatch(r"Weaver[A-Z][A-Za-z]+", name), name
        assert alert["labels"]["severity"] in ("critical", "warning"), name
        assert {"summary", "description", "runbook"} <= set(alert["annotations"]), name
        page, _, anchor = alert["annotations"]["runbook"].partition("#")
        assert page == "docs/operations.md" and anchor == name.lower(), name
        assert anchor in headings, f"docs/operations.md has no runbook section for {name}"
    names = [a["alert"] for a in ALERTS]
    assert len(names) == len(set(names)), "duplicate alert names"


def test_prometheusrule_manifest_is_generated_from_the_rules_files() -> None:
    done = subprocess.run([sys.executable, str(RULES_DIR / "prometheusrule.py"), "--check"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    manifest = yaml.safe_load((ROOT / "deploy" / "k8s" / "base" / "prometheusrule.yaml").read_text())
    plain = [group for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]]
    assert sorted(manifest["spec"]["groups"], key=lambda g: g["name"]) == sorted(plain, key=lambda g: g["name"])


def test_group_names_are_unique_across_files() -> None:
    """The PrometheusRule puts every group in one list, where Prometheus requires unique names."""
    names = [group["name"] for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]]
    assert len(names) == len(set(names)), names


@needs_promtool
def test_promtool_accepts_the_prometheusrule_groups(tmp_path: Path) -> None:
    manifest = yaml.safe_load((ROOT / "deploy" / "k8s" / "base" / "prometheusrule.yaml").read_text())
    as_file = tmp_path / "prometheusrule-groups.yml"
    as_file.write_text(yaml.safe_dump({"groups": manifest["spec"]["groups"]}))
    done = subprocess.run([PROMTOOL, "check", "rules", str(as_file)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
