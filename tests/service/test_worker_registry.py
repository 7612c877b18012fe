"""Finding 6 (registry half): a worker that died without deregistering is removed from the workers hash
by the live workers' heartbeat, on a real Redis."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis.asyncio as aioredis

from tests.service.gateway_fakes import FakeWorker
from tests.service.gateway_support import REDIS_URL, redis_or_skip
from workers.queue.keys import QueueKeys
from workers.queue.redis_worker import RedisWorkerLoop

pytestmark = pytest.mark.redis


async def test_a_dead_workers_entry_is_pruned_by_a_live_worker(prefix: str) -> None:
    redis_or_skip()
    keys = QueueKeys(prefix)
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        dead = {"name": "dead@host:1", "ready": True, "heartbeat": time.time() - 600}
        recent = {"name": "slow@host:2", "ready": True, "heartbeat": time.time() - 10}
        await client.hset(keys.workers, mapping={"dead@host:1": json.dumps(dead), "slow@host:2": json.dumps(recent)})
        loop = RedisWorkerLoop(FakeWorker(), REDIS_URL, prefix=prefix, name="live@host:3", heartbeat_interval_s=0.1)
        task = asyncio.create_task(loop.run())
        try:
            for _ in range(50):
                await asyncio.sleep(0.1)
                names = {n.decode() for n in await client.hkeys(keys.workers)}
                if "live@host:3" in names and "dead@host:1" not in names:
                    break
            assert names == {"live@host:3", "slow@host:2"}  # the dead one is gone, a merely slow one stays
        finally:
            loop.stop()
            await asyncio.wait_for(task, 10)
    finally:
        keys_left = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys_left:
            await client.delete(*keys_left)
        await client.aclose()
