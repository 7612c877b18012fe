"""The embedded learner: ring + refit policy + guardrails + version store, and the cold-start prior."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from models.online.records import ScoreRecord, ScoreRing
from models.online.refit import GuardrailConfig, RefitOutcome, RefitPolicy, refit
from models.online.store import MemoryModelStore, ModelStore, PinPolicy, Pointer, rollback, version_info
from models.weaver import WeaverConfig, WeaverModel

# -- cold start --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColdStart:
    """What serves before the first accepted fit: a shipped model file, or a label-free baseline."""

    prior: Literal["model", "mean", "majority"] = "mean"
    model_path: str | None = None

    def load(self) -> WeaverModel | None:
        if self.prior != "model":
            return None
        if not self.model_path:
            raise ValueError("cold start prior 'model' needs model_path")
        return WeaverModel.load(self.model_path)

    def describe(self) -> str:
        if self.prior == "model":
            return f"cold start: shipped model {self.model_path} (no online fit yet)"
        return f"cold start: {self.prior} aggregation (no online fit yet)"


# -- the learner: ring + policy + guardrails + store --------------------------------------------


@dataclass
class OnlineConfig:
    policy: RefitPolicy = field(default_factory=RefitPolicy)
    guardrails: GuardrailConfig = field(default_factory=GuardrailConfig)
    weaver: WeaverConfig = field(default_factory=WeaverConfig)
    cold_start: ColdStart = field(default_factory=ColdStart)
    ring_capacity: int = 10000
    log_prompts: bool = False
    drift_alarm: float = 0.25  # a drift distance above this raises weaver_model_drift_alarm
    pin_policy: PinPolicy = "hold"  # what a rollback's pin lets through (``pin_allows``)
    keep_outcomes: int = 256  # refit outcomes kept in ``OnlineLearner.history`` (oldest dropped)


class OnlineLearner:
    """The embedded refit state machine. Thread-safe; the caller decides which thread runs ``refit``.

    ``observe`` is cheap (append to the ring); ``maybe_refit`` fits when the policy says so and, when
    the guardrails pass and no pin holds, stores the new version and makes it current. The store's
    pointer is the truth: ``sync`` follows it when another process (``weaver models rollback``) moved it.
    """

    def __init__(self, config: OnlineConfig | None = None, store: ModelStore | None = None) -> None:
        self.config = config or OnlineConfig()
        self.ring = ScoreRing(self.config.ring_capacity)
        self.store: ModelStore = store or MemoryModelStore()
        self._lock = threading.Lock()
        self._fit_lock = threading.Lock()
        self._seen_at_last_fit = 0
        self._last_fit_time = time.time()
        self.current: WeaverModel | None = None
        self.pointer: Pointer | None = None
        if self.sync() is None and (prior := self.config.cold_start.load()) is not None:
            self.current = prior
        self.history: deque[RefitOutcome] = deque(maxlen=self.config.keep_outcomes)

    def sync(self) -> Pointer | None:
        """Read the store's pointer and load its version if it is not the one held; returns the pointer."""
        pointer = self.store.pointer()
        if pointer is None:
            return None
        with self._lock:
            held = self.current.version if self.current is not None else None
        model = self.store.get(pointer.version) if pointer.version != held else None
        with self._lock:
            if model is not None:
                self.current = model
            self.pointer = pointer
        return pointer

    def observe(self, record: ScoreRecord) -> None:
        if record.prompt is not None and not self.config.log_prompts:
            record = ScoreRecord(record.matrix, record.verifier_names, record.verifier_versions, record.task,
                                 record.request_id, record.timestamp, None)
        self.ring.append(record)

    def due(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self.config.policy.due(self.ring.total - self._seen_at_last_fit, now - self._last_fit_time)

    def refit_now(self) -> RefitOutcome | None:
        """Fit on the window now (None when the window is empty or another refit is running)."""
        if not self._fit_lock.acquire(blocking=False):
            return None
        try:
            seen = self.ring.total
            records = self.ring.window(self.config.policy.window)
            if not records:
                return None
            self.sync()  # judge against what is served now (an operator may have rolled back)
            outcome = refit(records, self.current, self.config.weaver, self.config.guardrails,
                            self.config.policy.by_task)
            if outcome.published:
                info = version_info(outcome.model, 0, "refit", outcome.n_queries, outcome.drift.distance,
                                    task_drift=outcome.task_drift)
                window_start = min(r.timestamp for r in records)
                if self.store.publish(outcome.model, info, self.config.pin_policy, window_start) is None:
                    pointer = self.store.pointer()
                    outcome = outcome.held(f"v{pointer.sequence if pointer else 0} pinned by a rollback "
                                           f"(pin_policy {self.config.pin_policy})")
                else:
                    with self._lock:
                        self.current = outcome.model
            with self._lock:
                self._seen_at_last_fit = seen
                self._last_fit_time = time.time()
                self.history.append(outcome)
            self.sync()
            return outcome
        finally:
            self._fit_lock.release()

    def maybe_refit(self, now: float | None = None) -> RefitOutcome | None:
        return self.refit_now() if self.due(now) else None

    def rollback(self, version: str) -> WeaverModel:
        rollback(self.store, version)
        self.sync()
        return self.store.get(version)
