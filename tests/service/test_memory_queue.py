"""The in-process queue (embedded mode): one answer per job, concurrency for batching, graceful close,
deadlines and cancellations that reach the running job, Idempotency-Key attach and replay."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.service.gateway_fakes import FakeWorker, RecordingWorker, cancelled_count
from workers.contract import Job
from workers.queue.errors import IdempotencyMismatch, JobDeadlineExceeded, QueueUnavailable
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




@pytest.mark.parametrize("busy", [False, True], ids=["fast-path", "queued"])
async def test_a_job_past_its_deadline_is_cancelled_where_it_runs(busy: bool) -> None:
    worker = RecordingWorker(delay_s=5.0)
    queue = InProcessQueue(worker, concurrency=1 if busy else 4)
    await queue.start()
    blocker = asyncio.create_task(queue.submit(job(10.0))) if busy else None
    await asyncio.sleep(0.01)
    before = cancelled_count("deadline")
    late = job(0.3)
    with pytest.raises(JobDeadlineExceeded):
        await queue.submit(late)
    await asyncio.sleep(0.05)
    assert cancelled_count("deadline") == before + 1
    if busy:  # it never started: the slot was taken until its deadline
        assert late.id not in worker.runs
        assert blocker is not None
        blocker.cancel()
    else:
        assert worker.cancelled == [late.id]
    assert (await queue.stats()).depth == 0 or busy
    await queue.close()


async def test_a_caller_that_goes_away_cancels_its_job_with_its_reason() -> None:
    worker = RecordingWorker(delay_s=5.0)
    queue = InProcessQueue(worker, concurrency=1)
    await queue.start()
    running, waiting = job(), job()
    first = asyncio.create_task(queue.submit(running))
    second = asyncio.create_task(queue.submit(waiting))
    await asyncio.sleep(0.05)
    before = cancelled_count("disconnect")
    first.cancel("disconnect")
    second.cancel("disconnect")
    await asyncio.gather(first, second, return_exceptions=True)
    await asyncio.sleep(0.05)
    assert worker.cancelled == [running.id] and waiting.id not in worker.runs
    assert cancelled_count("disconnect") == before + 2
    stats = await queue.stats()
    assert stats.depth == 0 and stats.running == 0
    await queue.close()


async def test_the_same_idempotent_job_runs_once_for_every_waiter() -> None:
    worker = RecordingWorker(delay_s=0.3)
    queue = InProcessQueue(worker, concurrency=4)
    await queue.start()
    first = job()
    first.fingerprint = "request-digest"
    retry = first.model_copy()
    leaver = first.model_copy()
    tasks = [asyncio.create_task(queue.submit(j)) for j in (first, retry, leaver)]
    await asyncio.sleep(0.05)
    tasks[2].cancel()  # one waiter leaves: the others still want the job
    results = await asyncio.gather(*tasks[:2])
    assert worker.runs == [first.id] and worker.cancelled == []
    assert results[0].model_dump() == results[1].model_dump()
    replayed = await queue.submit(first.model_copy())  # finished: answered again without running
    assert replayed.model_dump() == results[0].model_dump() and worker.runs == [first.id]
    other = first.model_copy(update={"fingerprint": "another request"})
    with pytest.raises(IdempotencyMismatch):
        await queue.submit(other)
    await queue.close()
