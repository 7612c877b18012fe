"""Where online learning keeps its score log, its versions and its refits: one protocol, two backends.

``EmbeddedRefits`` keeps everything in this process (an in-memory ring, a refit thread, a version store in
memory or a directory that it re-reads, so an outside ``weaver models rollback --store DIR`` lands here).
``RedisRefits`` shares them through Redis (a capped stream, a leased refit lock, pub/sub publication), so
every gateway and worker replica sees the same versions. ``OnlineRuntime`` holds one and never asks which.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Protocol

from models.online import DirectoryModelStore, MemoryModelStore, ModelStore, OnlineLearner, Pointer, ScoreRecord
from models.online.feedback import OnlineAccuracy

if TYPE_CHECKING:
    from workers.online.runtime import OnlineRuntime

log = logging.getLogger("weaver.online")
LogEntry = tuple[ScoreRecord, dict[str, int]]  # a verified query and every aggregator's selection
FOLLOW_S = 0.2  # embedded mode: how often the store's pointer is re-read (a rollback lands within this)


class RefitBackend(Protocol):
    store: ModelStore
    accuracy: Any  # OnlineAccuracy here, RedisOnlineAccuracy shared by every replica

    def start(self) -> None: ...

    def close(self) -> None: ...

    def append(self, entries: list[LogEntry]) -> None:
        """Log verified queries' scores (never a label) and, for records with a request id, each
        aggregator's selection, for feedback about that request."""

    def sync(self) -> None:
        """Apply the store's pointer now (after an in-process rollback or unpin)."""


class EmbeddedRefits:
    """One process: the ring, the refit loop and the pointer-following loop run on threads of this process."""

    def __init__(self, runtime: OnlineRuntime) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.store: ModelStore = (DirectoryModelStore(settings.model_dir, settings.keep_versions)
                                  if settings.model_dir else MemoryModelStore(settings.keep_versions))
        self.learner = OnlineLearner(runtime.config, self.store)
        self.accuracy = OnlineAccuracy(settings.feedback_capacity)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self.follow()

    def start(self) -> None:
        for name, target in (("refit", self._refit_loop), ("follow", self._follow_loop)):
            thread = threading.Thread(target=target, name=f"weaver-online-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def append(self, entries: list[LogEntry]) -> None:
        for record, selections in entries:
            self.learner.observe(record)
            if record.request_id:
                self.accuracy.record(record.request_id, selections, record.matrix.shape[0])
        if self.learner.due():
            self._wake.set()

    def sync(self) -> None:
        self.follow()

    def _refit_loop(self) -> None:
        settings = self.runtime.settings
        while not self._stop.is_set():
            self._wake.wait(timeout=min(settings.poll_s * 10, settings.refit_every_seconds))
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.refit_if_due()
            except Exception:  # noqa: BLE001 - keep serving the previous version
                log.exception("embedded refit failed")

    def _follow_loop(self) -> None:
        """Follow the store's pointer, so `weaver models rollback --store DIR` (another process) takes effect
        here within a second, without a restart."""
        failing = False
        while not self._stop.wait(FOLLOW_S):
            try:
                self.follow()
                failing = False
            except Exception:  # noqa: BLE001 - a bad artifact or a half-copied directory: keep serving
                if not failing:
                    log.exception("embedded replica could not follow the version store")
                failing = True

    def refit_if_due(self) -> None:
        """Run one refit now if the policy says so (the refit loop calls this)."""
        outcome = self.learner.maybe_refit()
        if outcome is None:
            return
        self.runtime.metrics.refitted(outcome)
        self.follow()
        if outcome.published:
            log.info("embedded refit published model %s on %d queries", outcome.model.version, outcome.n_queries)
        elif outcome.outcome == "held":
            log.info("embedded refit on %d queries passed its guardrails but %s", outcome.n_queries,
                     outcome.reasons[0])
        else:
            log.warning("embedded refit rejected: %s", "; ".join(outcome.reasons))

    def follow(self) -> Pointer | None:
        """Apply the store's pointer if it moved (a refit here, or a rollback/unpin by `weaver models` in
        another process)."""
        runtime = self.runtime
        with runtime.follow_lock:
            pointer = self.learner.sync()
            if pointer is not None and pointer != runtime.pointer:
                model = self.learner.current
                held = runtime.holder
                if model is not None and (held.model is None or held.model.version != model.version
                                          or held.source == "cold_start"):
                    runtime.swap(model, pointer)
                runtime.apply(pointer)
            return pointer


class RedisRefits:
    """Every replica shares one Redis: the score log is a capped stream, one replica refits at a time under a
    leased lock, and publication is announced on a channel every replica follows."""

    def __init__(self, runtime: OnlineRuntime) -> None:
        import redis

        from workers.online.coordinator import DistributedRefitter
        from workers.online.feedback import RedisOnlineAccuracy
        from workers.online.keys import OnlineKeys
        from workers.online.redis_log import RedisScoreLog
        from workers.online.store import RedisModelStore
        from workers.online.subscriber import ModelSubscriber

        settings = runtime.settings
        self.client = redis.Redis.from_url(settings.redis_url)
        keys = OnlineKeys(settings.prefix)
        self.score_log = RedisScoreLog(self.client, keys, settings.stream_maxlen)
        self.store: ModelStore = RedisModelStore(self.client, keys, settings.keep_versions)
        self.subscriber = ModelSubscriber(self.client, keys, lambda m: runtime.swap(m, self.subscriber.pointer),
                                          poll_s=max(settings.poll_s, 1.0), name=runtime.replica_id,
                                          on_pointer=runtime.apply, on_poll=runtime.refresh_accuracy)
        self.refitter = DistributedRefitter(self.client, keys, runtime.config, runtime.replica_id,
                                            settings.lock_lease_ms, settings.poll_s, runtime.metrics)
        self.accuracy = RedisOnlineAccuracy(self.client, keys, settings.feedback_ttl_s)

    def start(self) -> None:
        self.subscriber.start()
        self.refitter.start()

    def close(self) -> None:
        self.refitter.stop()
        self.subscriber.stop()
        self.client.close()

    def append(self, entries: list[LogEntry]) -> None:
        """Every record and its selections in one round trip."""
        pipe = self.client.pipeline(transaction=True)
        for record, selections in entries:
            self.score_log.queue_append(pipe, record)
            if record.request_id:
                self.accuracy.queue_record(pipe, record.request_id, selections, record.matrix.shape[0])
        pipe.execute()

    def sync(self) -> None:
        self.subscriber.sync()
