"""docs/operations.md: its panel, alert, recording-rule and metric tables are generated from the dashboard JSON
and the rules files (docs/gen/operations.py); the committed page must be what the generator writes now."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.support import ROOT

PAGE = ROOT / "docs" / "operations.md"


def generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("docs_gen_operations", ROOT / "docs" / "gen" / "operations.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_page_is_up_to_date() -> None:
    current = PAGE.read_text()
    assert generator().render(current) == current, "docs/operations.md is stale: run python docs/gen/operations.py"


def test_tables_list_every_panel_and_alert() -> None:
    page = PAGE.read_text()
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "weaver-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert f"| {panel['title']} |" in page, panel["title"]
    gen = generator()
    for rule in gen._rules("alert"):
        assert f"| [{rule['alert']}](#{rule['alert'].lower()}) |" in page


def test_a_changed_dashboard_makes_the_page_stale(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gen = generator()
    dashboard = json.loads(gen.DASHBOARD.read_text())
    dashboard["panels"][1]["title"] = "Renamed panel"
    changed = tmp_path / "dashboard.json"
    changed.write_text(json.dumps(dashboard))
    monkeypatch.setattr(gen, "DASHBOARD", changed)
    current = PAGE.read_text()
    assert gen.render(current) != current
    assert "| Renamed panel |" in gen.render(current)


def test_page_has_one_title() -> None:
    assert [line for line in PAGE.read_text().splitlines() if line.startswith("# ")] == [
        "# Operations: metrics, dashboard, alerts and runbooks"]
