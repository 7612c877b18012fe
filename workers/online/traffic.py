"""Log verified traffic for online learning without making the request wait for it.

Observing a finished job (appending its scores to the log, recording every aggregator's selection for
feedback) is CPU work and, in Redis mode, a network write. Awaiting it in a thread put a thread hop on
every answer for work the client does not need, and a thread per answer contends with the event loop
for the GIL. ``TrafficLog`` hands observations to one dedicated thread and returns at once; the thread
logs whatever queued up while it was busy as one batch (one Redis round trip). It does not wait for a
burst to gather: its CPU would then arrive in larger bursts that hold the GIL while requests wait.

One thread keeps the order: feedback about a request runs on the same thread, after that request's
observation, so a client that sends feedback right after its answer is never told "unknown request".
The backlog is bounded; past it observations are dropped and counted
(``weaver_online_observations_dropped_total``), never queued without limit. ``close`` logs what was
accepted.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from prometheus_client import Counter

log = logging.getLogger("weaver.online")
T = TypeVar("T")
R = TypeVar("R")

OBSERVATIONS_DROPPED = Counter(
    "weaver_online_observations_dropped_total",
    "Verified requests not logged for online learning because the observation backlog was full",
)


@dataclass
class _Call:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: Future[Any] = field(default_factory=Future)


_STOP = object()


class TrafficLog(Generic[T]):
    """A single ordered thread: observations (fire and forget, bounded, logged in batches through ``sink``)
    and the calls that must see them (``call``: feedback)."""

    def __init__(self, sink: Callable[[list[T]], object], *, max_pending: int = 1024, max_batch: int = 256) -> None:
        self.sink = sink
        self.max_batch = max_batch
        self._slots = threading.BoundedSemaphore(max_pending)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="weaver-online-traffic", daemon=True)
        self._thread.start()

    def observe(self, item: T) -> bool:
        """Log ``item`` soon; returns at once. False (and counted) when the backlog is full or the log closed."""
        if self._closed or not self._slots.acquire(blocking=False):
            OBSERVATIONS_DROPPED.inc()
            return False
        self._queue.put(item)
        return True

    async def call(self, fn: Callable[..., R], *args: Any) -> R:
        """``fn(*args)`` on the traffic thread, after every observation accepted before it (once closed: in
        a thread of its own, since nothing is left to wait for)."""
        if self._closed:
            return await asyncio.to_thread(fn, *args)
        request = _Call(fn, args)
        self._queue.put(request)
        return await asyncio.wrap_future(request.future)

    def close(self) -> None:
        """Stop accepting observations and log the accepted ones."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join()

    # -- the thread ---------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            items = [self._queue.get()]
            while len(items) < self.max_batch:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if not self._process(items):
                return

    def _process(self, items: list[Any]) -> bool:
        """Log runs of observations as batches, run calls between them in order; False after the stop mark."""
        batch: list[T] = []
        for item in items:
            if isinstance(item, _Call):
                self._flush(batch)
                batch = []
                self._run_call(item)
            elif item is _STOP:
                self._flush(batch)
                return False
            else:
                batch.append(item)
        self._flush(batch)
        return True

    def _flush(self, batch: list[T]) -> None:
        if not batch:
            return
        try:
            self.sink(batch)
        except Exception:  # noqa: BLE001 - learning must never take the thread down
            log.exception("could not log %d verified request(s) for online learning", len(batch))
        finally:
            for _ in batch:
                self._slots.release()

    @staticmethod
    def _run_call(request: _Call) -> None:
        if not request.future.set_running_or_notify_cancel():
            return
        try:
            request.future.set_result(request.fn(*request.args))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            request.future.set_exception(exc)
