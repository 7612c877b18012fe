"""The gateway side of the Redis Streams queue: XADD the job (bounded), BLPOP its reply list.

A gateway that stops waiting (deadline, client disconnect, shutdown) leaves the job; when the last waiter
leaves, the job is cancelled: no worker starts it, the worker running it stops within a pub/sub round trip,
and its stream entry stops holding a queue slot. Jobs carrying an Idempotency-Key attach to a running copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time

from workers.cancellation import CancelReason, count_cancelled, reason_of
from workers.contract import Job, JobResult
from workers.queue.base import Catalog, JobQueue, QueueStats
from workers.queue.catalog import catalog_from_descriptions
from workers.queue.errors import IdempotencyMismatch, JobDeadlineExceeded, QueueFull, QueueUnavailable
from workers.queue.keys import JOB_FIELD, QueueKeys
from workers.queue.redis_common import REDIS_DOWN, connect, ensure_group, entry_age_s, guarded
from workers.queue.redis_scripts import ENQUEUE, LEAVE

BLPOP_SLICE_S = 5.0  # wait in slices so a dead connection is noticed even on long deadlines
KEY_SLACK_S = 60  # job bookkeeping outlives the deadline by this much
REPLAY_S = 600  # a keyed job's fingerprint outlives its result (the workers' result_ttl_s, 300 s by default)


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
        self._enqueue = self.client.register_script(ENQUEUE)
        self._leave = self.client.register_script(LEAVE)
        self._catalog: tuple[float, Catalog] | None = None

    async def start(self) -> None:
        # Redis may be down at start: the gateway still starts, /readyz says why, requests get 503
        with contextlib.suppress(*REDIS_DOWN):
            await ensure_group(self.client, self.keys)

    async def close(self) -> None:
        await self.client.aclose()

    async def submit(self, job: Job) -> JobResult:
        job.enqueued_at = time.time()
        k = self.keys
        ttl = self._ttl(job)
        status, value = await guarded(self._enqueue(
            keys=[k.stream, k.live(job.id), k.result(job.id), k.cancelled(job.id), k.attempts(job.id),
                  k.fingerprint(job.id)],
            args=[self.max_depth, job.model_dump_json(), JOB_FIELD, ttl, job.fingerprint or "", ttl + REPLAY_S],
        ))
        if status == "full":
            raise QueueFull(f"queue is full ({self.max_depth} jobs waiting or running)", self.retry_after_s)
        if status == "mismatch":
            raise IdempotencyMismatch(
                "this Idempotency-Key was used with a different request; use a new key for a new request")
        if status == "replay":
            return JobResult.model_validate_json(value)
        try:
            result = await self._await_reply(job)
        except JobDeadlineExceeded:
            await self._abandon(job, "deadline")
            raise
        except asyncio.CancelledError as exc:
            await asyncio.shield(self._abandon(job, reason_of(exc)))
            raise
        if result.status == "error" and result.error_type == "deadline_exceeded":
            raise JobDeadlineExceeded(result.error or "deadline exceeded")
        return result

    async def _await_reply(self, job: Job) -> JobResult:
        reply = self.keys.reply(job.id)
        while True:
            remaining = job.deadline - time.time()
            if remaining <= 0:
                raise JobDeadlineExceeded(f"job {job.id} did not finish before its deadline")
            popped = await guarded(self.client.blpop([reply], timeout=min(BLPOP_SLICE_S, remaining)))
            if popped is not None:
                return JobResult.model_validate_json(popped[1])

    async def _abandon(self, job: Job, reason: CancelReason) -> None:
        """This gateway stops waiting; the last waiter to leave cancels the job (the worker stops within ~1 s)."""
        k = self.keys
        try:
            cancelled = await self._leave(
                keys=[k.live(job.id), k.cancelled(job.id), k.stream],
                args=[k.cancel_channel, job.id, reason, self._ttl(job)],
            )
        except REDIS_DOWN:
            return  # the worker still stops at the job's deadline
        if cancelled:
            count_cancelled(reason)

    @staticmethod
    def _ttl(job: Job) -> int:
        return max(1, math.ceil(job.deadline - time.time())) + KEY_SLACK_S

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
        oldest = entry_age_s(str(first[0][0]), now) if first else 0.0
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
