"""Cancellation on the Redis Streams queue, on a real Redis: a job every waiter left is never started, even when
the announcement arrives while the worker is checking whether to start it, and a running one stops."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.service.gateway_fakes import RecordingWorker, cancelled_count
from tests.service.gateway_support import REDIS_URL, cleanup, redis_or_skip, running
from workers.contract import Job
from workers.queue.keys import QueueKeys
from workers.queue.redis_queue import RedisJobQueue
from workers.queue.redis_worker import RedisWorkerLoop

pytestmark = pytest.mark.redis


def job(deadline_s: float = 10.0) -> Job:
    return Job(kind="rerank", prompt="q", candidates=["a", "bb"], deadline=time.time() + deadline_s)


async def test_a_job_every_waiter_left_before_a_worker_took_it_is_not_started(queue: RedisJobQueue,
                                                                               prefix: str) -> None:
    worker = RecordingWorker()
    waiting = asyncio.create_task(queue.submit(job()))
    await asyncio.sleep(0.2)  # enqueued, no worker yet
    before = cancelled_count("disconnect")
    waiting.cancel("disconnect")
    await asyncio.gather(waiting, return_exceptions=True)
    assert cancelled_count("disconnect") == before + 1
    loop = RedisWorkerLoop(worker, REDIS_URL, prefix=prefix, block_ms=100)
    async with running(loop):
        await asyncio.sleep(0.5)
    assert worker.runs == []  # its stream entry was deleted: nothing to start


async def test_a_cancellation_announced_while_the_worker_checks_the_start_is_not_lost(prefix: str) -> None:
    """The worker counts the attempt and reads the cancel mark in one round trip, then registers the job's
    task; an announcement that lands during that round trip must still stop the job from starting."""
    redis_or_skip()
    worker = RecordingWorker()
    loop = RedisWorkerLoop(worker, REDIS_URL, prefix=prefix)
    the_job = job()
    real_start = loop._start_job

    async def start_while_announced(*args: object, **kwargs: object) -> object:
        loop._cancel_local(the_job.id, "disconnect")  # the pub/sub message arrives mid-check
        return await real_start(*args, **kwargs)

    loop._start_job = start_while_announced  # type: ignore[method-assign]
    try:
        result = await loop._attempt(the_job, "0-1")
    finally:
        await loop.client.aclose()
        await cleanup(prefix)
    assert result is None and worker.runs == []
    assert the_job.id not in loop._starting and the_job.id not in loop._jobs


async def test_a_running_job_stops_when_its_last_waiter_leaves(queue: RedisJobQueue, prefix: str) -> None:
    worker = RecordingWorker(delay_s=30.0)
    async with running(RedisWorkerLoop(worker, REDIS_URL, prefix=prefix, block_ms=100)):
        the_job = job()
        waiting = asyncio.create_task(queue.submit(the_job))
        for _ in range(100):
            if worker.runs:
                break
            await asyncio.sleep(0.05)
        assert worker.runs == [the_job.id]
        waiting.cancel("disconnect")
        await asyncio.gather(waiting, return_exceptions=True)
        for _ in range(40):  # the worker hears it on the cancel channel (it polls once a second at most)
            if worker.cancelled:
                break
            await asyncio.sleep(0.05)
        assert worker.cancelled == [the_job.id]
    keys = QueueKeys(prefix)
    assert await queue.client.xlen(keys.stream) == 0  # acknowledged without a result, no slot held
