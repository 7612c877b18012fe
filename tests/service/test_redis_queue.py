"""The Redis Streams queue on a real Redis: delivery, reclaim, idempotent results, hand-back, no leaked keys.

Worker logic here is the small fake (the queue is under test); the multi-process test uses the real worker.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.service.gateway_fakes import FakeWorker
from tests.service.gateway_support import REDIS_URL, running
from workers.contract import Job
from workers.queue.errors import JobDeadlineExceeded, QueueFull
from workers.queue.keys import GROUP, JOB_FIELD, QueueKeys
from workers.queue.redis_queue import RedisJobQueue
from workers.queue.redis_worker import RedisWorkerLoop

pytestmark = pytest.mark.redis


def rerank_job(i: int = 0, deadline_s: float = 10.0) -> Job:
    return Job(kind="rerank", prompt=f"q{i}", candidates=["a", "bb", "ccc"], deadline=time.time() + deadline_s)


async def test_jobs_are_answered_once_and_leave_no_pending_state(queue: RedisJobQueue, prefix: str) -> None:
    worker = FakeWorker()
    async with running(RedisWorkerLoop(worker, REDIS_URL, prefix=prefix, heartbeat_interval_s=0.2)):
        results = await asyncio.gather(*(queue.submit(rerank_job(i)) for i in range(8)))
        assert [r.status for r in results] == ["ok"] * 8
        assert [r.selected_index for r in results] == [2] * 8
        assert all("queue_wait" in r.timings for r in results)
        await asyncio.sleep(0.3)
        catalog = await queue.catalog()
        assert catalog.ready and catalog.available == ["length", "echo"] and catalog.workers == 1
    client = queue.client
    keys = QueueKeys(prefix)
    assert await client.xlen(keys.stream) == 0
    assert (await client.xpending(keys.stream, GROUP))["pending"] == 0
    assert [k async for k in client.scan_iter(match=f"{prefix}:reply:*")] == []
    results_left = [k async for k in client.scan_iter(match=f"{prefix}:result:*")]
    assert len(results_left) == 8
    assert all([await client.ttl(k) > 0 for k in results_left])
    assert await client.hlen(keys.workers) == 0  # a stopped worker leaves the registry


async def test_job_of_a_dead_consumer_is_reclaimed_and_answered_once(queue: RedisJobQueue, prefix: str) -> None:
    keys = QueueKeys(prefix)
    job = rerank_job()
    job.enqueued_at = time.time()
    await queue.client.xadd(keys.stream, {JOB_FIELD: job.model_dump_json()})
    # a consumer takes it and dies without acknowledging
    taken = await queue.client.xreadgroup(GROUP, "dead-worker", {keys.stream: ">"}, count=1)
    entry_id = taken[0][1][0][0]
    worker = FakeWorker()
    loop = RedisWorkerLoop(worker, REDIS_URL, prefix=prefix, visibility_timeout_s=0.5, block_ms=100)
    async with running(loop):
        popped = await queue.client.blpop([keys.reply(job.id)], timeout=5)
    assert popped is not None and worker.runs == [job.id]
    assert (await queue.client.xpending(keys.stream, GROUP))["pending"] == 0
    assert await queue.client.xrange(keys.stream, entry_id, entry_id) == []


async def test_a_second_answer_is_dropped(queue: RedisJobQueue, prefix: str) -> None:
    """Two workers finishing the same job (a reclaimed job whose first worker was only slow): one reply."""
    keys = QueueKeys(prefix)
    job = rerank_job()
    entry_id = await queue.client.xadd(keys.stream, {JOB_FIELD: job.model_dump_json()})
    await queue.client.xreadgroup(GROUP, "a", {keys.stream: ">"}, count=1)
    loops = [RedisWorkerLoop(FakeWorker(), REDIS_URL, prefix=prefix, name=n) for n in ("a", "b")]
    result = await FakeWorker().run(job)
    for loop in loops:
        await loop._store(job, entry_id, result)  # noqa: SLF001 - the store/ack step under test
        await loop.client.aclose()
    assert await queue.client.llen(keys.reply(job.id)) == 1


async def test_full_queue_raises_queue_full(queue: RedisJobQueue) -> None:
    waiting = [asyncio.create_task(queue.submit(rerank_job(i, deadline_s=1))) for i in range(8)]
    await asyncio.sleep(0.2)
    with pytest.raises(QueueFull) as info:
        await queue.submit(rerank_job(99))
    assert info.value.retry_after_s == queue.retry_after_s
    for task in waiting:
        with pytest.raises(JobDeadlineExceeded):
            await task


async def test_expired_jobs_are_not_run(queue: RedisJobQueue, prefix: str) -> None:
    """Past its deadline nobody waits for a job: it is acknowledged and deleted, never run nor answered."""
    keys = QueueKeys(prefix)
    job = rerank_job(deadline_s=-1)
    await queue.client.xadd(keys.stream, {JOB_FIELD: job.model_dump_json()})
    worker = FakeWorker()
    async with running(RedisWorkerLoop(worker, REDIS_URL, prefix=prefix, block_ms=100)):
        popped = await queue.client.blpop([keys.reply(job.id)], timeout=1)
        for _ in range(50):
            if await queue.client.xlen(keys.stream) == 0:
                break
            await asyncio.sleep(0.1)
    assert worker.runs == [] and popped is None
    assert await queue.client.xlen(keys.stream) == 0


async def test_shutdown_hands_back_unfinished_jobs(queue: RedisJobQueue, prefix: str) -> None:
    slow = FakeWorker(delay_s=5)
    loop = RedisWorkerLoop(slow, REDIS_URL, prefix=prefix, shutdown_grace_s=0.2, block_ms=100)
    task = asyncio.create_task(loop.run())
    submitted = asyncio.create_task(queue.submit(rerank_job(deadline_s=20)))
    while not slow.runs:
        await asyncio.sleep(0.02)
    loop.stop()
    await asyncio.wait_for(task, 5)  # returns after the grace period, not after the 5 s job
    fast = FakeWorker()
    async with running(RedisWorkerLoop(fast, REDIS_URL, prefix=prefix, block_ms=100)):
        result = await asyncio.wait_for(submitted, 10)
    assert result.status == "ok" and fast.runs == slow.runs


async def test_a_running_job_keeps_its_lease_and_is_not_stolen(queue: RedisJobQueue, prefix: str) -> None:
    """A job that runs longer than the visibility timeout is not reclaimed while its worker is alive."""
    slow, other = FakeWorker(delay_s=1.5), FakeWorker()
    first = RedisWorkerLoop(slow, REDIS_URL, prefix=prefix, visibility_timeout_s=0.5, block_ms=100)
    second = RedisWorkerLoop(other, REDIS_URL, prefix=prefix, visibility_timeout_s=0.5, block_ms=100)
    async with running(first):
        submitted = asyncio.create_task(queue.submit(rerank_job(deadline_s=10)))
        while not slow.runs:
            await asyncio.sleep(0.02)
        async with running(second):  # polls XAUTOCLAIM every 0.25 s with a 0.5 s idle threshold
            result = await asyncio.wait_for(submitted, 10)
    assert result.status == "ok" and other.runs == [] and len(slow.runs) == 1
