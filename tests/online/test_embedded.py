"""Embedded mode: an in-memory ring and a refit thread swap the served model; feedback only evaluates."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry

from models.aggregators import QueryScores
from models.online import ScoreRecord
from tests.support import wait_until
from workers.contract import CandidateResult, Job, JobResult, VerifierDiagnostics
from workers.online.runtime import OnlineRuntime, record_from_result
from workers.online.settings import OnlineSettings


def _online(**overrides: object) -> tuple[OnlineRuntime, CollectorRegistry]:
    registry = CollectorRegistry()
    settings = OnlineSettings(mode="embedded", refit_every_queries=50, by_task=False, **overrides)  # type: ignore[arg-type]
    return OnlineRuntime(settings, replica_id="test", registry=registry), registry


def test_refit_thread_swaps_model_and_exports_gauges(
    dev_scored: tuple[list[QueryScores], list[np.ndarray]],
) -> None:
    queries, _ = dev_scored
    online, registry = _online()
    swapped: list[str] = []
    online.holder.listeners.append(lambda model: swapped.append(model.version))
    assert online.holder.model is None and "cold start: mean" in online.note()
    online.start()
    try:
        for q, query in enumerate(queries[:60]):
            online.observe(ScoreRecord(query.matrix, query.verifier_names, request_id=f"r{q}"))
        wait_until(lambda: registry.get_sample_value("weaver_model_version_sequence") == 1, 10, "the first refit")
        assert swapped == [online.holder.model.version]  # type: ignore[union-attr]
        assert online.note().startswith("online model ") and "(v1, refit)" in online.note()
        assert registry.get_sample_value("weaver_model_refits_total", {"outcome": "published", "reason": ""}) == 1
        assert registry.get_sample_value("weaver_model_version_info",
                                         {"version": swapped[0], "source": "refit"}) == 1
        assert registry.get_sample_value("weaver_model_pinned") == 0
        assert registry.get_sample_value("weaver_model_drift_distance", {"task": ""}) is None  # nothing to compare
        assert registry.get_sample_value("weaver_model_drift_alarm", {"task": ""}) == 0
        assert registry.get_sample_value("weaver_model_cold_start") == 0
        acc = registry.get_sample_value("weaver_model_verifier_estimated_accuracy",
                                        {"verifier": "answer_agreement", "task": ""})
        assert acc is not None and 0.5 < acc <= 1.0
        assert registry.get_sample_value("weaver_model_verifier_positive_rate",
                                         {"verifier": "answer_agreement", "task": ""}) is not None
        for q, query in enumerate(queries[60:110]):
            online.observe(ScoreRecord(query.matrix, query.verifier_names, request_id=f"s{q}"))
        wait_until(lambda: registry.get_sample_value("weaver_model_version_sequence") == 2, 10, "the second refit")
        assert len(swapped) == 2
        drift = registry.get_sample_value("weaver_model_drift_distance", {"task": ""})
        assert drift is not None and drift >= 0
        assert registry.get_sample_value("weaver_model_drift_alarm", {"task": ""}) == float(drift > 0.25)
    finally:
        online.close()


def test_rejected_refit_is_counted_with_its_reason(dev_scored: tuple[list[QueryScores], list[np.ndarray]]) -> None:
    queries, _ = dev_scored
    online, registry = _online(min_queries=1000)
    for q, query in enumerate(queries[:50]):
        online.observe(ScoreRecord(query.matrix, query.verifier_names, request_id=f"r{q}"))
    online.backend.refit_if_due()
    assert online.holder.model is None
    assert registry.get_sample_value("weaver_model_refits_total",
                                     {"outcome": "rejected", "reason": "too_few_queries"}) == 1


def test_feedback_measures_every_aggregator_and_never_reaches_the_fit(
    dev_scored: tuple[list[QueryScores], list[np.ndarray]],
) -> None:
    """Labels go to the accuracy book only: the models fitted with and without feedback are identical."""
    queries, labels = dev_scored
    runs = []
    for give_feedback in (False, True):
        online, registry = _online()
        for q, (query, y) in enumerate(zip(queries[:100], labels[:100], strict=True)):
            selections = online.observe(ScoreRecord(query.matrix, query.verifier_names, request_id=f"r{q}"))
            if give_feedback:
                for index in set(selections.values()):
                    online.feedback(f"r{q}", index, bool(y[index] == 1))
            online.backend.refit_if_due()
        assert online.holder.model is not None
        runs.append((online.holder.model.version, online.status()["accuracy"], registry))
    assert runs[0][0] == runs[1][0]
    accuracy = runs[1][1]
    assert {"first", "mean", "weaver"} <= set(accuracy)
    first_hits = sum(float(y[0] == 1) for y in labels[:100])
    assert accuracy["first"]["labelled"] == 100 and accuracy["first"]["hits"] == first_hits
    assert runs[1][2].get_sample_value("weaver_online_selection_accuracy", {"aggregator": "first"}) == first_hits / 100
    assert runs[0][1] == {}


def test_feedback_for_unknown_request_and_duplicates() -> None:
    online, _ = _online()
    assert not online.feedback("nope", 0, True).known
    online.observe(ScoreRecord(np.array([[0.9], [0.1]]), ("v",), request_id="r1"), answers=("1", "2"))
    first = online.feedback("r1", 0, True)
    assert first.known and not first.duplicate and "first" in first.credited
    assert online.feedback("r1", 0, False).duplicate


def test_feedback_book_keeps_the_newest_requests_up_to_its_capacity() -> None:
    """``feedback_capacity`` bounds the embedded book's memory: the oldest request is forgotten first."""
    online, _ = _online(feedback_capacity=2)
    for r in ("r1", "r2", "r3"):
        online.observe(ScoreRecord(np.array([[0.9], [0.1]]), ("v",), request_id=r), answers=("1", "2"))
    assert not online.feedback("r1", 0, True).known
    assert online.feedback("r2", 0, True).known and online.feedback("r3", 1, False).known


def test_record_from_job_result_keeps_versions_not_prompt() -> None:
    job = Job(kind="rerank", prompt="secret", candidates=["a", "b"], task="gsm8k")
    diag = [VerifierDiagnostics(name="v1", kind="k", version="1.2", raw=[0.1, None], normalized=[0.1, None],
                                vote=[0, None], estimated_accuracy=None, kept=True, latency_s=0.0)]
    result = JobResult(id=job.id, candidates=[CandidateResult(index=i, text=t, score=0.0, rank=i)
                                              for i, t in enumerate("ab")],
                       verifier_names=["v1"], scores=[[0.1], [None]], diagnostics=diag)
    record = record_from_result(job, result)
    assert record is not None
    assert record.verifier_versions == ("1.2",) and record.task == "gsm8k" and record.prompt is None
    assert np.isnan(record.matrix[1, 0])
    assert record_from_result(job, result, log_prompts=True).prompt == "secret"  # type: ignore[union-attr]
    assert record_from_result(job, JobResult(id="x", status="error")) is None


def test_online_cold_start_is_the_one_setting_for_an_attached_worker(caplog: object) -> None:
    """online.cold_start decides what the worker's "weaver" aggregator falls back to; a different
    aggregation.cold_start in the worker config is overridden, with a warning that says so."""
    from workers.config import AggregationConfig, WorkerConfig
    from workers.entry import Worker

    worker = Worker(WorkerConfig(aggregation=AggregationConfig(cold_start="mean")))
    online, _ = _online(cold_start="majority")
    online.attach(worker)
    assert worker.cold_start == "majority"
    assert "cold start: majority" in online.note()
    assert "overrides the worker's aggregation.cold_start mean" in caplog.text  # type: ignore[attr-defined]
    untouched = Worker(WorkerConfig())
    _online()[0].attach(untouched)
    assert untouched.cold_start == "mean"
