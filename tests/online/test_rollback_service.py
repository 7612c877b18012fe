"""Acceptance with the real programs: a rollback takes effect everywhere within a second and survives
the next refit window; every replica's /metrics tells the same story; one cold-start setting.

Embedded: one ``weaver serve`` process with a version directory, rolled back by a separate
``weaver models rollback`` process. Distributed: two ``weaver serve --redis-url`` gateways and one
``weaver worker`` on a real Redis, feedback sent to both gateways. The worker runs the cheap CPU
verifiers (answer agreement, math check), refits every 20 queries.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from loadtests.run import free_port, local_service
from models.data import CandidateSet, load_candidate_sets
from models.online import DirectoryModelStore
from tests.support import ROOT, wait_until
from workers.online.feedback import RedisOnlineAccuracy
from workers.online.keys import OnlineKeys
from workers.online.store import RedisModelStore

pytestmark = pytest.mark.slow
CHEAP = ["answer_agreement", "math_check"]
CLI = [sys.executable, "-m", "service.cli"]
_wait = functools.partial(wait_until, ignore=(httpx.HTTPError, OSError))  # gateways that are still starting
REFITS = {"WEAVER_ONLINE__REFIT_EVERY_QUERIES": "20", "WEAVER_ONLINE__REFIT_EVERY_SECONDS": "3600",
          "WEAVER_ONLINE__MIN_QUERIES": "20", "WEAVER_ONLINE__BY_TASK": "false", "WEAVER_ONLINE__POLL_S": "0.1",
          "WEAVER_ONLINE__LOCK_LEASE_MS": "2000", "WEAVER_LOG_LEVEL": "warning"}


def _worker_config(tmp_path: Path) -> Path:
    path = tmp_path / "worker.yaml"
    path.write_text(yaml.safe_dump({"name": "cheap", "generation": None,
                                    "verifiers": [{"name": n, "type": n} for n in CHEAP],
                                    "profiles": {"cheap": CHEAP}, "default_profile": "cheap"}))
    return path


def _metric(text: str, name: str, labels: str = "") -> float | None:
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)}\s+(\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def _story(text: str) -> dict[str, Any]:
    """What a scrape says about the served model and the online accuracy (the parts every replica shares)."""
    info = re.findall(r'^weaver_model_version_info\{source="(\w+)",version="(\w+)"\} 1\.0$', text, re.MULTILINE)
    accuracy = dict(re.findall(r'^weaver_online_selection_accuracy\{aggregator="(\w+)"\} (\S+)$', text, re.MULTILINE))
    labelled = dict(re.findall(r'^weaver_online_labelled_selections\{aggregator="(\w+)"\} (\S+)$', text, re.MULTILINE))
    return {"info": info, "sequence": _metric(text, "weaver_model_version_sequence"),
            "pinned": _metric(text, "weaver_model_pinned"),
            "drift": _metric(text, "weaver_model_drift_distance", '{task=""}'),
            "alarm": _metric(text, "weaver_model_drift_alarm", '{task=""}'),
            "accuracy": accuracy, "labelled": labelled}




def _rerank(client: httpx.Client, cs: CandidateSet) -> dict[str, Any]:
    response = client.post("/v1/rerank", json={"query": cs.prompt, "documents": [c.text for c in cs.candidates]})
    assert response.status_code == 200, response.text
    return response.json()


def _cli(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run([*CLI, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _until_two_versions(store: Any, send: Callable[[int], None], start: int = 0, most: int = 120) -> int:
    """Send queries start, start+1, ... until two versions are published; returns how many were sent.
    (Refits every 20 queries; on such small windows a fit may be rejected, so the count is not fixed.)"""
    q = start
    while len(store.versions()) < 2:
        assert q - start < most, f"fewer than two versions after {most} queries: {store.versions()}"
        send(q)
        q += 1
    return q - start


@pytest.fixture(scope="module")
def sets(dev_set_path: Path) -> list[CandidateSet]:
    return load_candidate_sets(dev_set_path)


def test_embedded_rollback_takes_effect_without_restart(tmp_path: Path, sets: list[CandidateSet]) -> None:
    store_dir = tmp_path / "versions"
    env = {**REFITS, "WEAVER_WORKER_CONFIG": str(_worker_config(tmp_path)), "WEAVER_ONLINE__MODEL_DIR": str(store_dir),
           "WEAVER_ONLINE__COLD_START": "majority"}
    cli_env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with local_service(env, ready_timeout_s=180) as base, httpx.Client(base_url=base, timeout=60) as gw:
        # one cold-start setting: online.cold_start says majority, and so do the responses
        first = _rerank(gw, sets[0])["verification"]
        assert first["note"] == "cold start: no Weaver model fitted yet; used majority", first["note"]
        assert gw.get("/v1/online").json()["note"].startswith("cold start: majority")
        store = DirectoryModelStore(store_dir)
        sent = 1 + _until_two_versions(store, lambda q: _rerank(gw, sets[q]), start=1)
        _wait(lambda: _metric(gw.get("/metrics").text, "weaver_model_version_sequence") == 2, 10, "v2 served")
        v1, v2 = (i.version for i in store.versions())

        out = _cli("models", "rollback", "v1", "--store", str(store_dir), env=cli_env)
        rolled_at = store.pointer().published_at  # type: ignore[union-attr]
        assert f"now serving v1 ({v1})" in out
        status = _wait(lambda: (s := gw.get("/v1/online").json())["serving"] == v1 and s, 1.0, "/v1/online on v1")
        assert status["source"] == "rollback" and status["pinned"] and status["sequence"] == 1
        text = gw.get("/metrics").text
        scrape = _story(text)
        assert scrape["info"] == [("rollback", v1)] and scrape["sequence"] == 1 and scrape["pinned"] == 1
        swap_lag = _metric(text, "weaver_model_swap_timestamp_seconds") - rolled_at  # type: ignore[operator]
        assert swap_lag < 1.0, swap_lag
        assert _rerank(gw, sets[sent])["verification"]["aggregator_version"] == v1
        print(f"\nembedded rollback: swapped {1000 * swap_lag:.0f} ms after the CLI wrote it; visible on /v1/online, "
              f"/metrics and responses {time.time() - rolled_at:.2f} s after")

        # the next refit window: the refit runs, passes its guardrails and is held; v1 keeps serving
        for cs in sets[sent + 1:sent + 21]:  # 20 queries: a refit is due whatever the last one saw
            _rerank(gw, cs)
        _wait(lambda: _metric(gw.get("/metrics").text, "weaver_model_refits_total",
                              '{outcome="held",reason="pinned"}') == 1, 30, "a held refit")
        assert store.current() == v1 and [i.version for i in store.versions()] == [v1, v2]
        assert _rerank(gw, sets[sent + 21])["verification"]["aggregator_version"] == v1
        assert gw.get("/v1/online").json()["serving"] == v1

        # unpin: the next passing refit replaces it
        assert "unpinned; serving v1" in _cli("models", "unpin", "--store", str(store_dir), env=cli_env)
        for cs in sets[sent + 22:sent + 42]:
            _rerank(gw, cs)
        _wait(lambda: _metric(gw.get("/metrics").text, "weaver_model_version_sequence") == 3, 30, "v3 after unpin")
        assert _story(gw.get("/metrics").text)["pinned"] == 0


@contextmanager
def _distributed(tmp_path: Path, redis_url: str, prefix: str) -> Iterator[tuple[list[httpx.Client], str]]:
    """Two gateways and one worker (metrics on 127.0.0.1); yields the gateway clients and the worker's
    metrics URL once both gateways are ready."""
    env = {**os.environ, **REFITS, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "WEAVER_QUEUE__PREFIX": prefix}
    config = _worker_config(tmp_path)
    worker_port, gateway_ports = free_port(), [free_port(), free_port()]
    with ExitStack() as stack:
        logs = [stack.enter_context((tmp_path / f"{name}.log").open("wb")) for name in ("wk", "gw0", "gw1")]
        procs = [subprocess.Popen([*CLI, "worker", "--redis-url", redis_url, "--worker-config", str(config),
                                   "--metrics-port", str(worker_port), "--metrics-host", "127.0.0.1"],
                                  cwd=ROOT, env=env, stdout=logs[0], stderr=subprocess.STDOUT)]
        procs += [subprocess.Popen([*CLI, "serve", "--redis-url", redis_url, "--port", str(port)], cwd=ROOT,
                                   env=env, stdout=logs[1 + i], stderr=subprocess.STDOUT)
                  for i, port in enumerate(gateway_ports)]
        gateways = [stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60))
                    for port in gateway_ports]
        try:
            for gw in gateways:
                _wait(lambda gw=gw: gw.get("/readyz").status_code == 200, 180, "gateways ready with the worker")
            yield gateways, f"http://127.0.0.1:{worker_port}/metrics"
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@pytest.mark.redis
def test_distributed_rollback_and_metrics_agree_on_every_replica(
    tmp_path: Path, sets: list[CandidateSet], redis_client: redis.Redis, live_redis_url: str,
) -> None:
    prefix = f"test-rollback-{uuid.uuid4().hex[:8]}"
    store = RedisModelStore(redis_client, OnlineKeys(prefix))
    cli_env = {**os.environ, "PYTHONPATH": str(ROOT), "WEAVER_QUEUE__PREFIX": prefix}
    try:
        with _distributed(tmp_path, live_redis_url, prefix) as (gateways, worker_metrics):
            def scrapes() -> list[dict[str, Any]]:
                return [_story(gw.get("/metrics").text) for gw in gateways] + [_story(httpx.get(worker_metrics).text)]

            def send(q: int) -> None:  # traffic and feedback through both gateways
                gw = gateways[q % 2]
                job_id = _rerank(gw, sets[q])["verification"]["job_id"]
                for index, candidate in enumerate(sets[q].candidates):  # every candidate: every aggregator judged
                    feedback = gw.post("/v1/feedback", json={"request_id": job_id, "candidate_index": index,
                                                             "correct": bool(candidate.correct)})
                    assert feedback.status_code == 200, feedback.text

            sent = _until_two_versions(store, send)
            v1, v2 = (i.version for i in store.versions())
            book = RedisOnlineAccuracy(redis_client, OnlineKeys(prefix)).summary()
            assert book["first"][1] == sent  # every label counted once, whichever gateway took it

            def agree() -> list[dict[str, Any]] | None:
                found = scrapes()
                same = all(s == found[0] for s in found)
                settled = found[0]["sequence"] == 2 and found[0]["labelled"].get("first") == f"{sent}.0"
                return found if same and settled else None

            story = _wait(agree, 5, "the same story on both gateways and the worker")[0]
            assert story["info"] == [("refit", v2)] and story["pinned"] == 0
            assert story["drift"] is not None and story["drift"] == store.info(v2).drift  # type: ignore[union-attr]
            first_correct = sum(bool(cs.candidates[0].correct) for cs in sets[:sent])
            assert book["first"][0] == first_correct
            assert float(story["accuracy"]["first"]) == pytest.approx(first_correct / sent)

            out = _cli("models", "rollback", "v1", "--store", live_redis_url, env=cli_env)
            rolled_at = store.pointer().published_at  # type: ignore[union-attr]
            assert f"now serving v1 ({v1})" in out
            _wait(lambda: all(s["info"] == [("rollback", v1)] and s["sequence"] == 1 and s["pinned"] == 1
                              for s in scrapes()), 1.0, "the rollback on both gateways and the worker")
            print(f"\ndistributed rollback on the /metrics of 2 gateways + 1 worker {time.time() - rolled_at:.2f} s "
                  "after the CLI wrote it")
            texts = [gw.get("/metrics").text for gw in gateways] + [httpx.get(worker_metrics).text]
            lags = [_metric(text, "weaver_model_swap_timestamp_seconds") - rolled_at for text in texts]  # type: ignore[operator]
            assert all(lag < 1.0 for lag in lags), lags  # each replica swapped within a second of the rollback
            print("swap lag after the rollback (gw0, gw1, worker): " + ", ".join(f"{1000 * x:.0f} ms" for x in lags))
            for gw in gateways:
                assert gw.get("/v1/online").json()["serving"] == v1

            for i, cs in enumerate(sets[sent:sent + 20]):  # the next refit window: 20 queries make a refit due
                _rerank(gateways[i % 2], cs)
            _wait(lambda: redis_client.hget(OnlineKeys(prefix).fit_state, "last_outcome") == b"held", 30,
                  "the next refit, held by the pin")
            assert store.current() == v1 and [i.sequence for i in store.versions()] == [1, 2]
            for gw in gateways:
                assert _rerank(gw, sets[sent + 20])["verification"]["aggregator_version"] == v1
            assert all(s["info"] == [("rollback", v1)] and s["pinned"] == 1 for s in scrapes())
    finally:
        for key in redis_client.scan_iter(f"{prefix}:*"):
            redis_client.delete(key)
