"""Grafana dashboard and Prometheus scrape config.

Every PromQL expression in the dashboard must parse (promql-parser, a binding of the Rust PromQL parser
used by GreptimeDB) and may name only metrics the running service really exports, or series recorded by
deploy/prometheus/recording.rules.yml (whose own expressions must then name exported metrics): the test
starts the embedded service, sends one rerank request, scrapes /metrics and compares. That a real Prometheus
returns data for every panel is tests/deploy/test_observability_e2e.py.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ROOT

GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = json.loads((GRAFANA / "weaver-dashboard.json").read_text())
RECORDED = {rule["record"]: rule["expr"]
            for group in yaml.safe_load((ROOT / "deploy" / "prometheus" / "recording.rules.yml").read_text())["groups"]
            for rule in group["rules"]}
# Grafana substitutes these before the query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h", "$job": ".*"}
SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "unknown": ("",),
}
CHEAP_WORKER_CONFIG = {
    "name": "dashboard-test",
    "generation": None,
    "verifiers": [
        {"name": "answer_agreement", "type": "answer_agreement"},
        {"name": "math_check", "type": "math_check"},
    ],
    "profiles": {"cheap": ["answer_agreement", "math_check"]},
    "default_profile": "cheap",
}


def panels(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in node.get("panels", []):
        yield panel
        yield from panels(panel)


def expressions() -> list[tuple[str, str]]:
    found = [(p["title"], t["expr"]) for p in panels(DASHBOARD) for t in p.get("targets", []) if "expr" in t]
    for variable in DASHBOARD["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict) and query.get("query", "").startswith("label_values("):
            metric = re.match(r"label_values\((\w+)", query["query"])
            assert metric, query
            found.append((f"variable {variable['name']}", metric.group(1)))
    return found


def substitute(expr: str) -> str:
    for name, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def source_metrics(expr: str) -> set[str]:
    """The scraped metrics an expression reads, through any recorded series it uses."""
    found: set[str] = set()
    for name in metric_names(expr):
        found |= source_metrics(RECORDED[name]) if name in RECORDED else {name}
    return found


def metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def test_dashboard_is_well_formed() -> None:
    all_panels = list(panels(DASHBOARD))
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    assert DASHBOARD["uid"] and DASHBOARD["schemaVersion"] >= 36
    for panel in all_panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], f"panel {panel['title']} has no query"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    titles = " ".join(p["title"].lower() for p in all_panels)
    for topic in ("request rate", "error rate", "latency", "queue depth", "batch size", "verifier latency",
                  "verifier error", "estimated verifier accuracy", "confidence", "abstention", "saturation"):
        assert topic in titles, f"no panel about {topic}"


@pytest.mark.parametrize(("title", "expr"), expressions(), ids=[t for t, _ in expressions()])
def test_every_promql_expression_parses(title: str, expr: str) -> None:
    names = metric_names(substitute(expr))
    assert names, f"{title}: selects no metric"
    assert all(n.startswith("weaver_") or n in RECORDED for n in names), f"{title}: {names}"
    assert all(n.startswith("weaver_") for n in source_metrics(substitute(expr))), title


def test_parser_rejects_broken_promql() -> None:
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(weaver_requests_total[1m])")
    with pytest.raises(ValueError):
        promql_parser.parse("histogram_quantile(0.9, sum by (le) rate(weaver_request_duration_seconds_bucket[1m]))")


def test_scrape_config_targets_the_kubernetes_services() -> None:
    config = yaml.safe_load((GRAFANA / "prometheus-scrape.yaml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert len(jobs) == len(config["scrape_configs"])
    services = {
        doc["metadata"]["labels"]["app.kubernetes.io/component"]: doc
        for path in (ROOT / "deploy" / "k8s").rglob("*service.yaml")
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc["kind"] == "Service"
    }
    for component in ("gateway", "worker"):
        job = jobs[f"weaver-{component}"]
        keep = {tuple(r["source_labels"]): r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"}
        for regex in keep.values():
            re.compile(regex)
        assert keep[("__meta_kubernetes_service_label_app_kubernetes_io_name",
                      "__meta_kubernetes_service_label_app_kubernetes_io_component")] == f"weaver-rerank;{component}"
        port_name = keep[("__meta_kubernetes_endpoint_port_name",)]
        assert port_name in {p["name"] for p in services[component]["spec"]["ports"]}
        assert job["metrics_path"] == "/metrics"


@pytest.fixture(scope="module")
def exported_metrics(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Start the embedded service (cheap verifiers, no generator), rerank once, scrape /metrics."""
    pytest.importorskip("workers.entry", reason="the embedded service needs workers.entry (workers branch)")
    from loadtests.run import local_service

    config = tmp_path_factory.mktemp("dashboard") / "worker.yaml"
    config.write_text(yaml.safe_dump(CHEAP_WORKER_CONFIG))
    with local_service({"WEAVER_WORKER_CONFIG": str(config)}, ready_timeout_s=180) as base:
        body = {"query": "What is 2 + 3?", "documents": ["2 + 3 = 5\nA: 5", "2 + 3 = 6\nA: 6"]}
        response = httpx.post(f"{base}/v1/rerank", json=body, timeout=60)
        assert response.status_code == 200, response.text
        time.sleep(1.2)  # the in-process catalogue (source of the batcher counters) is rebuilt at most once a second
        text = httpx.get(f"{base}/metrics", timeout=10).text
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    samples = {(s.name, s.labels.get("verifier", "")): s.value for f in text_string_to_metric_families(text)
               for s in f.samples}
    # the one rerank request (2 documents, cheap profile) must show up in the per-verifier series
    for verifier in ("answer_agreement", "math_check"):
        assert samples[("weaver_verifier_duration_seconds_count", verifier)] == 1
        assert samples[("weaver_verifier_batches_total", verifier)] >= 1
        assert samples[("weaver_verifier_cache_misses_total", verifier)] >= 1
    assert samples[("weaver_worker_slots", "")] >= 1, "embedded worker ready: its slots must be counted"
    return {f"{name}{suffix}": kind for name, kind in families.items() for suffix in SAMPLE_SUFFIXES[kind]}


@pytest.mark.slow
def test_dashboard_names_only_exported_metrics(exported_metrics: dict[str, str]) -> None:
    used: dict[str, list[str]] = {}
    for title, expr in expressions():
        for name in source_metrics(substitute(expr)):
            used.setdefault(name, []).append(title)
    missing = {name: titles for name, titles in used.items() if name not in exported_metrics}
    assert not missing, f"dashboard queries metrics the service does not export: {missing}"


@pytest.mark.slow
def test_rate_and_quantile_use_the_right_metric_types(exported_metrics: dict[str, str]) -> None:
    """rate() only over counters/histogram series, histogram_quantile() only over _bucket series (a recorded
    series counts as the metric between its colons: job_le:weaver_queue_wait_seconds_bucket:rate5m)."""
    checked = expressions() + [(f"recording rule {name}", expr) for name, expr in RECORDED.items()]
    for title, expr in checked:
        parsed = promql_parser.parse(substitute(expr))
        problems: list[str] = []

        def visit(node: Any, problems: list[str] = problems, title: str = title) -> bool:
            if isinstance(node, promql_parser.Call) and node.func.name in ("rate", "increase", "irate"):
                for name in metric_names(str(node.args[0])):
                    if exported_metrics[name] not in ("counter", "histogram", "summary"):
                        problems.append(f"{title}: {node.func.name}() over gauge {name}")
            if isinstance(node, promql_parser.Call) and node.func.name == "histogram_quantile":
                for name in metric_names(str(node.args[1])):
                    if not (name.split(":")[1] if name in RECORDED else name).endswith("_bucket"):
                        problems.append(f"{title}: histogram_quantile over {name}")
            return True

        promql_parser.walk(parsed, visit)
        assert not problems, problems
