"""Prometheus gauges and counters of online weak supervision (``weaver_`` prefix).

One ``OnlineMetrics`` per process and registry. The model gauges (version, sequence, source, pin,
drift per task, the served model's per-verifier rates) and the online accuracy gauges are derived
from the shared store on every replica (``follow`` on each pointer change, ``accuracy`` at each
poll), so every replica's scrape tells the same story. Only the refit counters and the last refit
duration are the refitting replica's own (sum them over replicas).
"""

from __future__ import annotations

import math

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from models.online import Pointer, RefitOutcome, VersionInfo, estimated_accuracies, positive_rates
from models.weaver import WeaverModel


class OnlineMetrics:
    """Gauges use multiprocess_mode="mostrecent": with PROMETHEUS_MULTIPROC_DIR the latest value wins."""

    _shared: OnlineMetrics | None = None

    @classmethod
    def shared(cls, drift_alarm: float = 0.25) -> OnlineMetrics:
        """The process-wide instance on the default registry (what /metrics exports)."""
        if cls._shared is None:
            cls._shared = cls(REGISTRY, drift_alarm)
        cls._shared.drift_alarm_threshold = drift_alarm
        cls._shared.drift_threshold.set(drift_alarm)
        return cls._shared

    def __init__(self, registry: CollectorRegistry | None = None, drift_alarm: float = 0.25) -> None:
        registry = REGISTRY if registry is None else registry
        self.drift_alarm_threshold = drift_alarm
        self.model_info = Gauge("weaver_model_version_info", "The label-model version this replica serves (1)",
                                ["version", "source"], registry=registry, multiprocess_mode="mostrecent")
        self.model_sequence = Gauge("weaver_model_version_sequence", "Sequence number of the served version",
                                    registry=registry, multiprocess_mode="mostrecent")
        self.pinned = Gauge("weaver_model_pinned", "1 while a rollback pins the served version (refits held)",
                            registry=registry, multiprocess_mode="mostrecent")
        self.estimated_accuracy = Gauge("weaver_model_verifier_estimated_accuracy",
                                        "Label-free estimated accuracy P(vote == correct) of each kept verifier",
                                        ["verifier", "task"], registry=registry, multiprocess_mode="mostrecent")
        self.positive_rate = Gauge("weaver_model_verifier_positive_rate",
                                   "Share of candidates each verifier voted correct over the last fit window",
                                   ["verifier", "task"], registry=registry, multiprocess_mode="mostrecent")
        self.drift_distance = Gauge("weaver_model_drift_distance",
                                    "Max change of any verifier's TPR/FPR between the served version and the "
                                    "one it replaced when it was fitted (task \"\": the global model)",
                                    ["task"], registry=registry, multiprocess_mode="mostrecent")
        self.drift_alarm = Gauge("weaver_model_drift_alarm",
                                 "1 when the served version's drift distance exceeds the configured threshold",
                                 ["task"], registry=registry, multiprocess_mode="mostrecent")
        self.drift_threshold = Gauge("weaver_model_drift_alarm_threshold", "The configured drift alarm threshold",
                                     registry=registry, multiprocess_mode="mostrecent")
        self.drift_threshold.set(drift_alarm)
        self.refits = Counter("weaver_model_refits_total",
                              "Refits this replica ran, by outcome (published, rejected, held) and reason",
                              ["outcome", "reason"], registry=registry)
        self.refit_seconds = Gauge("weaver_model_refit_last_seconds", "Duration of the last refit",
                                   registry=registry, multiprocess_mode="mostrecent")
        self.swapped_at = Gauge("weaver_model_swap_timestamp_seconds",
                                "Unix time this replica last swapped its label model", registry=registry,
                                multiprocess_mode="mostrecent")
        self.cold_start = Gauge("weaver_model_cold_start", "1 while no fitted model is served (cold-start prior)",
                                registry=registry, multiprocess_mode="mostrecent")
        self.cold_start.set(1)
        self.online_accuracy = Gauge("weaver_online_selection_accuracy",
                                     "Selection accuracy of each aggregator on traffic labelled via /v1/feedback",
                                     ["aggregator"], registry=registry, multiprocess_mode="mostrecent")
        self.online_labelled = Gauge("weaver_online_labelled_selections",
                                     "Selections of each aggregator whose correctness feedback told",
                                     ["aggregator"], registry=registry, multiprocess_mode="mostrecent")

    def follow(self, model: WeaverModel, pointer: Pointer | None, info: VersionInfo | None,
               swapped: bool = True) -> None:
        """The store's pointer says ``model`` is served (``swapped``: this replica just loaded it)."""
        self.model_info.clear()
        self.model_info.labels(version=model.version, source=pointer.source if pointer else "seed").set(1)
        self.model_sequence.set(pointer.sequence if pointer else 0)
        self.pinned.set(float(bool(pointer and pointer.pinned)))
        self.cold_start.set(0)
        if swapped:
            self.swapped_at.set_to_current_time()
            self.estimated_accuracy.clear()
            self.positive_rate.clear()
            for task, sub in [("", model), *sorted(model.by_task.items())]:
                for name, value in estimated_accuracies(sub).items():
                    self.estimated_accuracy.labels(verifier=name, task=task).set(value)
                for name, value in positive_rates(sub).items():
                    self.positive_rate.labels(verifier=name, task=task).set(value)
        distances: dict[str, float | None] = {"": info.drift if info else None}
        distances.update(info.task_drift if info else {})
        self.drift_distance.clear()
        self.drift_alarm.clear()
        for task in ["", *sorted(model.by_task)]:
            distance = distances.get(task)
            if distance is not None and not math.isnan(distance):
                self.drift_distance.labels(task=task).set(distance)
            alarm = distance is not None and distance > self.drift_alarm_threshold
            self.drift_alarm.labels(task=task).set(float(alarm))

    def refitted(self, outcome: RefitOutcome) -> None:
        """This replica ran a refit (published, rejected by a guardrail, or held by a pin)."""
        self.refit_seconds.set(outcome.fit_seconds)
        if outcome.published:
            self.refits.labels(outcome="published", reason="").inc()
        else:
            for code in outcome.reason_codes:
                self.refits.labels(outcome=outcome.outcome, reason=code).inc()

    def accuracy(self, summary: dict[str, tuple[int, int]]) -> None:
        for aggregator, (hits, labelled) in summary.items():
            self.online_labelled.labels(aggregator=aggregator).set(labelled)
            if labelled:
                self.online_accuracy.labels(aggregator=aggregator).set(hits / labelled)
