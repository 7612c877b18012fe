"""The worker side of the Redis Streams queue.

Reads jobs through the consumer group, runs them on the local ``Worker``, stores each result once
(SET NX) and hands it to the waiting gateway, and only then acknowledges. Jobs of a worker that died
stay pending and are reclaimed with XAUTOCLAIM after the visibility timeout; jobs still running keep
their lease by re-claiming themselves. On stop: no new jobs, in-flight ones finish within the grace
period, the rest are handed back to the stream for another worker.

Every job runs under its deadline. A job nobody waits for any more is not started (its ``cancelled`` key)
or, when running, is cancelled on the cancel channel's message: generation stops at the next token, its
verifier items are dropped, and the entry is acknowledged without a result.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid

from redis.exceptions import ResponseError

from workers.cancellation import REASONS, count_cancelled
from workers.contract import Job, JobResult
from workers.queue.catalog import WorkerLike, describe_worker
from workers.queue.keys import GROUP, JOB_FIELD, QueueKeys
from workers.queue.redis_common import REDIS_DOWN, connect, ensure_group
from workers.queue.redis_scripts import DROP, FINISH_JOB, HAND_BACK, START_JOB
from workers.queue.runner import run_until_deadline

log = logging.getLogger(__name__)
Entry = tuple[str, dict[str, str] | None]


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class RedisWorkerLoop:
    def __init__(
        self,
        worker: WorkerLike,
        url: str,
        *,
        prefix: str = "weaver",
        name: str | None = None,
        concurrency: int = 4,
        visibility_timeout_s: float = 30.0,
        result_ttl_s: int = 300,
        max_attempts: int = 3,
        heartbeat_interval_s: float = 5.0,
        block_ms: int = 500,
        shutdown_grace_s: float = 30.0,
    ) -> None:
        self.worker = worker
        self.keys = QueueKeys(prefix)
        self.name = name or default_consumer_name()
        self.concurrency = concurrency
        self.visibility_timeout_s = visibility_timeout_s
        self.result_ttl_s = result_ttl_s
        self.max_attempts = max_attempts
        self.heartbeat_interval_s = heartbeat_interval_s
        self.block_ms = block_ms
        self.shutdown_grace_s = shutdown_grace_s
        self.client = connect(url)
        self._finish = self.client.register_script(FINISH_JOB)
        self._hand_back = self.client.register_script(HAND_BACK)
        self._drop = self.client.register_script(DROP)
        self._start_job = self.client.register_script(START_JOB)
        self._inflight: dict[asyncio.Task[None], Entry] = {}
        self._jobs: dict[str, asyncio.Task[JobResult | None]] = {}  # job id -> its running attempt
        self._starting: dict[str, str] = {}  # job id -> cancel reason heard while its start was checked
        self._stopping = asyncio.Event()
        self.processed = 0

    def stop(self) -> None:
        """Stop taking jobs (safe to call from a signal handler)."""
        self._stopping.set()

    async def run(self) -> None:
        """Consume until ``stop()``; then drain or hand back in-flight jobs and leave the worker registry."""
        heartbeat = asyncio.create_task(self._heartbeat())
        listener = asyncio.create_task(self._listen_for_cancellations())
        try:
            await self._consume()
        finally:
            await self._drain()
            for task in (heartbeat, listener):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, *REDIS_DOWN):
                    await task
            with contextlib.suppress(*REDIS_DOWN):
                await self.client.hdel(self.keys.workers, self.name)
            await self.client.aclose()

    async def _consume(self) -> None:
        last_claim = 0.0
        backoff = 0.1
        while not self._stopping.is_set():
            free = self.concurrency - len(self._inflight)
            if free <= 0:
                await asyncio.wait(list(self._inflight), timeout=self.block_ms / 1000, return_when="FIRST_COMPLETED")
                continue
            try:
                entries: list[Entry] = []
                if time.monotonic() - last_claim >= self.visibility_timeout_s / 2:
                    entries = await self._reclaim(free)
                    last_claim = time.monotonic()
                if not entries:
                    entries = await self._read(free)
                backoff = 0.1
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                with contextlib.suppress(*REDIS_DOWN):
                    await ensure_group(self.client, self.keys)
                continue
            except REDIS_DOWN as exc:
                log.warning("redis unreachable (%s); retrying in %.1fs", exc, backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            for entry in entries:
                task = asyncio.create_task(self._handle(*entry))
                self._inflight[task] = entry
                task.add_done_callback(self._inflight.pop)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _read(self, count: int) -> list[Entry]:
        reply = await self.client.xreadgroup(
            GROUP, self.name, {self.keys.stream: ">"}, count=count, block=self.block_ms
        )
        streams: list[tuple[str, list[Entry]]] = reply or []  # type: ignore[assignment]  # decoded: str keys
        return [(entry_id, fields) for _, items in streams for entry_id, fields in items]

    async def _reclaim(self, count: int) -> list[Entry]:
        """Take over jobs whose worker stopped refreshing their lease (it died or hung)."""
        reply = await self.client.xautoclaim(
            self.keys.stream, GROUP, self.name, min_idle_time=int(self.visibility_timeout_s * 1000), count=count
        )
        claimed = [(entry_id, fields) for entry_id, fields in reply[1]]
        if claimed:
            log.info("reclaimed %d job(s) from dead or stalled workers", len(claimed))
        return claimed

    async def _heartbeat(self) -> None:
        while True:
            try:
                description = describe_worker(self.worker)
                description.update(heartbeat=time.time(), name=self.name, inflight=len(self._inflight))
                await self.client.hset(self.keys.workers, self.name, json.dumps(description))
                await self._prune_dead_workers()
            except REDIS_DOWN:
                pass
            await asyncio.sleep(self.heartbeat_interval_s)

    async def _prune_dead_workers(self) -> None:
        """Remove registry entries of workers that died without saying goodbye (SIGKILL, OOM, node loss)."""
        stale_after = max(60.0, 6 * self.heartbeat_interval_s)
        now = time.time()
        dead = []
        for name, raw in (await self.client.hgetall(self.keys.workers)).items():
            try:
                beat = float(json.loads(raw).get("heartbeat", 0.0))
            except (ValueError, TypeError, AttributeError):
                beat = 0.0
            if now - beat > stale_after:
                dead.append(name)
        if dead:
            await self.client.hdel(self.keys.workers, *dead)

    async def _listen_for_cancellations(self) -> None:
        """Cancel the local attempt of every job announced on the cancel channel (reconnects after a Redis outage)."""
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.keys.cancel_channel)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and isinstance(message.get("data"), str):
                        job_id, _, reason = message["data"].partition(" ")
                        self._cancel_local(job_id, reason)
            except REDIS_DOWN:
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(*REDIS_DOWN):
                    await pubsub.aclose()

    def _cancel_local(self, job_id: str, reason: str) -> None:
        reason = reason if reason in REASONS else "disconnect"
        task = self._jobs.get(job_id)
        if job_id in self._starting:  # its start is being checked: it will not start
            self._starting[job_id] = reason
        elif task is None or task.done():
            return
        else:
            task.cancel(reason)
        if reason == "superseded":  # the gateway counts the reasons it causes; this one only a worker sees
            count_cancelled("superseded")
        log.info("job %s cancelled (%s)", job_id, reason)

    async def _keep_lease(self, entry_id: str) -> None:
        """Reset the entry's idle time while the job runs, so XAUTOCLAIM leaves a live job alone."""
        while True:
            await asyncio.sleep(self.visibility_timeout_s / 3)
            with contextlib.suppress(*REDIS_DOWN):
                await self.client.xclaim(
                    self.keys.stream, GROUP, self.name, min_idle_time=0, message_ids=[entry_id], justid=True
                )

    async def _handle(self, entry_id: str, fields: dict[str, str] | None) -> None:
        payload = (fields or {}).get(JOB_FIELD)
        try:
            job = Job.model_validate_json(payload) if payload else None
        except ValueError:
            job = None
        if job is None:
            log.error("dropping unreadable stream entry %s", entry_id)
            with contextlib.suppress(*REDIS_DOWN):
                await self.client.xack(self.keys.stream, GROUP, entry_id)
                await self.client.xdel(self.keys.stream, entry_id)
            return
        result = await self._attempt(job, entry_id)
        if result is None:  # nobody waits for it any more: acknowledge without a result
            with contextlib.suppress(*REDIS_DOWN):
                await asyncio.shield(self._drop(keys=[self.keys.stream], args=[GROUP, entry_id]))
            return
        await asyncio.shield(self._store(job, entry_id, result))

    async def _attempt(self, job: Job, entry_id: str) -> JobResult | None:
        """The job's result; None when it was cancelled or its deadline passed (no one to answer)."""
        self._starting[job.id] = ""  # a cancellation announced from now on is kept for the check below
        try:
            attempts_reply, cancelled = await self._start_job(
                keys=[self.keys.attempts(job.id), self.keys.cancelled(job.id)], args=[self.result_ttl_s])
            attempts = int(attempts_reply)
        except REDIS_DOWN:
            attempts, cancelled = 1, ""
        finally:
            cancelled = self._starting.pop(job.id, "") or cancelled
        if attempts > self.max_attempts:
            return JobResult(
                id=job.id,
                status="error",
                error_type="job_failed",
                worker=self.name,
                error=f"job abandoned after {attempts - 1} attempts (its workers died while running it)",
            )
        if cancelled:  # every waiter left before it started (marked, or announced while we checked)
            return None
        run = asyncio.create_task(run_until_deadline(self.worker, job), name=f"weaver-job-{job.id}")
        self._jobs[job.id] = run  # no await since the check: a later announcement finds this task
        lease = asyncio.create_task(self._keep_lease(entry_id))
        try:
            result = await run
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if run.cancelled() and current is not None and not current.cancelling():
                return None  # the job was cancelled, not this worker: drop it
            run.cancel()
            raise
        finally:
            lease.cancel()
            self._jobs.pop(job.id, None)
        if result is None:
            return None
        result.worker = result.worker or self.name
        return result

    async def _store(self, job: Job, entry_id: str, result: JobResult) -> None:
        """Store the result once and acknowledge; retry while Redis is down, up to the job's deadline."""
        k = self.keys
        keys = [k.result(job.id), k.reply(job.id), k.stream, k.live(job.id), k.attempts(job.id)]
        args: list[str | int] = [result.model_dump_json(), self.result_ttl_s, GROUP, entry_id, k.cancel_channel, job.id]
        delay = 0.1
        while True:
            try:
                stored = await self._finish(keys=keys, args=args)
                self.processed += 1
                if not stored:
                    log.info("job %s was already answered by another worker; result dropped", job.id)
                return
            except REDIS_DOWN as exc:
                if time.time() > job.deadline:
                    log.error("could not store result of job %s before its deadline: %s", job.id, exc)
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _drain(self) -> None:
        """Let in-flight jobs finish within the grace period; hand the rest back to the stream."""
        if not self._inflight:
            return
        _, pending = await asyncio.wait(list(self._inflight), timeout=self.shutdown_grace_s)
        for task in pending:
            entry_id, fields = self._inflight.get(task, ("", None))
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            payload = (fields or {}).get(JOB_FIELD)
            if entry_id and payload:
                try:
                    live = self.keys.live(str(json.loads(payload).get("id", "")))
                    await self._hand_back(keys=[self.keys.stream, live], args=[GROUP, entry_id, payload, JOB_FIELD])
                    log.info("handed job entry %s back to the queue", entry_id)
                except REDIS_DOWN:
                    log.warning("could not hand back %s; it will be reclaimed after the visibility timeout", entry_id)
