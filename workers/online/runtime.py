"""``OnlineRuntime``: the one object a gateway or worker holds for online learning, in either mode.

``observe_later`` after every verified request (append the scores, record every aggregator's
selection for feedback, on the traffic thread), ``model`` for the version to serve (swapped atomically: one reference),
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
from models.online import ModelStore, OnlineLearner, Pointer, ScoreRecord
from models.online.feedback import FeedbackResult, shadow_selections
from models.weaver import WeaverModel
from workers.contract import Job, JobResult
from workers.online.backends import EmbeddedRefits, LogEntry, RedisRefits, RefitBackend
from workers.online.metrics import OnlineMetrics
from workers.online.settings import OnlineSettings
from workers.online.traffic import TrafficLog

log = logging.getLogger("weaver.online")

ModelListener = Callable[[WeaverModel], None]


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


class OnlineRuntime:
    """Online learning for one gateway or worker process, whatever the mode: the served model (swapped
    atomically), the store-derived gauges, and a ``RefitBackend`` that keeps the log, the versions and the
    refits (``EmbeddedRefits`` in this process, ``RedisRefits`` shared by every replica)."""

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
        self.follow_lock = threading.RLock()
        self._swapped = False  # a model was swapped in and its gauges are not yet set
        self.backend: RefitBackend = (RedisRefits(self) if self.settings.mode == "redis" else EmbeddedRefits(self))
        self.store: ModelStore = self.backend.store
        self.accuracy: Any = self.backend.accuracy
        # observations off the request's path, in batches; feedback in order after them
        self.traffic: TrafficLog[tuple[Job | None, JobResult]] = TrafficLog(self.observe_results)

    @property
    def learner(self) -> OnlineLearner | None:
        """The in-process learner (embedded mode), for diagnostics and tests."""
        return getattr(self.backend, "learner", None)

    # -- lifecycle ------------------------------------------------------------------------------
    def attach(self, worker: Any) -> None:
        """Make ``worker`` serve what this runtime follows: every published version, and before the
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
        self.backend.start()

    def close(self) -> None:
        self.traffic.close()  # log what was accepted before the backend stops
        self.backend.close()

    # -- following the store ----------------------------------------------------------------------
    def swap(self, model: WeaverModel, pointer: Pointer | None) -> None:
        """Serve ``model`` (called by the backend when the store's pointer names a new version)."""
        with self.follow_lock:
            self.holder.swap(model, pointer.source if pointer is not None else "seed")
            self._swapped = True

    def apply(self, pointer: Pointer) -> None:
        """Every pointer change: the holder's source and every store-derived model gauge."""
        with self.follow_lock:
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
        self.backend.sync()
        return pointer

    def unpin(self) -> Pointer | None:
        pointer = self.store.unpin()
        self.backend.sync()
        return pointer

    # -- traffic ----------------------------------------------------------------------------------
    def observe(self, record: ScoreRecord, answers: tuple[str | None, ...] | None = None,
                served: tuple[str, int] | None = None) -> dict[str, int]:
        """Log one verified query and remember every aggregator's selection (plus ``served``: the aggregator
        that answered and its pick, when it is not one of them); returns the selections."""
        record, selections = self._entry(record, answers, served)
        self.backend.append([(record, selections)])
        return selections

    def observe_later(self, job: Job | None, result: JobResult) -> bool:
        """Log a finished job on the traffic thread; returns at once (False: dropped, the backlog is full)."""
        return self.traffic.observe((job, result))

    def observe_results(self, finished: list[tuple[Job | None, JobResult]]) -> None:
        """Log a batch of finished jobs in one write (the traffic thread's sink)."""
        entries = self._entries(finished)
        if entries:
            self.backend.append(entries)

    def _entries(self, finished: list[tuple[Job | None, JobResult]]) -> list[LogEntry]:
        entries = []
        for job, result in finished:
            record = record_from_result(job, result, self.settings.log_prompts)
            if record is None:
                continue
            by_index = sorted(result.candidates, key=lambda c: c.index)
            answers = tuple(c.answer for c in by_index) if len(by_index) == record.matrix.shape[0] else None
            served = ((result.aggregator, result.selected_index)
                      if result.selected_index is not None and result.aggregator else None)
            entries.append(self._entry(record, answers, served))
        return entries

    def _entry(self, record: ScoreRecord, answers: tuple[str | None, ...] | None,
               served: tuple[str, int] | None) -> LogEntry:
        if record.prompt is not None and not self.settings.log_prompts:
            record = ScoreRecord(record.matrix, record.verifier_names, record.verifier_versions, record.task,
                                 record.request_id, record.timestamp, None)
        query = QueryScores(record.matrix, record.verifier_names, answers, record.task)
        selections = shadow_selections(query, self.holder.model)
        if served is not None and served[0] not in selections:
            selections[served[0]] = served[1]
        return record, selections  # the backends keep selections only for records with a request id

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
