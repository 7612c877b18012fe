"""Faults: none loses an accepted request without an explicit error to its client.

- a verifier that hangs: its column is NaN with a timeout error in the diagnostics, the answer still comes;
- a verifier whose model fails to load: readiness stays false and names the verifier; requests still answer;
- Redis unreachable when gateway and worker start (a private redis-server that is started later): 503 meanwhile,
  then service without restarting anything (Redis lost mid-run and workers SIGKILLed mid-batch are covered by
  tests/service/test_distributed.py);
- a full disk under the offline score cache (RLIMIT_FSIZE): scoring completes, the cache write error is
  reported, nothing crashes.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.settings import QueueSettings, Settings
from tests.reliability.harness import OwnRedis, write_worker_config
from tests.support import ROOT
from workers.config import WorkerConfig
from workers.entry import Worker
from workers.queue.redis_worker import RedisWorkerLoop
from workers.verifiers import Item, Verifier, register_verifier_type

RERANK = {"query": "Ann has 2 pens and buys 3. How many?", "documents": ["2 + 3 = 5. #### 5", "#### 5", "#### 6"]}
_RELEASE = threading.Event()


class HangingVerifier(Verifier):
    """Blocks its worker thread until the test releases it: a stuck model server or a deadlocked kernel."""

    kind = "test_hangs"

    def score_sync(self, items: Sequence[Item]) -> list[Any]:
        _RELEASE.wait(30)
        return [1.0 for _ in items]


register_verifier_type(HangingVerifier.kind, HangingVerifier)


class _Client:
    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)

    async def __aenter__(self) -> httpx.AsyncClient:
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()
        self._http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://gateway",
                                       timeout=60)
        return self._http

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()
        await self._lifespan.__aexit__(None, None, None)


async def test_a_hanging_verifier_times_out_to_nan_and_the_answer_still_comes(tmp_path: Path) -> None:
    config = write_worker_config(tmp_path / "w.yaml", verifiers=[
        {"name": "answer_agreement", "type": "answer_agreement"},
        {"name": "stuck", "type": HangingVerifier.kind, "timeout_s": 0.5}])
    _RELEASE.clear()
    try:
        async with _Client(Settings(worker_config=config)) as client:
            start = time.monotonic()
            response = await client.post("/v1/rerank", json={
                **RERANK, "verification": {"verifiers": ["answer_agreement", "stuck"], "aggregator": "mean"}})
            assert response.status_code == 200, response.text
            assert time.monotonic() - start < 20
            body = response.json()
            by_name = {v["name"]: v for v in body["verification"]["verifiers"]}
            assert by_name["stuck"]["raw"] == [None, None, None]  # NaN on the wire
            assert "timeout" in by_name["stuck"]["error"]
            assert by_name["answer_agreement"]["error"] is None
            assert body["results"][0]["index"] in (0, 1)  # the healthy verifier still decides
            assert (await client.get("/readyz")).status_code == 200  # a slow verifier is not a dead worker
    finally:
        _RELEASE.set()


async def test_a_verifier_that_fails_to_load_keeps_readiness_false_and_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    config = write_worker_config(tmp_path / "w.yaml", verifiers=[
        {"name": "answer_agreement", "type": "answer_agreement"},
        {"name": "broken_judge", "type": "lm_judge", "params": {"model": str(missing)}}])
    async with _Client(Settings(worker_config=config)) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        not_ready = ready.json()["not_ready"]
        assert list(not_ready) == ["verifier:broken_judge"] and not_ready["verifier:broken_judge"]
        listed = {v["name"]: v for v in (await client.get("/v1/verifiers")).json()["data"]}
        assert "broken_judge" not in listed or listed["broken_judge"]["ready"] is False  # never offered as ready
        # an accepted request that names it is answered, with the failure explicit in its diagnostics
        response = await client.post("/v1/rerank", json={**RERANK, "verification": {"aggregator": "mean"}})
        if response.status_code == 200:
            by_name = {v["name"]: v for v in response.json()["verification"]["verifiers"]}
            assert "broken_judge" not in by_name or "unavailable" in (by_name["broken_judge"]["error"] or "")
        else:
            assert response.json()["error"]["message"]
        named = await client.post("/v1/rerank", json={
            **RERANK, "verification": {"verifiers": ["answer_agreement", "broken_judge"], "aggregator": "mean"}})
        assert named.status_code == 400, named.text  # not available: the client is told which ones are
        assert "answer_agreement" in named.json()["error"]["message"]


@pytest.mark.redis
async def test_redis_down_at_start_then_up_serves_without_a_restart(own_redis: OwnRedis, tmp_path: Path) -> None:
    prefix = f"weaver-rel-{uuid.uuid4().hex[:8]}"
    own_redis.stop()  # unreachable while gateway and worker start
    worker = Worker.from_config(WorkerConfig.model_validate({
        "verifiers": [{"name": "answer_agreement", "type": "answer_agreement"}], "default_profile": None}))
    await worker.start()
    loop = RedisWorkerLoop(worker, own_redis.url, prefix=prefix, heartbeat_interval_s=0.5, block_ms=200)
    consumer = asyncio.create_task(loop.run())
    settings = Settings(redis_url=own_redis.url, request_timeout_s=20, queue=QueueSettings(prefix=prefix))
    try:
        async with _Client(settings) as client:
            body = {**RERANK, "verification": {"aggregator": "mean"}}
            down = await client.post("/v1/rerank", json=body)
            assert down.status_code == 503 and down.json()["error"]["type"] == "service_unavailable"
            assert "queue" in (await client.get("/readyz")).json()["not_ready"]
            assert not consumer.done(), "the worker must keep retrying, not exit"
            own_redis.start()
            deadline = time.monotonic() + 30
            while True:
                response = await client.post("/v1/rerank", json=body)
                if response.status_code == 200:
                    break
                assert response.status_code == 503, response.text  # explicit until the worker is back
                assert time.monotonic() < deadline, "no recovery after Redis came up"
                await asyncio.sleep(0.3)
            assert response.json()["results"][0]["index"] in (0, 1)
            assert (await client.get("/readyz")).status_code == 200
    finally:
        loop.stop()
        await asyncio.wait_for(consumer, 30)
        await worker.close()


_FULL_DISK_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    from models.data import Candidate, CandidateSet
    from workers.offline import score_candidate_sets
    limit = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # the disk is full after `limit` bytes
    sets = [CandidateSet(id=f"q{i}", prompt=f"What is {i} + 1?",
                         candidates=(Candidate(text=f"{i} + 1 = {i + 1}. #### {i + 1}"),
                                     Candidate(text=f"#### {i + 2}"))) for i in range(30)]
    names, matrices = score_candidate_sets(sets, "answer_agreement,math_check", cache_path=sys.argv[1])
    print(json.dumps({"names": names, "rows": [m.tolist() for m in matrices]}))
""")


def test_a_full_disk_under_the_score_cache_loses_no_scores(tmp_path: Path) -> None:
    def run(cache: Path, limit: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", _FULL_DISK_SCRIPT, str(cache), str(limit)], cwd=ROOT,
                              capture_output=True, text=True, timeout=300,
                              env={"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})

    roomy = run(tmp_path / "roomy.jsonl", 1 << 30)
    assert roomy.returncode == 0, roomy.stderr[-2000:]
    full = run(tmp_path / "full.jsonl", 300)
    assert full.returncode == 0, full.stderr[-2000:]
    assert json.loads(full.stdout.splitlines()[-1]) == json.loads(roomy.stdout.splitlines()[-1])
    assert "score cache" in full.stderr and "disk" in full.stderr.lower()  # the failure is reported, once
    assert (tmp_path / "full.jsonl").stat().st_size <= 300
