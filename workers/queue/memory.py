"""In-process queue for embedded mode: the gateway and the worker share one event loop.

Up to ``concurrency`` jobs run at once (so concurrent requests reach the worker together and its
verifiers can batch them); the rest wait in order. Each job runs in its own task under its deadline and
is answered through one shared future, once. A job lives as long as someone waits for it: when its last
waiter goes away (client disconnect, shutdown) or its deadline passes, its task is cancelled, which stops
generation at the next token and drops its verifier items. Jobs with the same id (an Idempotency-Key)
attach to the one already waiting or running instead of running twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

from workers.cancellation import CancelReason, count_cancelled, reason_of
from workers.contract import Job, JobResult
from workers.queue.base import Catalog, JobQueue, QueueStats
from workers.queue.catalog import WorkerLike, catalog_from_descriptions, describe_worker
from workers.queue.errors import IdempotencyMismatch, JobDeadlineExceeded, QueueFull, QueueUnavailable
from workers.queue.runner import run_until_deadline

log = logging.getLogger(__name__)
CATALOG_TTL_S = 1.0
REPLAY_MAX = 1024  # finished keyed jobs remembered for replay


@dataclass(eq=False)  # identity: removing one from the deque must not compare (or repr) whole jobs
class _Entry:
    job: Job
    outcome: asyncio.Future[JobResult]
    waiters: int = 1
    task: asyncio.Task[None] | None = None
    reason: CancelReason | None = None


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
        replay_ttl_s: float = 300.0,
    ) -> None:
        self.worker = worker
        self.max_depth = max_depth
        self.concurrency = concurrency
        self.retry_after_s = retry_after_s
        self.shutdown_grace_s = shutdown_grace_s
        self.replay_ttl_s = replay_ttl_s
        self._jobs: dict[str, _Entry] = {}  # waiting or running, by job id
        self._waiting: deque[_Entry] = deque()
        self._running = 0
        self._replay: OrderedDict[str, tuple[float, Job, JobResult]] = OrderedDict()  # keyed job id -> answer
        self._catalog: tuple[float, Catalog] | None = None
        self._closing = False

    async def start(self) -> None:
        self._closing = False

    async def submit(self, job: Job) -> JobResult:
        if self._closing:
            raise QueueUnavailable("the service is shutting down")
        entry = self._jobs.get(job.id)
        if entry is not None:
            _check_same_request(entry.job, job)
            entry.waiters += 1
        else:
            replayed = self._replayed(job)
            if replayed is not None:
                return replayed
            if len(self._jobs) >= self.max_depth:
                raise QueueFull(f"queue is full ({self.max_depth} jobs waiting or running)", self.retry_after_s)
            job.enqueued_at = time.time()
            entry = _Entry(job, asyncio.get_running_loop().create_future())
            self._jobs[job.id] = entry
            if job.fingerprint is None and self._running < self.concurrency and not self._waiting:
                return await self._run_here(entry)
            self._waiting.append(entry)
            self._dispatch()
        try:
            async with asyncio.timeout(max(0.0, entry.job.deadline - time.time())):
                return await asyncio.shield(entry.outcome)  # shared by every waiter: one leaving must not cancel it
        except TimeoutError:
            self._cancel(entry, "deadline")
            raise JobDeadlineExceeded(f"job {job.id} did not finish before its deadline") from None
        except asyncio.CancelledError as exc:
            entry.waiters -= 1
            if entry.waiters <= 0:
                self._cancel(entry, reason_of(exc))
            raise

    async def _run_here(self, entry: _Entry) -> JobResult:
        """Fast path: a free slot and a job only this caller waits for (no Idempotency-Key) runs in the
        caller's own task, without a hand-off; cancelling the caller cancels the job directly."""
        job = entry.job
        entry.task = asyncio.current_task()
        self._running += 1
        try:
            result = await run_until_deadline(self.worker, job)
        except asyncio.CancelledError as exc:
            if entry.reason == "shutdown" and entry.task is not None:  # close() past the grace period
                entry.task.uncancel()
                raise QueueUnavailable(f"job {job.id} interrupted by shutdown") from None
            reason = reason_of(exc)
            entry.reason = reason
            count_cancelled(reason)
            raise
        finally:
            self._running -= 1
            self._forget(entry)
            self._dispatch()
        if result is None:
            entry.reason = "deadline"
            count_cancelled("deadline")
            raise JobDeadlineExceeded(f"job {job.id} did not finish before its deadline")
        return result

    def _dispatch(self) -> None:
        """Start waiting jobs while slots are free."""
        while self._running < self.concurrency and self._waiting:
            entry = self._waiting.popleft()
            if entry.outcome.done():
                continue
            self._running += 1
            entry.task = asyncio.create_task(self._run(entry), name=f"weaver-job-{entry.job.id}")
            # a callback, not a finally: a task cancelled before its first step never runs its body
            def finished(_: object, entry: _Entry = entry) -> None:
                self._finished(entry)

            entry.task.add_done_callback(finished)

    def _finished(self, entry: _Entry) -> None:
        self._running -= 1
        self._forget(entry)
        self._dispatch()

    async def _run(self, entry: _Entry) -> None:
        job = entry.job
        try:
            result = await run_until_deadline(self.worker, job)
        except asyncio.CancelledError:
            if not entry.outcome.done():
                entry.outcome.set_exception(QueueUnavailable(f"job {job.id} interrupted by shutdown"))
            raise
        if result is None:
            self._cancel(entry, "deadline")
            return
        if not entry.outcome.done():
            entry.outcome.set_result(result)
        if job.fingerprint is not None and result.status == "ok":
            self._remember(job, result)

    def _cancel(self, entry: _Entry, reason: CancelReason) -> None:
        """Nobody waits any more (or the deadline passed): stop the job wherever it is, count it once."""
        if not entry.outcome.done():
            entry.reason = reason
            count_cancelled(reason)
            error: Exception = (JobDeadlineExceeded("the job's deadline passed") if reason == "deadline"
                                else QueueUnavailable(f"job cancelled ({reason})"))
            entry.outcome.set_exception(error)
            entry.outcome.exception()  # mark retrieved: the waiters are gone or answer on their own
        task = entry.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel(reason)
        self._forget(entry)

    def _forget(self, entry: _Entry) -> None:
        if self._jobs.get(entry.job.id) is entry:
            del self._jobs[entry.job.id]
        if entry in self._waiting:  # not `remove` + suppress: its ValueError formats the entry's repr
            self._waiting.remove(entry)

    def _remember(self, job: Job, result: JobResult) -> None:
        self._replay[job.id] = (time.monotonic(), job, result)
        while len(self._replay) > REPLAY_MAX:
            self._replay.popitem(last=False)

    def _replayed(self, job: Job) -> JobResult | None:
        """A finished job with the same Idempotency-Key (and the same request) answers again, without running."""
        if job.fingerprint is None or job.id not in self._replay:
            return None
        at, first, result = self._replay[job.id]
        if time.monotonic() - at > self.replay_ttl_s:
            del self._replay[job.id]
            return None
        _check_same_request(first, job)
        return result.model_copy(deep=True)

    async def close(self) -> None:
        """Refuse new jobs, let waiting and running ones finish (up to the grace period), then cancel the rest."""
        self._closing = True
        deadline = time.monotonic() + self.shutdown_grace_s
        while self._jobs and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        tasks = []
        for entry in list(self._jobs.values()):
            if not entry.outcome.done():
                started = entry.task is not None
                entry.outcome.set_exception(QueueUnavailable(
                    f"job {entry.job.id} {'interrupted by' if started else 'not started before'} shutdown"))
                entry.outcome.exception()  # a fast-path caller answers on its own; nobody else reads it
                entry.reason = "shutdown"
                count_cancelled("shutdown")
            if entry.task is not None and not entry.task.done():
                entry.task.cancel("shutdown")
                tasks.append(entry.task)
            self._forget(entry)
        for task in tasks:  # job tasks, or the callers' own tasks (fast path), which answer QueueUnavailable
            with contextlib.suppress(asyncio.CancelledError, QueueUnavailable):
                await task

    async def ping(self) -> None:
        if self._closing:
            raise QueueUnavailable("the service is shutting down")

    async def stats(self) -> QueueStats:
        now = time.time()
        starts = [entry.job.enqueued_at or now for entry in self._jobs.values()]
        return QueueStats(
            depth=len(self._jobs),
            oldest_age_s=max((now - t for t in starts), default=0.0),
            workers=1 if self.worker.ready() else 0,
            running=self._running,
        )

    async def catalog(self) -> Catalog:
        """The worker's catalogue, rebuilt at most once a second (it is read on every request)."""
        now = time.monotonic()
        if self._catalog is None or now - self._catalog[0] > CATALOG_TTL_S:
            self._catalog = (now, catalog_from_descriptions([describe_worker(self.worker)]))
        return self._catalog[1]


def _check_same_request(running: Job, retry: Job) -> None:
    if running.fingerprint != retry.fingerprint:
        raise IdempotencyMismatch(
            "this Idempotency-Key was used with a different request; use a new key for a new request")
