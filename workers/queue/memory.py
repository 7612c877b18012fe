"""In-process queue for embedded mode: the gateway and the worker share one event loop.

A bounded list of pending jobs feeds ``concurrency`` consumer tasks, so concurrent requests reach the
worker together and its verifiers can batch them. Each job is answered through its own future, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from workers.contract import Job, JobResult
from workers.queue.base import Catalog, JobQueue, QueueStats
from workers.queue.catalog import WorkerLike, catalog_from_descriptions, describe_worker
from workers.queue.errors import JobDeadlineExceeded, QueueFull, QueueUnavailable
from workers.queue.runner import run_job

log = logging.getLogger(__name__)
CATALOG_TTL_S = 1.0


class InProcessQueue(JobQueue):
    mode = "embedded"

    def __init__(
        self,
        worker: WorkerLike,
        *,
        max_depth: int = 64,
        concurrency: int = 8,
        retry_after_s: float = 1.0,
        shutdown_grace_s: float = 30.0,
    ) -> None:
        self.worker = worker
        self.max_depth = max_depth
        self.concurrency = concurrency
        self.retry_after_s = retry_after_s
        self.shutdown_grace_s = shutdown_grace_s
        self._pending: asyncio.Queue[tuple[Job, asyncio.Future[JobResult]]] = asyncio.Queue()
        self._catalog: tuple[float, Catalog] | None = None
        self._running: dict[str, float] = {}  # job id -> enqueued_at
        self._consumers: list[asyncio.Task[None]] = []
        self._closing = False

    async def start(self) -> None:
        self._closing = False
        self._consumers = [
            asyncio.create_task(self._consume(), name=f"weaver-consumer-{i}") for i in range(self.concurrency)
        ]

    async def submit(self, job: Job) -> JobResult:
        if self._closing:
            raise QueueUnavailable("the service is shutting down")
        if self._pending.qsize() + len(self._running) >= self.max_depth:
            raise QueueFull(f"queue is full ({self.max_depth} jobs waiting or running)", self.retry_after_s)
        job.enqueued_at = time.time()
        future: asyncio.Future[JobResult] = asyncio.get_running_loop().create_future()
        self._pending.put_nowait((job, future))
        try:
            async with asyncio.timeout(max(0.0, job.deadline - time.time())):
                return await future  # on timeout the future is cancelled: a consumer that has not started skips it
        except TimeoutError:
            raise JobDeadlineExceeded(f"job {job.id} did not finish before its deadline") from None

    async def _consume(self) -> None:
        while True:
            job, future = await self._pending.get()
            if future.done():  # the client gave up before we started
                continue
            self._running[job.id] = job.enqueued_at or time.time()
            try:
                result = await run_job(self.worker, job)
            except asyncio.CancelledError:  # shutdown past the grace period: answer, don't leave it hanging
                if not future.done():
                    future.set_exception(QueueUnavailable(f"job {job.id} interrupted by shutdown"))
                raise
            finally:
                self._running.pop(job.id, None)
            if future.done():
                continue
            if result is None:
                future.set_exception(JobDeadlineExceeded(f"job {job.id} expired before a worker could start it"))
            else:
                future.set_result(result)

    async def close(self) -> None:
        """Refuse new jobs, let queued and running ones finish (up to the grace period), then stop."""
        self._closing = True
        deadline = time.monotonic() + self.shutdown_grace_s
        while (self._pending.qsize() or self._running) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        while not self._pending.empty():
            job, future = self._pending.get_nowait()
            if not future.done():
                future.set_exception(QueueUnavailable(f"job {job.id} not started before shutdown"))
        for task in self._consumers:
            task.cancel()
        for task in self._consumers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._consumers = []

    async def ping(self) -> None:
        if self._closing:
            raise QueueUnavailable("the service is shutting down")

    async def stats(self) -> QueueStats:
        now = time.time()
        queued = [job.enqueued_at or now for job, _ in list(self._pending._queue)]  # noqa: SLF001 - a snapshot
        starts = list(self._running.values()) + queued
        return QueueStats(
            depth=self._pending.qsize() + len(self._running),
            oldest_age_s=max((now - t for t in starts), default=0.0),
            workers=1 if self.worker.ready() else 0,
        )

    async def catalog(self) -> Catalog:
        """The worker's catalogue, rebuilt at most once a second (it is read on every request)."""
        now = time.monotonic()
        if self._catalog is None or now - self._catalog[0] > CATALOG_TTL_S:
            self._catalog = (now, catalog_from_descriptions([describe_worker(self.worker)]))
        return self._catalog[1]
