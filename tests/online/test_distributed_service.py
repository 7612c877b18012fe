"""Acceptance with the real programs: two ``weaver serve --redis-url`` gateways and two ``weaver worker``
processes (the worker's cheap CPU verifiers) on a real Redis. Rerank traffic through both gateways
fills the shared score log; exactly one replica refits; every gateway and worker serves the new
version within a second of publication, and the next requests are ranked with it. (Killing the
refitting replica mid-fit is tested with replica processes in test_distributed.py, where the fit
can be held before publication.)"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
import yaml

from models.aggregators import QueryScores
from models.data import load_candidate_sets
from tests.support import REDIS_URL, ROOT, wait_until
from workers.online.keys import OnlineKeys
from workers.online.store import RedisModelStore

pytestmark = [pytest.mark.redis, pytest.mark.slow]
CHEAP = ["answer_agreement", "math_check"]


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _metric(text: str, name: str, labels: str = "") -> float | None:
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)}\s+(\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None




def test_gateways_and_workers_share_one_refit(
    redis_client: redis.Redis, tmp_path: Path, dev_set_path: Path,
    dev_scored: tuple[list[QueryScores], list[np.ndarray]],
) -> None:
    prefix = f"test-online-svc-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "worker.yaml"
    config.write_text(yaml.safe_dump({
        "name": "cheap", "generation": None,
        "verifiers": [{"name": n, "type": n} for n in CHEAP],
        "profiles": {"cheap": CHEAP}, "default_profile": "cheap",
    }))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "WEAVER_QUEUE__PREFIX": prefix,
           "WEAVER_ONLINE__REFIT_EVERY_QUERIES": "50", "WEAVER_ONLINE__REFIT_EVERY_SECONDS": "3600",
           "WEAVER_ONLINE__LOCK_LEASE_MS": "2000", "WEAVER_ONLINE__POLL_S": "0.1", "WEAVER_ONLINE__BY_TASK": "false",
           "WEAVER_LOG_LEVEL": "warning"}
    gateway_ports = [_port(), _port()]
    worker_ports = [_port(), _port()]
    logs = {name: (tmp_path / f"{name}.log").open("wb") for name in ("gw0", "gw1", "wk0", "wk1")}
    cli = [sys.executable, "-m", "service.cli"]
    procs = [
        subprocess.Popen([*cli, "worker", "--redis-url", REDIS_URL, "--worker-config", str(config),
                          "--metrics-port", str(port)], cwd=ROOT, env=env, stdout=logs[f"wk{i}"],
                         stderr=subprocess.STDOUT)
        for i, port in enumerate(worker_ports)
    ] + [
        subprocess.Popen([*cli, "serve", "--redis-url", REDIS_URL, "--port", str(port)], cwd=ROOT, env=env,
                         stdout=logs[f"gw{i}"], stderr=subprocess.STDOUT)
        for i, port in enumerate(gateway_ports)
    ]
    gateways = [httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) for port in gateway_ports]
    store = RedisModelStore(redis_client, OnlineKeys(prefix))
    try:
        for gw in gateways:
            wait_until(lambda gw=gw: gw.get("/readyz").status_code == 200, 120, "gateways ready with workers",
                       ignore=(httpx.HTTPError,))  # not listening yet
        sets = load_candidate_sets(dev_set_path)
        for i, cs in enumerate(sets[:60]):
            response = gateways[i % 2].post("/v1/rerank", json={
                "query": cs.prompt, "documents": [c.text for c in cs.candidates]})
            assert response.status_code == 200, response.text
            if i < 40:  # no refit before 50 queries: the diagnostics say the prior is serving
                assert response.json()["verification"]["note"].startswith("cold start")
        pointer = wait_until(store.pointer, 30, "a publication")
        time.sleep(1.5)  # room for a duplicate refit to show up
        assert [i.sequence for i in store.versions()] == [1]

        scrapes = [gw.get("/metrics").text for gw in gateways]
        scrapes += [httpx.get(f"http://127.0.0.1:{port}/metrics").text for port in worker_ports]
        refits = [_metric(text, "weaver_model_refits_total", '{outcome="published",reason=""}') or 0.0
                  for text in scrapes]
        assert sorted(refits) == [0.0, 0.0, 0.0, 1.0], refits  # exactly one replica refitted
        for text in scrapes:
            assert _metric(text, "weaver_model_version_info",
                           f'{{source="refit",version="{pointer.version}"}}') == 1.0
            assert _metric(text, "weaver_model_version_sequence") == 1.0
            swapped = _metric(text, "weaver_model_swap_timestamp_seconds")
            assert swapped is not None and swapped - pointer.published_at < 1.0
        for gw in gateways:
            status = gw.get("/v1/online").json()
            assert status["serving"] == pointer.version and status["mode"] == "redis"
        # the workers rank with it: the next requests through either gateway report the new version
        for i, cs in enumerate(sets[60:64]):
            report = gateways[i % 2].post("/v1/rerank", json={
                "query": cs.prompt, "documents": [c.text for c in cs.candidates]}).json()["verification"]
            assert report["aggregator_version"] == pointer.version, report["note"]
        lags = [_metric(t, "weaver_model_swap_timestamp_seconds") - pointer.published_at for t in scrapes]  # type: ignore[operator]
        print("\nswap lag after publication (gw0, gw1, wk0, wk1): " + ", ".join(f"{1000 * x:.0f} ms" for x in lags))
    finally:
        for gw in gateways:
            gw.close()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for handle in logs.values():
            handle.close()
        for key in redis_client.scan_iter(f"{prefix}:*"):
            redis_client.delete(key)
