"""Run one job on a worker: the one place that enforces the deadline and turns a crash into an error result."""

from __future__ import annotations

import asyncio
import logging
import time

from workers.contract import Job, JobResult
from workers.queue.catalog import WorkerLike

log = logging.getLogger(__name__)


async def run_job(worker: WorkerLike, job: Job) -> JobResult | None:
    """The job's result, or None when its deadline passed before it could start (expired jobs are not run)."""
    started = time.time()
    if started >= job.deadline:
        return None
    try:
        result = await worker.run(job)
    except Exception as exc:  # noqa: BLE001 - Worker.run promises not to raise; if it does, answer anyway
        log.exception("worker raised on job %s", job.id)
        result = JobResult(id=job.id, status="error", error=f"worker failed: {exc}", error_type="worker_error")
    if job.enqueued_at is not None:
        result.timings.setdefault("queue_wait", max(0.0, started - job.enqueued_at))
    return result


async def run_until_deadline(worker: WorkerLike, job: Job) -> JobResult | None:
    """``run_job`` cancelled at ``job.deadline`` (generation stops at the next token); None when it passed."""
    try:
        async with asyncio.timeout(job.deadline - time.time()):
            return await run_job(worker, job)
    except TimeoutError:
        return None
