"""Distributed mode on real Redis with real worker processes (``weaver worker``) and the real verifiers.

- one gateway + two worker processes, 100 rerank jobs while a worker is SIGKILLed three times mid-job:
  every job answered exactly once (one reply each, none left over), none lost;
- Redis restarted mid-run: 503 meanwhile, recovery without restarting gateway or worker.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
import yaml

from service.settings import QueueSettings, Settings
from tests.service.gateway_support import REDIS_URL, app_client, free_port, redis_or_skip
from tests.support import ROOT
from workers.queue.keys import GROUP, QueueKeys

pytestmark = [pytest.mark.redis, pytest.mark.slow]
CHEAP = ["answer_agreement", "math_check"]


def cheap_worker_config(path: Path) -> Path:
    """The default CPU config reduced to its cheap verifiers, without a generator (rerank jobs only)."""
    from workers.config import WorkerConfig

    config = WorkerConfig.default().model_dump()
    config.update(generation=None, profiles={"cheap": CHEAP}, default_profile="cheap")
    config["verifiers"] = [v for v in config["verifiers"] if v["name"] in CHEAP]
    path.write_text(yaml.safe_dump(config))
    return path


class WorkerProcess:
    def __init__(self, redis_url: str, prefix: str, config: Path, log: Path) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "HF_HUB_OFFLINE": "1",
            "WEAVER_QUEUE__PREFIX": prefix,
            "WEAVER_QUEUE__VISIBILITY_TIMEOUT_S": "2",
            "WEAVER_LOG_LEVEL": "warning",
        }
        command = [
            sys.executable,
            "-m",
            "service.cli",
            "worker",
            "--redis-url",
            redis_url,
            "--worker-config",
            str(config),
            "--concurrency",
            "4",
        ]
        self.log = log.open("ab")
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log, stderr=self.log)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> int | None:
        """SIGTERM (graceful: finish or hand back in-flight jobs), then the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode


async def live_workers(client: aioredis.Redis, keys: QueueKeys) -> dict[int, str]:
    """pid -> consumer name of workers whose heartbeat says ready."""
    found = {}
    for value in (await client.hgetall(keys.workers)).values():
        desc = json.loads(value)
        if desc.get("ready") and time.time() - desc["heartbeat"] < 10:
            found[int(desc["name"].split("-")[-2])] = desc["name"]
    return found


async def wait_ready(client: aioredis.Redis, keys: QueueKeys, pid: int, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        name = (await live_workers(client, keys)).get(pid)
        if name:
            return name
        await asyncio.sleep(0.2)
    raise AssertionError(f"worker {pid} did not become ready")


def rerank_body(i: int) -> dict[str, object]:
    a, b = 20 + i, 3 + i % 5
    return {
        "query": f"job {i}: Ann has {a} pens and gets {b} more. How many pens?",
        "documents": [f"{a} + {b} = {a + b}. #### {a + b}", f"The answer is {a + b}.", f"#### {a - b}"],
        "verification": {"profile": "cheap", "aggregator": "mean"},
    }


async def test_worker_sigkilled_three_times_every_job_answered_once(tmp_path: Path, prefix: str) -> None:
    redis_or_skip()
    keys = QueueKeys(prefix)
    config = cheap_worker_config(tmp_path / "worker.yaml")
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    workers = [WorkerProcess(REDIS_URL, prefix, config, tmp_path / f"w{i}.log") for i in range(2)]
    settings = Settings(redis_url=REDIS_URL, request_timeout_s=120, queue=QueueSettings(prefix=prefix, max_depth=200))
    kills: list[int] = []  # jobs held (claimed, not acknowledged) by each killed worker at the moment of the kill
    try:
        for w in workers:
            await wait_ready(client, keys, w.pid)
        async with app_client(settings) as gateway:

            async def one(i: int) -> httpx.Response:
                await asyncio.sleep(i * 0.05)  # ~20 jobs/s
                gate = time.monotonic() + 120
                while len(kills) < min(3, i // 30) and time.monotonic() < gate:
                    await asyncio.sleep(0.05)  # keep work flowing until the kills happened
                return await gateway.post("/v1/rerank", json=rerank_body(i))

            async def kill_rounds() -> None:
                for round_ in range(8):  # a kill counts only if the worker held a job at that instant
                    if len(kills) == 3:
                        return
                    slot = round_ % 2
                    name = await wait_ready(client, keys, workers[slot].pid)
                    give_up = time.monotonic() + 60
                    while time.monotonic() < give_up:  # kill it while it holds at least one job
                        if await client.xpending_range(keys.stream, GROUP, "-", "+", 50, consumername=name):
                            break
                        await asyncio.sleep(0.002)
                    os.kill(workers[slot].pid, signal.SIGKILL)
                    workers[slot].process.wait()
                    held = await client.xpending_range(keys.stream, GROUP, "-", "+", 50, consumername=name)
                    if held:
                        kills.append(len(held))
                    workers[slot].stop()
                    workers[slot] = WorkerProcess(REDIS_URL, prefix, config, tmp_path / f"w{round_}-r.log")

            requests = asyncio.gather(*(one(i) for i in range(100)))
            await kill_rounds()
            responses = await asyncio.wait_for(requests, 180)
        assert len(kills) == 3 and all(held >= 1 for held in kills), kills
        assert [r.status_code for r in responses] == [200] * 100, [r.text for r in responses if r.status_code != 200]
        for i, response in enumerate(responses):
            body = response.json()
            a, b = 20 + i, 3 + i % 5
            assert body["results"][0]["index"] in (0, 1), body  # the two right answers agree and win
            assert len(body["results"]) == 3 and body["verification"]["verifiers"]
            assert f"{a + b}" in rerank_body(i)["documents"][body["results"][0]["index"]]  # type: ignore[index]
        job_ids = {r.json()["verification"]["job_id"] for r in responses}
        assert len(job_ids) == 100
        stored = [k async for k in client.scan_iter(match=f"{prefix}:result:*")]
        assert len(stored) == 100  # one stored answer per job
        assert [k async for k in client.scan_iter(match=f"{prefix}:reply:*")] == []  # no second answer queued
        assert await client.xlen(keys.stream) == 0
        assert (await client.xpending(keys.stream, GROUP))["pending"] == 0
    finally:
        for w in workers:
            w.stop()
        leftover = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if leftover:
            await client.delete(*leftover)
        await client.aclose()


@pytest.fixture
def own_redis(tmp_path: Path):
    """A private redis-server on a free port (never the shared one), without persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server binary not found")
    port = free_port()

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        for _ in range(100):
            try:
                redis.Redis(port=port, socket_connect_timeout=0.2).ping()
                return proc
            except redis.ConnectionError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    handle = {"proc": start()}

    yield f"redis://127.0.0.1:{port}/0", handle, start
    handle["proc"].kill()
    handle["proc"].wait()


async def test_redis_restart_gives_503_then_recovers_without_restart(tmp_path: Path, own_redis) -> None:
    url, handle, start = own_redis
    prefix = "weaver-restart"
    keys = QueueKeys(prefix)
    config = cheap_worker_config(tmp_path / "worker.yaml")
    worker = WorkerProcess(url, prefix, config, tmp_path / "worker.log")
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        await wait_ready(client, keys, worker.pid)
        settings = Settings(redis_url=url, request_timeout_s=20, queue=QueueSettings(prefix=prefix))
        async with app_client(settings) as gateway:
            assert (await gateway.post("/v1/rerank", json=rerank_body(0))).status_code == 200
            handle["proc"].kill()
            handle["proc"].wait()
            during = [await gateway.post("/v1/rerank", json=rerank_body(i)) for i in range(1, 4)]
            for response in during:
                assert response.status_code == 503, response.text
                assert response.json()["error"]["type"] == "service_unavailable"
            ready = await gateway.get("/readyz")
            assert ready.status_code == 503 and "queue" in ready.json()["not_ready"]
            handle["proc"] = start()  # same port, empty: stream, group and worker registry are gone
            deadline = time.monotonic() + 30
            recovered = None
            while time.monotonic() < deadline:
                response = await gateway.post("/v1/rerank", json=rerank_body(9))
                if response.status_code == 200:
                    recovered = response
                    break
                assert response.status_code == 503, response.text  # explicit error until workers are back
                await asyncio.sleep(0.5)
            assert recovered is not None, "service did not recover after Redis came back"
            assert recovered.json()["results"][0]["index"] in (0, 1)
            assert (await gateway.get("/readyz")).status_code == 200
        assert worker.process.poll() is None  # the worker survived the outage
        assert worker.stop() == 0  # and exits cleanly on SIGTERM
    finally:
        worker.stop()
        await client.aclose()
