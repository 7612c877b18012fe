"""The gateway's hook into online learning: a queue wrapper that logs every finished job's scores.

Wrapping the queue keeps the chat and rerank code untouched: whatever submits a job, its score
matrix reaches the score log and its selections reach the feedback book. The answer does not wait for
that: the observation runs on the runtime's traffic thread (``workers/online/traffic.py``).
"""

from __future__ import annotations

from workers.contract import Job, JobResult
from workers.online.runtime import OnlineRuntime
from workers.queue.base import Catalog, JobQueue, QueueStats


class ObservedQueue(JobQueue):
    def __init__(self, inner: JobQueue, online: OnlineRuntime) -> None:
        self.inner = inner
        self.online = online
        self.mode = inner.mode

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def submit(self, job: Job) -> JobResult:
        result = await self.inner.submit(job)
        self.online.observe_later(job, result)
        return result

    async def ping(self) -> None:
        await self.inner.ping()

    async def stats(self) -> QueueStats:
        return await self.inner.stats()

    async def catalog(self) -> Catalog:
        return await self.inner.catalog()
