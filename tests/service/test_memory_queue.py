"""The in-process queue (embedded mode): one answer per job, concurrency for batching, graceful close."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.service.gateway_fakes import FakeWorker
from workers.contract import Job
from workers.queue.errors import QueueUnavailable
from workers.queue.memory import InProcessQueue


def job(deadline_s: float = 10.0) -> Job:
    return Job(kind="rerank", prompt="q", candidates=["a", "bb"], deadline=time.time() + deadline_s)


async def test_concurrent_jobs_reach_the_worker_together() -> None:
    worker = FakeWorker(delay_s=0.2)
    queue = InProcessQueue(worker, concurrency=4)
    await queue.start()
    started = time.perf_counter()
    results = await asyncio.gather(*(queue.submit(job()) for _ in range(4)))
    assert time.perf_counter() - started < 0.6  # run side by side, not one after another
    assert {r.id for r in results} == set(worker.runs) and len(results) == 4
    stats = await queue.stats()
    assert stats.depth == 0 and stats.workers == 1
    await queue.close()


async def test_close_finishes_in_flight_jobs_and_refuses_new_ones() -> None:
    worker = FakeWorker(delay_s=0.3)
    queue = InProcessQueue(worker, concurrency=1, shutdown_grace_s=5)
    await queue.start()
    in_flight = asyncio.create_task(queue.submit(job()))
    await asyncio.sleep(0.05)
    closing = asyncio.create_task(queue.close())
    await asyncio.sleep(0.01)
    with pytest.raises(QueueUnavailable):
        await queue.submit(job())
    result = await in_flight
    await closing
    assert result.status == "ok" and worker.runs == [result.id]


async def test_jobs_not_started_within_the_grace_period_get_an_explicit_error() -> None:
    worker = FakeWorker(delay_s=1.0)
    queue = InProcessQueue(worker, concurrency=1, shutdown_grace_s=0.1)
    await queue.start()
    first = asyncio.create_task(queue.submit(job()))
    second = asyncio.create_task(queue.submit(job()))
    await asyncio.sleep(0.05)
    await queue.close()
    for task in (first, second):  # the running one was interrupted, the queued one never started
        with pytest.raises(QueueUnavailable):
            await task
