"""The gateway side of the Redis Streams queue: XADD the job (bounded), BLPOP its reply list."""

from __future__ import annotations

import contextlib
import json
import time

from workers.contract import Job, JobResult
from workers.queue.base import Catalog, JobQueue, QueueStats
from workers.queue.catalog import catalog_from_descriptions
from workers.queue.errors import JobDeadlineExceeded, QueueFull, QueueUnavailable
from workers.queue.keys import JOB_FIELD, QueueKeys
from workers.queue.redis_common import REDIS_DOWN, connect, ensure_group, entry_age_s, guarded
from workers.queue.redis_scripts import ENQUEUE_BOUNDED

BLPOP_SLICE_S = 5.0  # wait in slices so a dead connection is noticed even on long deadlines


class RedisJobQueue(JobQueue):
    mode = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "weaver",
        max_depth: int = 256,
        retry_after_s: float = 1.0,
        heartbeat_ttl_s: float = 15.0,
        catalog_cache_s: float = 2.0,
    ) -> None:
        self.url = url
        self.keys = QueueKeys(prefix)
        self.max_depth = max_depth
        self.retry_after_s = retry_after_s
        self.heartbeat_ttl_s = heartbeat_ttl_s
        self.catalog_cache_s = catalog_cache_s
        self.client = connect(url, socket_timeout_s=BLPOP_SLICE_S + 5.0)
        self._enqueue = self.client.register_script(ENQUEUE_BOUNDED)
        self._catalog: tuple[float, Catalog] | None = None

    async def start(self) -> None:
        # Redis may be down at start: the gateway still starts, /readyz says why, requests get 503
        with contextlib.suppress(*REDIS_DOWN):
            await ensure_group(self.client, self.keys)

    async def close(self) -> None:
        await self.client.aclose()

    async def submit(self, job: Job) -> JobResult:
        job.enqueued_at = time.time()
        payload = job.model_dump_json()
        entry = await guarded(self._enqueue(keys=[self.keys.stream], args=[self.max_depth, payload, JOB_FIELD]))
        if entry is None:
            raise QueueFull(f"queue is full ({self.max_depth} jobs waiting or running)", self.retry_after_s)
        reply = self.keys.reply(job.id)
        while True:
            remaining = job.deadline - time.time()
            if remaining <= 0:
                raise JobDeadlineExceeded(f"job {job.id} did not finish before its deadline")
            popped = await guarded(self.client.blpop([reply], timeout=min(BLPOP_SLICE_S, remaining)))
            if popped is not None:
                result = JobResult.model_validate_json(popped[1])
                if result.status == "error" and result.error_type == "deadline_exceeded":
                    raise JobDeadlineExceeded(result.error or "deadline exceeded")
                return result

    async def ping(self) -> None:
        await guarded(self.client.ping())

    async def _descriptions(self) -> list[dict[str, object]]:
        raw = await guarded(self.client.hgetall(self.keys.workers))
        now = time.time()
        live = []
        for value in raw.values():
            try:
                desc = json.loads(value)
            except ValueError:
                continue
            if now - float(desc.get("heartbeat", 0.0)) <= self.heartbeat_ttl_s:
                live.append(desc)
        return live

    async def stats(self) -> QueueStats:
        depth = await guarded(self.client.xlen(self.keys.stream))
        first = await guarded(self.client.xrange(self.keys.stream, count=1))
        now = time.time()
        oldest = entry_age_s(first[0][0], now) if first else 0.0
        workers = [d for d in await self._descriptions() if d.get("ready")]
        return QueueStats(depth=int(depth), oldest_age_s=oldest, workers=len(workers))

    async def catalog(self) -> Catalog:
        now = time.monotonic()
        if self._catalog is not None and now - self._catalog[0] < self.catalog_cache_s:
            return self._catalog[1]
        try:
            catalog = catalog_from_descriptions(await self._descriptions())
        except QueueUnavailable as exc:
            return Catalog(ready=False, errors={"queue": str(exc)})
        self._catalog = (now, catalog)
        return catalog
