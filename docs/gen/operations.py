"""Regenerates the tables of docs/operations.md from the Grafana dashboard JSON and the Prometheus rules files,
so the page cannot drift from what ships. Only the regions between ``<!-- generated:NAME -->`` and
``<!-- /generated:NAME -->`` are rewritten; the prose (objectives, runbooks) is hand-written.

Usage: python docs/gen/operations.py [--check]   (--check: exit 1 when the committed page is stale)
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import promql_parser
import yaml

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "operations.md"
DASHBOARD = ROOT / "deploy" / "grafana" / "weaver-dashboard.json"
RULES = ROOT / "deploy" / "prometheus"
RULE_FILES = (RULES / "recording.rules.yml", RULES / "alerts.rules.yml")
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$job": ".*"}


def _panels(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in node.get("panels", []):
        yield panel
        yield from _panels(panel)


def _rules(kind: str) -> list[dict[str, Any]]:
    return [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if kind in rule]


def _selected(expr: str) -> list[str]:
    """Metric and recorded-series names an expression selects, in order of appearance."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    names: list[str] = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector) and node.name and node.name not in names:
            names.append(node.name)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def _code(names: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def panels_table() -> str:
    dashboard = json.loads(DASHBOARD.read_text())
    rows = ["| Row | Panel | Reads | What it shows |", "| --- | --- | --- | --- |"]
    row = ""
    for panel in _panels(dashboard):
        if panel["type"] == "row":
            row = panel["title"]
            continue
        names: list[str] = []
        for target in panel.get("targets", []):
            names += [n for n in _selected(target["expr"]) if n not in names]
        rows.append(f"| {row} | {_cell(panel['title'])} | {_code(names)} | {_cell(panel.get('description', ''))} |")
    return "\n".join(rows)


def alerts_table() -> str:
    rows = ["| Alert | Severity | For | Reads | Summary |", "| --- | --- | --- | --- | --- |"]
    for rule in _rules("alert"):
        name = rule["alert"]
        rows.append(f"| [{name}](#{name.lower()}) | {rule['labels']['severity']} | {rule.get('for', '0s')} | "
                    f"{_code(_selected(rule['expr']))} | {_cell(rule['annotations']['summary'])} |")
    return "\n".join(rows)


def recording_table() -> str:
    rows = ["| Recorded series | Reads |", "| --- | --- |"]
    rows += [f"| `{rule['record']}` | {_code(_selected(rule['expr']))} |" for rule in _rules("record")]
    return "\n".join(rows)


def metrics_table() -> str:
    """Every scraped metric the dashboard or the rules read, with where it is used."""
    recorded = {rule["record"]: rule["expr"] for rule in _rules("record")}
    used: dict[str, list[str]] = {}

    def note(expr: str, where: str) -> None:
        for name in _selected(expr):
            for source in (_selected(recorded[name]) if name in recorded else [name]):
                if where not in used.setdefault(source, []):
                    used[source].append(where)

    for panel in _panels(json.loads(DASHBOARD.read_text())):
        for target in panel.get("targets", []):
            note(target["expr"], f"panel “{panel['title']}”")
    for rule in _rules("alert"):
        note(rule["expr"], f"alert [{rule['alert']}](#{rule['alert'].lower()})")
    rows = ["| Metric | Used by |", "| --- | --- |"]
    rows += [f"| `{name}` | {_cell(', '.join(places))} |" for name, places in sorted(used.items())]
    return "\n".join(rows)


SECTIONS: dict[str, Callable[[], str]] = {
    "metrics": metrics_table,
    "panels": panels_table,
    "recording-rules": recording_table,
    "alerts": alerts_table,
}


def render(page: str) -> str:
    for name, build in SECTIONS.items():
        pattern = re.compile(rf"(<!-- generated:{name} -->\n).*?(<!-- /generated:{name} -->)", re.S)
        if not pattern.search(page):
            raise ValueError(f"docs/operations.md lacks the markers of the generated section {name!r}")
        page = pattern.sub(lambda m, build=build: m.group(1) + build() + "\n" + m.group(2), page)
    return page


def main(argv: list[str]) -> int:
    current = PAGE.read_text()
    fresh = render(current)
    if "--check" in argv:
        if fresh != current:
            print("docs/operations.md is stale: run python docs/gen/operations.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(fresh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
