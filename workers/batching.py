"""Dynamic batching per verifier.

Requests from many concurrent jobs are queued per verifier; a collector takes the first waiting
item, waits up to ``max_wait_ms`` for more (up to ``max_batch_size``), and runs the batch off the
event loop. Results are routed back to each caller in order. Identical items (same cache key) that
are queued or in flight share one computation; finished scores go to the score cache. A batch that
raises is retried item by item so one bad item cannot poison its neighbours; a batch that times out
yields NaN + an error for its items. Callers that are cancelled before their batch runs are dropped; a
running batch whose callers have all gone is cancelled (the verifier's call sees CancelledError: a sandbox
kills its process group), and its slot is held until the verifier's thread really returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

from workers.cache import ScoreCache, score_cache_key
from workers.verifiers.base import GroupItem, Item, Score, Scored, Verifier

log = logging.getLogger(__name__)

COST_SMOOTHING = 0.2  # weight of the newest batch in the measured cost per candidate


@dataclass(frozen=True)
class Outcome:
    """One item's result: a score (float, or a list for a group) or an error."""

    value: Score | None
    error: str | None = None
    cached: bool = False
    note: str | None = None  # the verifier's explanation of a score (pairs only)

    def as_floats(self, n: int) -> list[float]:
        """The value as n floats (NaN where failed): n = 1 for a pair, the group size for a group."""
        if self.value is None:
            return [math.nan] * n
        if isinstance(self.value, list):
            return [float(v) for v in self.value]
        return [float(self.value)]


@dataclass
class _Entry:
    key: str
    item: Item
    waiters: list[asyncio.Future[Outcome]] = field(default_factory=list)

    def live(self) -> bool:
        return any(not w.done() for w in self.waiters)

    def resolve(self, outcome: Outcome) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(outcome)


@dataclass
class BatcherStats:
    items: int = 0  # items submitted
    cache_hits: int = 0
    deduped: int = 0  # items that joined an identical queued or in-flight item
    batches: int = 0
    batched_items: int = 0
    errors: int = 0
    timeouts: int = 0
    dropped_cancelled: int = 0
    cancelled_batches: int = 0  # running batches cancelled because all their callers had gone
    # measured cost: moving average of a successful batch's wall seconds per candidate (None before one ran)
    seconds_per_candidate: float | None = None

    def observe_cost(self, seconds: float, candidates: int) -> None:
        """Fold one successful batch into the moving average (weight 0.2: about the last five batches)."""
        if candidates <= 0:
            return
        cost = seconds / candidates
        previous = self.seconds_per_candidate
        self.seconds_per_candidate = cost if previous is None else previous + COST_SMOOTHING * (cost - previous)


def _candidates(item: Item) -> int:
    return len(item.candidates) if isinstance(item, GroupItem) else 1


def _check(verifier: Verifier, item: Item, value: Score | Scored) -> Outcome:
    """Validate a verifier's output shape for one item (a wrong shape is the verifier's bug)."""
    if isinstance(item, GroupItem):
        if not isinstance(value, list) or len(value) != len(item.candidates):
            raise ValueError(f"{verifier.name} returned {value!r} for a group of {len(item.candidates)}")
        return Outcome([float(v) for v in value])
    if isinstance(value, Scored):
        return Outcome(float(value.value), note=value.note)
    if isinstance(value, list):
        raise ValueError(f"{verifier.name} returned a list for a single pair")
    return Outcome(float(value))


def _noop() -> None:
    return None


class VerifierBatcher:
    """Coalesces one verifier's requests across concurrent jobs."""

    def __init__(self, verifier: Verifier, cache: ScoreCache | None = None, executor: Executor | None = None,
                 max_concurrency: int = 1) -> None:
        self.verifier = verifier
        self.cache = cache
        self.max_concurrency = max_concurrency
        self._own_executor = executor is None
        self.executor = executor or ThreadPoolExecutor(max_workers=max_concurrency,
                                                        thread_name_prefix=f"verifier-{verifier.name}")
        self.stats = BatcherStats()
        self._queue: asyncio.Queue[_Entry] | None = None
        self._pending: dict[str, _Entry] = {}
        self._collector: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._slots: asyncio.Semaphore | None = None

    def _ensure_started(self) -> asyncio.Queue[_Entry]:
        if self._queue is None or self._collector is None or self._collector.done():
            self._queue = asyncio.Queue()
            self._slots = asyncio.Semaphore(self.max_concurrency)
            self._collector = asyncio.get_running_loop().create_task(
                self._collect(), name=f"batcher-{self.verifier.name}")
        return self._queue

    @property
    def cost_s(self) -> float:
        """Seconds per candidate on this worker: measured when a batch has run, else the verifier's prior."""
        measured = self.stats.seconds_per_candidate
        return measured if measured is not None else self.verifier.expected_cost_s

    async def submit(self, items: Sequence[Item]) -> list[Outcome]:
        """Score items (in order). Never raises for verifier failures: they come back as error outcomes."""
        queue = self._ensure_started()
        loop = asyncio.get_running_loop()
        keys = [score_cache_key(self.verifier, item) for item in items]
        self.stats.items += len(items)
        hits: dict[str, Score] = {}
        if self.cache is not None:
            hits = await self.cache.get_many(set(keys) - set(self._pending))
        futures: list[asyncio.Future[Outcome]] = []
        for key, item in zip(keys, items, strict=True):
            future: asyncio.Future[Outcome] = loop.create_future()
            if key in hits:
                self.stats.cache_hits += 1
                future.set_result(Outcome(hits[key], cached=True))
            elif key in self._pending:
                self.stats.deduped += 1
                self._pending[key].waiters.append(future)
            else:
                entry = _Entry(key, item, [future])
                self._pending[key] = entry
                queue.put_nowait(entry)
            futures.append(future)
        try:
            return list(await asyncio.gather(*futures))
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            raise

    async def _collect(self) -> None:
        assert self._queue is not None and self._slots is not None
        queue, slots = self._queue, self._slots
        loop = asyncio.get_running_loop()
        while True:
            await slots.acquire()
            try:
                batch = [await queue.get()]
                deadline = loop.time() + self.verifier.max_wait_ms / 1000.0
                while len(batch) < self.verifier.max_batch_size:
                    if not queue.empty():
                        batch.append(queue.get_nowait())
                        continue
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        batch.append(await asyncio.wait_for(queue.get(), remaining))
                    except TimeoutError:
                        break
            except BaseException:
                slots.release()
                raise
            live = [e for e in batch if e.live()]
            for entry in batch:
                if not entry.live():
                    self.stats.dropped_cancelled += 1
                    self._pending.pop(entry.key, None)
            if not live:
                slots.release()
                continue
            task = loop.create_task(self._execute(live))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            self._cancel_when_abandoned(task, live)

    def _cancel_when_abandoned(self, task: asyncio.Task[None], batch: list[_Entry]) -> None:
        """Cancel the running batch once every caller of every item in it has gone (their jobs were cancelled)."""

        def check(waiter: asyncio.Future[Outcome]) -> None:
            if not waiter.cancelled() or task.done():
                return
            if all(w.cancelled() for entry in batch for w in entry.waiters):
                self.stats.cancelled_batches += 1
                task.cancel("abandoned")

        for entry in batch:
            for waiter in entry.waiters:
                waiter.add_done_callback(check)

    async def _execute(self, batch: list[_Entry]) -> None:
        assert self._slots is not None
        try:
            self.stats.batches += 1
            self.stats.batched_items += len(batch)
            outcomes = await self._score(batch)
            if any(o.error and o.error.startswith("timeout") for o in outcomes):
                for entry, outcome in zip(batch, outcomes, strict=True):
                    entry.resolve(outcome)  # answer the callers now: the timeout bounds their wait
                # a worker thread cannot be killed: hold this slot until the timed-out call really ends,
                # so the next batch's timeout does not count time spent queueing behind it
                await asyncio.get_running_loop().run_in_executor(self.executor, _noop)
            elif len(batch) > 1 and any(o.error for o in outcomes):
                # failure isolation: find which items fail on their own
                outcomes = [(await self._score([entry]))[0] for entry in batch]
            fresh: dict[str, Score] = {}
            for entry, outcome in zip(batch, outcomes, strict=True):
                entry.resolve(outcome)
                if outcome.error is None and outcome.value is not None:
                    fresh[entry.key] = outcome.value
            if self.cache is not None and fresh:
                await self.cache.set_many(fresh)
        except asyncio.CancelledError:
            # every caller left (or the worker closes): a thread cannot be killed, so keep the slot until the
            # verifier's call really returns, as after a timeout
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):  # RuntimeError: executor shut down
                await asyncio.get_running_loop().run_in_executor(self.executor, _noop)
            raise
        except Exception as exc:  # noqa: BLE001 - never leave callers hanging
            log.exception("batch execution failed for %s", self.verifier.name)
            for entry in batch:
                entry.resolve(Outcome(None, f"{type(exc).__name__}: {exc}"))
        finally:
            for entry in batch:
                if self._pending.get(entry.key) is entry:
                    del self._pending[entry.key]
            self._slots.release()

    async def _score(self, batch: list[_Entry]) -> list[Outcome]:
        items = [e.item for e in batch]
        timeout = self.verifier.timeout_s
        start = time.perf_counter()
        try:
            values = await asyncio.wait_for(self.verifier.score(items, self.executor), timeout)
            if len(values) != len(items):
                raise ValueError(f"{self.verifier.name} returned {len(values)} scores for {len(items)} items")
            checked = [_check(self.verifier, item, value) for item, value in zip(items, values, strict=True)]
            if not any(o.error for o in checked):
                self.stats.observe_cost(time.perf_counter() - start, sum(_candidates(item) for item in items))
            return checked
        except TimeoutError:
            self.stats.timeouts += 1
            message = f"timeout after {timeout:g}s (batch of {len(items)}, {time.perf_counter() - start:.1f}s)"
            return [Outcome(None, message) for _ in items]
        except Exception as exc:  # noqa: BLE001 - verifier failures become NaN + error, never job failures
            self.stats.errors += 1
            return [Outcome(None, f"{type(exc).__name__}: {exc}"[:500]) for _ in items]

    async def close(self) -> None:
        if self._collector is not None:
            self._collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._collector
        for task in list(self._running):
            task.cancel()
        for entry in self._pending.values():
            entry.resolve(Outcome(None, "worker shutting down"))
        self._pending.clear()
        if self._own_executor:
            self.executor.shutdown(wait=False, cancel_futures=True)
