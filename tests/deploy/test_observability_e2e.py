"""End to end observability: a real Prometheus (the Debian package) scrapes a real ``weaver serve`` (embedded
mode; in distributed mode a gateway plus a ``weaver worker`` on Redis, both scraped) while traffic flows
(rerank and chat, client errors, 5xx, a verifier that fails and one too slow for its timeout), evaluates the
recording and alert rules of deploy/prometheus, and answers, through its HTTP API, every query of every
dashboard panel. A panel whose query returns nothing fails with its title.

The gateway is scraped twice: as job ``weaver`` and as job ``weaver-without-queue-depth``, whose scrape
drops ``weaver_queue_depth``, so the check can be shown to fail, naming the "Queue depth" panel, when a metric
the dashboard uses disappears. Panels and rules come from the files, so a new panel is checked without
touching this test. Scrape and rule evaluation run every second (rules files copied with ``interval: 1s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
import redis
import uvicorn
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from models.data import load_candidate_sets
from tests.support import REDIS_URL, ROOT, free_port
from tests.workers.generation.chat_server import Behaviour
from tests.workers.generation.chat_server import serve as serve_chat

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not on PATH (Debian package)"),
]

DASHBOARD = json.loads((ROOT / "deploy" / "grafana" / "weaver-dashboard.json").read_text())
RULE_FILES = sorted((ROOT / "deploy" / "prometheus").glob("*.rules.yml"))
JOB = "weaver"  # the gateway's scrape job
WORKER_JOB = "weaver-worker"  # the distributed worker's metrics port
STRIPPED_JOB = "weaver-without-queue-depth"  # the gateway again, minus weaver_queue_depth
TEST_REDIS_URL = REDIS_URL
RATE_INTERVAL = "30s"  # what Grafana's $__rate_interval would be for a 1 s scrape, generously
FAILING_SEED = 666  # the fake model server answers this seed with HTTP 500
# Exported only by a worker that loads code_tests, which this test's worker config leaves out.
NOT_YET_EXPORTED = {"weaver_sandbox_available"}


@dataclass(frozen=True)
class Query:
    title: str
    expr: str


def panels(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in node.get("panels", []):
        yield panel
        yield from panels(panel)


def dashboard_queries(job: str) -> list[Query]:
    """Every panel target, with the Grafana variables substituted the way Grafana would for one job."""
    queries = []
    for panel in panels(DASHBOARD):
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", RATE_INTERVAL).replace("$job", job)
            assert "$" not in expr, f"unknown Grafana variable in panel {panel['title']!r}: {expr}"
            queries.append(Query(panel["title"], expr))
    return queries


def recorded_names() -> list[str]:
    return [rule["record"] for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if "record" in rule]


class Prometheus:
    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=10)

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = self.client.get("/api/v1/query", params={"query": expr}).json()
        assert body["status"] == "success", f"{expr}: {body}"
        return list(body["data"]["result"])

    def get(self, path: str, **params: Any) -> Any:
        body = self.client.get(path, params=params).json()
        assert body["status"] == "success", body
        return body["data"]


def panels_without_data(prometheus: Prometheus, job: str) -> list[str]:
    return [f"panel {q.title!r}: no data for {q.expr}" for q in dashboard_queries(job) if not prometheus.query(q.expr)]


def assert_every_panel_answers(prometheus: Prometheus, job: str) -> None:
    empty = panels_without_data(prometheus, job)
    assert not empty, "dashboard panels without data:\n" + "\n".join(empty)


@contextmanager
def scorer_server() -> Iterator[str]:
    """A vLLM-style /score server: /broken/score answers 500, /slow/score takes 2 s (the verifier waits 0.5 s)."""
    app = FastAPI()

    @app.post("/broken/score")
    async def broken() -> JSONResponse:
        return JSONResponse({"error": {"message": "model crashed"}}, status_code=500)

    @app.post("/slow/score")
    async def slow(request: Request) -> JSONResponse:
        body = await request.json()
        await asyncio.sleep(2.0)
        return JSONResponse({"data": [{"index": i, "score": 0.5} for i in range(len(body["text_1"]))]})

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "scorer server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def worker_config(chat_url: str, scorer_url: str) -> dict[str, Any]:
    verifiers = ["answer_agreement", "math_check", "broken_scorer", "slow_scorer"]
    return {
        "name": "observability-e2e",
        "generation": {"backend": "openai", "base_url": chat_url, "model": "tiny", "max_retries": 0,
                       "backoff_s": 0.01, "backoff_max_s": 0.05},
        "verifiers": [
            {"name": "answer_agreement", "type": "answer_agreement"},
            {"name": "math_check", "type": "math_check"},
            {"name": "broken_scorer", "type": "remote",
             "params": {"base_url": f"{scorer_url}/broken", "retries": 0}},
            {"name": "slow_scorer", "type": "remote", "timeout_s": 0.5,
             "params": {"base_url": f"{scorer_url}/slow", "retries": 0}},
        ],
        "profiles": {"all": verifiers},
        "default_profile": "all",
    }


@contextmanager
def prometheus_server(tmp: Path, gateway: str, worker: str | None) -> Iterator[Prometheus]:
    rule_files = []
    for path in RULE_FILES:  # the committed rules, evaluated every second instead of every 30 s / 1 m
        groups = yaml.safe_load(path.read_text())["groups"]
        for group in groups:
            group["interval"] = "1s"
        copy = tmp / path.name
        copy.write_text(yaml.safe_dump({"groups": groups}))
        rule_files.append(str(copy))
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": rule_files,
        "scrape_configs": [
            {"job_name": JOB, "static_configs": [{"targets": [gateway]}]},
            {"job_name": STRIPPED_JOB, "static_configs": [{"targets": [gateway]}],
             "metric_relabel_configs": [{"source_labels": ["__name__"], "regex": "weaver_queue_depth",
                                         "action": "drop"}]},
        ] + ([{"job_name": WORKER_JOB, "static_configs": [{"targets": [worker]}]}] if worker else []),
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    check = subprocess.run(["promtool", "check", "config", str(tmp / "prometheus.yml")], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"prometheus exited: {(tmp / 'prometheus.log').read_text()}"
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "prometheus not ready after 60 s"
            time.sleep(0.2)
        yield Prometheus(url)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def drive_traffic(base: str, dev_set: Path) -> dict[int, int]:
    """Rerank over real GSM8K candidate sets (enough for online refits), chat completions (generation),
    invalid requests (400) and chat whose model server fails (5xx), in two waves: a counter series is born at
    its first increment, which rate() cannot see, so the first wave creates every series and the second one,
    after a few scrapes, moves them. Returns the count of each status."""
    sets = load_candidate_sets(dev_set)[:48]

    def send(call: tuple[str, dict[str, Any]]) -> int:
        return httpx.post(f"{base}{call[0]}", json=call[1], timeout=120).status_code

    def chat(content: str, seed: int) -> tuple[str, dict[str, Any]]:
        return "/v1/chat/completions", {"model": "weaver", "messages": [{"role": "user", "content": content}],
                                        "n": 3, "seed": seed}

    reranks = [("/v1/rerank", {"query": cs.prompt, "documents": [c.text for c in cs.candidates][:8]})
               for cs in sets]
    chats = [chat(f"What is {i} + 4?", i) for i in range(6)]
    failing = [chat("What is 1 + 1?", FAILING_SEED)] * 8
    invalid = [("/v1/rerank", {"query": "no documents"}), ("/v1/chat/completions", {"messages": []})] * 2
    first = [reranks[0], chats[0], failing[0], invalid[0], invalid[1]]
    second = reranks[1:] + chats[1:] + failing[1:] + invalid[2:]
    statuses = Counter(map(send, first))
    # one label through /v1/feedback, so the online-accuracy series exist (they are born at the first label)
    job_id = httpx.post(f"{base}/v1/rerank", json=reranks[0][1], timeout=120).json()["verification"]["job_id"]
    statuses[send(("/v1/feedback", {"request_id": job_id, "candidate_index": 0,
                                    "correct": bool(sets[0].candidates[0].correct)}))] += 1
    time.sleep(3)
    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses.update(pool.map(send, second))
    return dict(statuses)


@contextmanager
def weaver_process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m service.cli ARGS`` from this checkout; SIGTERM (then kill) on the way out."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **env}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "service.cli", *args], cwd=ROOT, env=full_env, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_ready(url: str, procs: list[subprocess.Popen[bytes]], logs: list[Path], timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        for proc, log in zip(procs, logs, strict=True):
            assert proc.poll() is None, f"{proc.args} exited: {log.read_text()[-3000:]}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} not ready after {timeout_s:.0f} s"
        time.sleep(0.3)


@dataclass(frozen=True)
class Observed:
    prometheus: Prometheus
    mode: str
    jobs: str  # the $job regex covering every scrape of the deployment (what Grafana's "All" would select)


@pytest.fixture(scope="module", params=["embedded", pytest.param("distributed", marks=pytest.mark.redis)])
def observed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
             dev_set_path: Path) -> Iterator[Observed]:
    mode = request.param
    prefix = f"test-observability-{uuid.uuid4().hex[:8]}"
    if mode == "distributed":
        try:
            with redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=1) as client:
                client.ping()
        except redis.RedisError as exc:
            pytest.skip(f"no Redis answering at {TEST_REDIS_URL}: {exc}")
    tmp = tmp_path_factory.mktemp(f"observability-{mode}")
    config = tmp / "worker.yaml"
    # refits every 12 queries, eligible from 10: several publications, so drift distances exist too
    env = {"WEAVER_ONLINE__REFIT_EVERY_QUERIES": "12", "WEAVER_ONLINE__MIN_QUERIES": "10",
           "WEAVER_ONLINE__REFIT_EVERY_SECONDS": "3600", "WEAVER_ONLINE__BY_TASK": "false",
           "WEAVER_LOG_LEVEL": "warning", "WEAVER_QUEUE__PREFIX": prefix}
    port, worker_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    with contextlib.ExitStack() as stack:
        chat_url = stack.enter_context(serve_chat(Behaviour(fail_seeds={FAILING_SEED})))
        scorer_url = stack.enter_context(scorer_server())
        config.write_text(yaml.safe_dump(worker_config(chat_url, scorer_url)))
        serve = ["serve", "--host", "127.0.0.1", "--port", str(port)]
        procs, logs = [], []
        if mode == "embedded":
            logs.append(tmp / "serve.log")
            procs.append(stack.enter_context(weaver_process([*serve, "--worker-config", str(config)], env, logs[-1])))
        else:
            logs += [tmp / "worker.log", tmp / "serve.log"]
            procs.append(stack.enter_context(weaver_process(
                ["worker", "--redis-url", TEST_REDIS_URL, "--worker-config", str(config),
                 "--metrics-port", str(worker_port)], env, logs[0])))
            procs.append(stack.enter_context(weaver_process([*serve, "--redis-url", TEST_REDIS_URL], env, logs[1])))
        wait_ready(f"{base}/readyz", procs, logs)
        worker = f"127.0.0.1:{worker_port}" if mode == "distributed" else None
        prometheus = stack.enter_context(prometheus_server(tmp, f"127.0.0.1:{port}", worker))
        try:
            statuses = drive_traffic(base, dev_set_path)
            assert statuses.get(200, 0) >= 50 and statuses.get(400, 0) >= 1, statuses
            assert sum(n for status, n in statuses.items() if status >= 500) == 8, statuses
            time.sleep(4)  # a few more scrapes and rule evaluations after the last request
            yield Observed(prometheus, mode, f"{JOB}|{WORKER_JOB}" if worker else JOB)
        finally:
            if mode == "distributed":
                client = redis.Redis.from_url(TEST_REDIS_URL)
                for key in client.scan_iter(f"{prefix}:*"):
                    client.delete(key)
                client.close()


def test_every_dashboard_panel_returns_data(observed: Observed) -> None:
    assert_every_panel_answers(observed.prometheus, observed.jobs)


def test_job_variable_lists_the_scraped_jobs(observed: Observed) -> None:
    for variable in DASHBOARD["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict) and query.get("query", "").startswith("label_values("):
            metric, label = query["query"].removeprefix("label_values(").rstrip(")").split(", ")
            values = observed.prometheus.get(f"/api/v1/label/{label}/values", **{"match[]": metric})
            assert JOB in values, variable["name"]


def test_every_recording_rule_returns_data(observed: Observed) -> None:
    empty = [name for name in recorded_names() if not observed.prometheus.query(f'{name}{{job=~"{observed.jobs}"}}')]
    assert not empty, f"recording rules without data: {empty}"


def test_every_rule_evaluates_without_error(observed: Observed) -> None:
    rules = [rule for group in observed.prometheus.get("/api/v1/rules")["groups"] for rule in group["rules"]]
    assert len(rules) == sum(len(g["rules"]) for p in RULE_FILES for g in yaml.safe_load(p.read_text())["groups"])
    broken = [(rule["name"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"]
    assert not broken, broken


def selected_metrics(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def test_every_metric_the_alerts_read_is_scraped(observed: Observed) -> None:
    """A misspelt metric in an alert never fires and no check notices; here it fails. Recorded series are
    covered by the recording-rule test above."""
    recorded = set(recorded_names())
    alerts = [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
              for rule in group["rules"] if "alert" in rule]
    missing = {}
    for alert in alerts:
        for name in selected_metrics(alert["expr"]) - recorded - NOT_YET_EXPORTED:
            if not observed.prometheus.query(f'count({{__name__="{name}"}})'):
                missing.setdefault(alert["alert"], []).append(name)
    assert not missing, f"alerts over metrics no target exports: {missing}"


def test_the_5xx_show_in_the_availability_rules_and_alert(observed: Observed) -> None:
    """8 of 63 chat/rerank requests failed: the error ratio is well above the fast-burn threshold (7.2%)."""
    (sample,) = observed.prometheus.query(f'job:weaver_request_errors:ratio_rate5m{{job="{JOB}"}}')
    assert 0.05 < float(sample["value"][1]) < 0.25, sample
    alerts = observed.prometheus.get("/api/v1/alerts")["alerts"]
    assert any(a["labels"]["alertname"] == "WeaverAvailabilityBudgetBurnFast" and a["labels"]["job"] == JOB
               for a in alerts), alerts


def test_broken_and_slow_verifiers_raise_their_alerts(observed: Observed) -> None:
    """Their `for:` is 10 minutes, so within the test the alerts are pending; healthy verifiers raise none."""
    alerts = [a for a in observed.prometheus.get("/api/v1/alerts")["alerts"] if a["labels"].get("job") == JOB]
    raised = {(a["labels"]["alertname"], a["labels"].get("verifier")) for a in alerts}
    assert ("WeaverVerifierErrors", "broken_scorer") in raised, alerts
    assert ("WeaverVerifierTimeouts", "slow_scorer") in raised, alerts
    assert not {v for name, v in raised if name.startswith("WeaverVerifier")} & {"answer_agreement", "math_check"}


def test_a_missing_metric_fails_the_check_with_the_panel_title(observed: Observed) -> None:
    jobs = observed.jobs.replace(JOB, STRIPPED_JOB, 1)  # the same deployment, its gateway scraped without the metric
    assert panels_without_data(observed.prometheus, jobs) == [
        f'panel \'Queue depth\': no data for max by (instance) (weaver_queue_depth{{job=~"{jobs}"}})']
    with pytest.raises(AssertionError, match="panel 'Queue depth'"):
        assert_every_panel_answers(observed.prometheus, jobs)


def test_the_distributed_worker_is_scraped_and_reports_its_label_model(observed: Observed) -> None:
    if observed.mode != "distributed":
        pytest.skip("embedded mode: the worker runs inside the gateway process")
    query = observed.prometheus.query
    assert [float(s["value"][1]) for s in query(f'up{{job="{WORKER_JOB}"}}')] == [1.0]
    for series in ("weaver_model_version_info", "weaver_model_cold_start",
                   "job_operation:weaver_score_cache_errors:rate5m"):
        assert query(f'{series}{{job="{WORKER_JOB}"}}'), f"no {series} from the worker"
    versions = {s["metric"]["version"] for s in query("weaver_model_version_info == 1")}
    assert len(versions) == 1, f"gateway and worker serve different label models: {versions}"
