"""The gateway in distributed mode on real Redis (the worker loop runs the small fake in this process):
catalogue from worker heartbeats, validation against it, and per-key rate limits that survive a restart."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
import redis.asyncio as aioredis

from service.settings import QueueSettings, Settings
from tests.service.gateway_fakes import FakeWorker
from tests.service.gateway_support import REDIS_URL, app_client, assert_error, redis_or_skip
from workers.queue.redis_worker import RedisWorkerLoop

pytestmark = pytest.mark.redis
RERANK = {"query": "q", "documents": ["a", "bbb"]}


@contextlib.asynccontextmanager
async def fake_worker(prefix: str):
    loop = RedisWorkerLoop(FakeWorker(), REDIS_URL, prefix=prefix, heartbeat_interval_s=0.2, block_ms=100)
    task = asyncio.create_task(loop.run())
    await asyncio.sleep(0.3)
    try:
        yield loop
    finally:
        loop.stop()
        await asyncio.wait_for(task, 10)
        client = aioredis.Redis.from_url(REDIS_URL)
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_distributed_gateway_uses_the_worker_catalogue(prefix: str) -> None:
    redis_or_skip()
    settings = Settings(redis_url=REDIS_URL, queue=QueueSettings(prefix=prefix))
    async with app_client(settings) as client:
        error = assert_error(await client.post("/v1/rerank", json=RERANK), 503, "not_ready")
        assert "no live worker" in error["message"]
        assert (await client.get("/readyz")).json()["not_ready"] == {"workers": "no live worker is consuming the queue"}
        async with fake_worker(prefix):
            await asyncio.sleep(2.1)  # the gateway caches the catalogue for 2 s
            ready = (await client.get("/readyz")).json()
            assert ready["ready"] and ready["workers"] == 1 and ready["mode"] == "distributed"
            verifiers = (await client.get("/v1/verifiers")).json()
            assert [v["name"] for v in verifiers["data"]] == ["length", "echo"]
            body = {**RERANK, "verification": {"verifiers": ["judge"]}}
            error = assert_error(await client.post("/v1/rerank", json=body), 400, "unknown_verifier")
            assert "available: length, echo" in error["message"]
            response = await client.post("/v1/rerank", json=RERANK)
            assert response.status_code == 200 and response.json()["results"][0]["index"] == 1
            metrics = (await client.get("/metrics")).text
            assert "weaver_queue_workers 1.0" in metrics and "weaver_queue_depth 0.0" in metrics


async def test_rate_limits_live_in_redis_and_survive_a_gateway_restart(prefix: str) -> None:
    redis_or_skip()
    settings = Settings(
        redis_url=REDIS_URL, api_keys="key", rate_limit_per_minute=2, queue=QueueSettings(prefix=prefix)
    )
    auth = {"Authorization": "Bearer key"}
    window = int(time.time() // 60)
    async with fake_worker(prefix):
        async with app_client(settings) as client:
            statuses = [(await client.post("/v1/rerank", json=RERANK, headers=auth)).status_code for _ in range(2)]
        async with app_client(settings) as restarted:
            third = await restarted.post("/v1/rerank", json=RERANK, headers=auth)
    if int(time.time() // 60) != window:
        pytest.skip("a one-minute rate window ended during the test; counts restarted")
    assert statuses == [200, 200]
    assert_error(third, 429, "rate_limit_exceeded")
