"""The one object a gateway or worker holds for online learning, in either mode.

``observe_result`` after every verified request (append the scores, record every aggregator's
selection for feedback), ``model`` for the version to serve (swapped atomically: one reference),
``feedback`` for labels (evaluation only), ``status`` for diagnostics.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from models.aggregators import QueryScores
from models.online import DirectoryModelStore, MemoryModelStore, ModelStore, OnlineLearner, Pointer, ScoreRecord
from models.online.feedback import FeedbackResult, OnlineAccuracy, shadow_selections
from models.weaver import WeaverModel
from workers.contract import Job, JobResult
from workers.online.metrics import OnlineMetrics
from workers.online.settings import OnlineSettings

log = logging.getLogger("weaver.online")

ModelListener = Callable[[WeaverModel], None]
FOLLOW_S = 0.2  # embedded mode: how often the store's pointer is re-read (a rollback lands within this)


class ModelHolder:
    """The served model: a single reference, replaced only by a fully built model."""

    def __init__(self, model: WeaverModel | None = None, source: str = "cold_start") -> None:
        self.model = model
        self.source = source
        self.swapped_at: float | None = None
        self.listeners: list[ModelListener] = []

    def swap(self, model: WeaverModel, source: str = "refit") -> None:
        self.model = model  # one reference assignment: atomic for every reader
        self.source = source
        self.swapped_at = time.time()
        for listener in self.listeners:
            listener(model)


def record_from_result(job: Job | None, result: JobResult, log_prompts: bool = False) -> ScoreRecord | None:
    """The score-log record of a finished job (None when it has no scores to learn from)."""
    if result.status != "ok" or not result.scores or not result.verifier_names:
        return None
    matrix = np.array([[np.nan if v is None else float(v) for v in row] for row in result.scores], dtype=float)
    if matrix.ndim != 2 or matrix.shape[1] != len(result.verifier_names) or not np.isfinite(matrix).any():
        return None
    versions = {d.name: d.version for d in result.diagnostics}
    return ScoreRecord(
        matrix=matrix,
        verifier_names=tuple(result.verifier_names),
        verifier_versions=tuple(versions.get(name, "") for name in result.verifier_names),
        task=job.task if job is not None else None,
        request_id=result.id,
        prompt=job.prompt if job is not None and log_prompts else None,
    )


class OnlineLearning:
    def __init__(self, settings: OnlineSettings | None = None, replica_id: str | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        self.settings = settings or OnlineSettings()
        self.config = self.settings.online_config()
        self.replica_id = replica_id or f"replica-{uuid.uuid4().hex[:8]}"
        self.metrics = (OnlineMetrics(registry, self.settings.drift_alarm) if registry is not None
                        else OnlineMetrics.shared(self.settings.drift_alarm))
        prior = self.config.cold_start.load()
        self.holder = ModelHolder(prior, "cold_start")
        self.pointer: Pointer | None = None  # the store's pointer this replica last applied
        self._follow_lock = threading.RLock()
        self._swapped = False  # a model was swapped in and its gauges are not yet set
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self.learner: OnlineLearner | None = None
        self.accuracy: Any
        if self.settings.mode == "redis":
            import redis

            from workers.online.coordinator import DistributedRefitter
            from workers.online.feedback import RedisOnlineAccuracy
            from workers.online.keys import OnlineKeys
            from workers.online.redis_log import RedisScoreLog
            from workers.online.store import RedisModelStore
            from workers.online.subscriber import ModelSubscriber

            self.client = redis.Redis.from_url(self.settings.redis_url)
            keys = OnlineKeys(self.settings.prefix)
            self.score_log = RedisScoreLog(self.client, keys, self.settings.stream_maxlen)
            self.store: ModelStore = RedisModelStore(self.client, keys, self.settings.keep_versions)
            self.subscriber = ModelSubscriber(self.client, keys, lambda m: self._swap(m, self.subscriber.pointer),
                                              poll_s=max(self.settings.poll_s, 1.0), name=self.replica_id,
                                              on_pointer=self._apply, on_poll=self.refresh_accuracy)
            self.refitter = DistributedRefitter(self.client, keys, self.config, self.replica_id,
                                                self.settings.lock_lease_ms, self.settings.poll_s, self.metrics)
            self.accuracy = RedisOnlineAccuracy(self.client, keys, self.settings.feedback_ttl_s)
        else:
            store: ModelStore = (DirectoryModelStore(self.settings.model_dir, self.settings.keep_versions)
                                 if self.settings.model_dir else MemoryModelStore(self.settings.keep_versions))
            self.store = store
            self.learner = OnlineLearner(self.config, store)
            self.accuracy = OnlineAccuracy()
            self.follow()

    # -- lifecycle ------------------------------------------------------------------------------
    def attach(self, worker: Any) -> None:
        """Make ``worker`` serve what this learner follows: every published version, and before the
        first one the ``online.cold_start`` prior (which overrides the worker's ``aggregation.cold_start``,
        so responses and /v1/online say the same)."""
        aggregation = getattr(getattr(worker, "config", None), "aggregation", None)
        if self.settings.cold_start in ("mean", "majority") and hasattr(worker, "set_cold_start"):
            configured = getattr(aggregation, "cold_start", None)
            if aggregation is not None and "cold_start" in aggregation.model_fields_set \
                    and configured != self.settings.cold_start:
                log.warning("online.cold_start %s overrides the worker's aggregation.cold_start %s (one setting: "
                            "online.cold_start while online learning is on)", self.settings.cold_start, configured)
            worker.set_cold_start(self.settings.cold_start)
        shipped = getattr(aggregation, "weaver_model", None)
        if shipped and self.holder.source == "cold_start" and self.holder.model is None:
            log.warning("the worker's aggregation.weaver_model %s serves until the first online version; set "
                        "online.cold_start: model and online.cold_start_model so every replica reports it", shipped)
        self.holder.listeners.insert(0, worker.set_weaver_model)  # swap first, then report it
        if self.holder.model is not None:
            worker.set_weaver_model(self.holder.model)

    def start(self) -> None:
        if self.settings.mode == "redis":
            self.subscriber.start()
            self.refitter.start()
            return
        for name, target in (("refit", self._embedded_loop), ("follow", self._follow_loop)):
            thread = threading.Thread(target=target, name=f"weaver-online-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self.settings.mode == "redis":
            self.refitter.stop()
            self.subscriber.stop()
            self.client.close()
        for thread in self._threads:
            thread.join(timeout=10)

    def _embedded_loop(self) -> None:
        assert self.learner is not None
        while not self._stop.is_set():
            self._wake.wait(timeout=min(self.settings.poll_s * 10, self.settings.refit_every_seconds))
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.refit_if_due()
            except Exception:  # noqa: BLE001 - keep serving the previous version
                log.exception("embedded refit failed")

    def _follow_loop(self) -> None:
        """Embedded mode: follow the store's pointer, so `weaver models rollback --store DIR` (another
        process) takes effect here within a second, without a restart."""
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
        """Embedded mode: run one refit now if the policy says so (the loop calls this)."""
        assert self.learner is not None
        outcome = self.learner.maybe_refit()
        if outcome is None:
            return
        self.metrics.refitted(outcome)
        self.follow()
        if outcome.published:
            log.info("embedded refit published model %s on %d queries", outcome.model.version, outcome.n_queries)
        elif outcome.outcome == "held":
            log.info("embedded refit on %d queries passed its guardrails but %s", outcome.n_queries,
                     outcome.reasons[0])
        else:
            log.warning("embedded refit rejected: %s", "; ".join(outcome.reasons))

    # -- following the store ----------------------------------------------------------------------
    def follow(self) -> Pointer | None:
        """Embedded mode: apply the store's pointer if it moved (a refit here, or a rollback/unpin by
        `weaver models` in another process)."""
        assert self.learner is not None
        with self._follow_lock:
            pointer = self.learner.sync()
            if pointer is not None and pointer != self.pointer:
                model = self.learner.current
                if model is not None and (self.holder.model is None or self.holder.model.version != model.version
                                          or self.holder.source == "cold_start"):
                    self._swap(model, pointer)
                self._apply(pointer)
            return pointer

    def _swap(self, model: WeaverModel, pointer: Pointer | None) -> None:
        with self._follow_lock:
            self.holder.swap(model, pointer.source if pointer is not None else "seed")
            self._swapped = True

    def _apply(self, pointer: Pointer) -> None:
        """Every pointer change: the holder's source and every store-derived model gauge."""
        with self._follow_lock:
            self.pointer = pointer
            self.holder.source = pointer.source
            model = self.holder.model
            if model is None:
                return
            swapped, self._swapped = self._swapped, False
            try:
                self.metrics.follow(model, pointer, self.store.info(pointer.version), swapped)
            except Exception:  # noqa: BLE001 - metrics must never stop a swap
                log.exception("could not update the model gauges")
            if swapped:
                log.info("replica %s serves v%d %s (%s%s)", self.replica_id, pointer.sequence, pointer.version,
                         pointer.source, ", pinned" if pointer.pinned else "")

    def refresh_accuracy(self) -> None:
        """The online accuracy gauges from the shared feedback book (every replica, every poll)."""
        try:
            self.metrics.accuracy(self.accuracy.summary())
        except Exception:  # noqa: BLE001 - a poll must not die on a gauge
            log.exception("could not refresh the online accuracy gauges")

    # -- operator actions (in-process; `weaver models` does the same from outside) -----------------
    def rollback(self, version: str) -> Pointer:
        pointer = self.store.rollback(version)
        self._sync_now()
        return pointer

    def unpin(self) -> Pointer | None:
        pointer = self.store.unpin()
        self._sync_now()
        return pointer

    def _sync_now(self) -> None:
        if self.settings.mode == "redis":
            self.subscriber.sync()
        else:
            self.follow()

    # -- traffic ----------------------------------------------------------------------------------
    def observe(self, record: ScoreRecord, answers: tuple[str | None, ...] | None = None) -> dict[str, int]:
        """Log one verified query and remember every aggregator's selection; returns the selections."""
        if self.learner is not None:
            self.learner.observe(record)
            if self.learner.due():
                self._wake.set()
        else:
            if record.prompt is not None and not self.settings.log_prompts:
                record = ScoreRecord(record.matrix, record.verifier_names, record.verifier_versions, record.task,
                                     record.request_id, record.timestamp, None)
            self.score_log.append(record)
        query = QueryScores(record.matrix, record.verifier_names, answers, record.task)
        selections = shadow_selections(query, self.holder.model)
        if record.request_id:
            self.accuracy.record(record.request_id, selections, record.matrix.shape[0])
        return selections

    def observe_result(self, job: Job | None, result: JobResult) -> dict[str, int] | None:
        record = record_from_result(job, result, self.settings.log_prompts)
        if record is None:
            return None
        by_index = sorted(result.candidates, key=lambda c: c.index)
        answers = tuple(c.answer for c in by_index) if len(by_index) == record.matrix.shape[0] else None
        selections = self.observe(record, answers)
        if result.selected_index is not None and result.aggregator and result.aggregator not in selections:
            selections[result.aggregator] = result.selected_index
            self.accuracy.record(record.request_id, selections, record.matrix.shape[0])
        return selections

    def feedback(self, request_id: str, candidate_index: int, correct: bool) -> FeedbackResult:
        """Store a label for evaluation. The refit path never reads it."""
        result = self.accuracy.feedback(request_id, candidate_index, correct)
        self.refresh_accuracy()
        return result

    # -- diagnostics ------------------------------------------------------------------------------
    def note(self) -> str:
        model = self.holder.model
        if model is None or self.holder.source == "cold_start":
            return self.config.cold_start.describe()
        pointer = self.pointer
        if pointer is None:
            return f"online model {model.version}"
        pin = f", pinned (pin_policy {self.settings.pin_policy})" if pointer.pinned else ""
        return f"online model {model.version} (v{pointer.sequence}, {pointer.source}{pin})"

    def status(self) -> dict[str, Any]:
        model = self.holder.model
        pointer = self.pointer
        return {
            "mode": self.settings.mode,
            "replica": self.replica_id,
            "serving": model.version if model is not None else None,
            "sequence": pointer.sequence if pointer is not None else None,
            "source": self.holder.source,
            "pinned": bool(pointer is not None and pointer.pinned),
            "pin_policy": self.settings.pin_policy,
            "note": self.note(),
            "swapped_at": self.holder.swapped_at,
            "accuracy": {k: {"hits": h, "labelled": n, "accuracy": (h / n if n else None)}
                         for k, (h, n) in self.accuracy.summary().items()},
        }
