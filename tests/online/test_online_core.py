"""The pure online pieces: score log, refit policy, guardrails, drift, versions (real dev-set scores)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.aggregators import QueryScores
from models.online import (
    ColdStart,
    DirectoryModelStore,
    GuardrailConfig,
    OnlineConfig,
    OnlineLearner,
    RefitPolicy,
    ScoreRecord,
    ScoreRing,
    VersionNotFound,
    drift,
    fit_window,
    guardrail_reasons,
    records_from_matrices,
    refit,
    resolve_version,
    rollback,
    version_info,
    window_matrices,
)


def _records(queries: list[QueryScores]) -> list[ScoreRecord]:
    return records_from_matrices([q.matrix for q in queries], queries[0].verifier_names)


def test_record_round_trips_through_json_without_prompt() -> None:
    record = ScoreRecord(np.array([[0.5, np.nan], [1.0, 0.0]]), ("a", "b"), ("1", "2"), task="gsm8k",
                         request_id="r1", timestamp=12.0)
    data = json.loads(json.dumps(record.to_json()))
    assert "prompt" not in data
    back = ScoreRecord.from_json(data)
    assert np.array_equal(back.matrix, record.matrix, equal_nan=True)
    assert (back.verifier_names, back.verifier_versions, back.task, back.request_id) == (("a", "b"), ("1", "2"),
                                                                                            "gsm8k", "r1")
    with pytest.raises(ValueError, match="does not match"):
        ScoreRecord(np.zeros((2, 3)), ("a", "b"))


def test_learner_drops_prompts_unless_configured() -> None:
    record = ScoreRecord(np.zeros((2, 1)), ("a",), prompt="secret question")
    learner = OnlineLearner(OnlineConfig())
    learner.observe(record)
    assert learner.ring.window()[0].prompt is None
    keeping = OnlineLearner(OnlineConfig(log_prompts=True))
    keeping.observe(record)
    assert keeping.ring.window()[0].prompt == "secret question"


def test_ring_is_bounded_and_keeps_the_newest() -> None:
    ring = ScoreRing(3)
    for i in range(5):
        ring.append(ScoreRecord(np.full((1, 1), float(i)), ("a",), request_id=str(i)))
    assert len(ring) == 3 and ring.total == 5
    assert [r.request_id for r in ring.window()] == ["2", "3", "4"]
    assert [r.request_id for r in ring.window(2)] == ["3", "4"]


def test_refit_policy_counts_queries_and_seconds() -> None:
    policy = RefitPolicy(every_queries=50, every_seconds=60.0)
    assert not policy.due(49, 10.0)
    assert policy.due(50, 0.0)
    assert policy.due(1, 61.0)
    assert not policy.due(0, 1e9)  # nothing new: nothing to learn


def test_window_aligns_different_verifier_sets() -> None:
    a = ScoreRecord(np.array([[1.0, 2.0]]), ("x", "y"))
    b = ScoreRecord(np.array([[3.0]]), ("z",))
    names, matrices, _ = window_matrices([a, b])
    assert names == ("x", "y", "z")
    assert np.array_equal(matrices[1], np.array([[np.nan, np.nan, 3.0]]), equal_nan=True)


def test_window_drops_scores_of_an_older_verifier_version() -> None:
    old = ScoreRecord(np.array([[0.2, 0.9]]), ("x", "y"), ("1", "a"))
    new = ScoreRecord(np.array([[0.7, 0.1]]), ("x", "y"), ("2", "a"))
    _, matrices, _ = window_matrices([old, new])
    assert np.array_equal(matrices[0], np.array([[np.nan, 0.9]]), equal_nan=True)
    assert np.array_equal(matrices[1], np.array([[0.7, 0.1]]))


def test_good_window_passes_guardrails(dev_scored: tuple[list[QueryScores], list[np.ndarray]]) -> None:
    queries, _ = dev_scored
    records = _records(queries)
    outcome = refit(records, None)
    assert outcome.published, outcome.reasons
    assert outcome.model.report.n_kept >= 3


def test_too_few_queries_is_rejected(dev_scored: tuple[list[QueryScores], list[np.ndarray]]) -> None:
    queries, _ = dev_scored
    outcome = refit(_records(queries[:10]), None, guardrails=GuardrailConfig(min_queries=30))
    assert not outcome.published
    assert outcome.reason_codes == ("too_few_queries",)


def test_constant_verifier_window_keeps_previous_version(
    dev_scored: tuple[list[QueryScores], list[np.ndarray]],
) -> None:
    """A verifier that breaks (returns one constant value) must not silently drop out of the model."""
    queries, _ = dev_scored
    learner = OnlineLearner(OnlineConfig(policy=RefitPolicy(every_queries=100, window=100, by_task=False)))
    for record in _records(queries[:100]):
        learner.observe(record)
    first = learner.maybe_refit()
    assert first is not None and first.published
    good = learner.current
    assert good is not None
    column = good.verifier_names.index("prompt_number_coverage")
    assert good.kept[column]
    for record in _records(queries[100:200]):
        broken = record.matrix.copy()
        broken[:, column] = 0.0
        learner.observe(ScoreRecord(broken, record.verifier_names, request_id=record.request_id))
    second = learner.maybe_refit()
    assert second is not None and not second.published
    assert "verifier_lost_signal" in second.reason_codes
    assert learner.current is good
    assert learner.store.current() == good.version


def test_all_agreeing_window_is_rejected(dev_scored: tuple[list[QueryScores], list[np.ndarray]]) -> None:
    """Verifiers that always agree carry no information about their rates: the fit is refused."""
    queries, _ = dev_scored
    previous = fit_window(_records(queries[:100]), by_task=False)
    copies = [np.repeat(q.matrix[:, :1], 3, axis=1) for q in queries[100:200]]
    records = records_from_matrices(copies, ("v1", "v2", "v3"))
    outcome = refit(records, previous, by_task=False)
    assert not outcome.published
    assert "verifiers_all_agree" in outcome.reason_codes


def test_flipped_verifier_is_rejected(dev_scored: tuple[list[QueryScores], list[np.ndarray]]) -> None:
    """A verifier voting against the majority of the others (here: answer agreement inverted)."""
    queries, _ = dev_scored
    matrices = [np.column_stack([q.matrix, 1.0 - q.matrix[:, 0]]) for q in queries]
    records = records_from_matrices(matrices, (*queries[0].verifier_names, "inverted_agreement"))
    outcome = refit(records, None, by_task=False)
    assert not outcome.published
    assert any(r.startswith("verifier_flipped: inverted_agreement") for r in outcome.reasons), outcome.reasons


def test_guardrail_flags_collapsed_class_balance(dev_scored: tuple[list[QueryScores], list[np.ndarray]]) -> None:
    queries, _ = dev_scored
    model = fit_window(_records(queries), by_task=False)
    balance = model.report.class_balance
    tight = GuardrailConfig(min_class_balance=balance + 0.01, max_class_balance=0.99)
    reasons = guardrail_reasons(model, [q.matrix for q in queries], None, tight)
    assert [r.split(":")[0] for r in reasons] == ["class_balance_collapsed"]


def test_drift_between_fits(dev_scored: tuple[list[QueryScores], list[np.ndarray]]) -> None:
    queries, _ = dev_scored
    a = fit_window(_records(queries[:150]), by_task=False)
    b = fit_window(_records(queries[150:]), by_task=False)
    assert np.isnan(drift(None, a).distance)
    same = drift(a, a)
    assert same.distance == 0.0
    moved = drift(a, b)
    kept = [n for j, n in enumerate(a.verifier_names) if a.kept[j] and b.kept[j]]
    assert set(moved.per_verifier) == set(kept)
    j = a.verifier_names.index(kept[0])
    expected = max(abs(a.tpr[j] - b.tpr[j]), abs(a.fpr[j] - b.fpr[j]))
    assert moved.per_verifier[kept[0]] == pytest.approx(expected)
    assert moved.distance == pytest.approx(max(moved.per_verifier.values()))


def test_directory_store_lists_shows_and_rolls_back(
    tmp_path: object, dev_scored: tuple[list[QueryScores], list[np.ndarray]],
) -> None:
    from pathlib import Path

    queries, _ = dev_scored
    store = DirectoryModelStore(Path(str(tmp_path)) / "models", keep=2)
    models = [fit_window(_records(queries[i * 100:(i + 1) * 100]), by_task=False) for i in range(3)]
    for seq, model in enumerate(models, start=1):
        store.put(model, version_info(model, seq, "refit", 100))
        store.set_current(model.version)
    assert [i.sequence for i in store.versions()] == [2, 3]  # keep=2 pruned the oldest
    with pytest.raises(VersionNotFound):
        store.get(models[0].version)
    assert store.current() == models[2].version
    assert resolve_version(store, "v2") == models[1].version
    assert resolve_version(store, models[1].version[:6]) == models[1].version
    rollback(store, models[1].version)
    assert store.current() == models[1].version
    reloaded = DirectoryModelStore(store.root)
    assert reloaded.get(reloaded.current() or "").version == models[1].version
    learner = OnlineLearner(OnlineConfig(), store=reloaded)
    assert learner.current is not None and learner.current.version == models[1].version


def test_cold_start_prior_is_described(
    tmp_path: object, dev_scored: tuple[list[QueryScores], list[np.ndarray]],
) -> None:
    from pathlib import Path

    queries, _ = dev_scored
    assert ColdStart("mean").load() is None
    assert "mean aggregation" in ColdStart("mean").describe()
    path = Path(str(tmp_path)) / "prior.json"
    model = fit_window(_records(queries), by_task=False)
    model.save(path)
    prior = ColdStart("model", str(path))
    assert prior.load() is not None and "shipped model" in prior.describe()
    learner = OnlineLearner(OnlineConfig(cold_start=prior))
    assert learner.current is not None and learner.current.version == model.version


def test_per_task_models_are_fitted_from_task_keys(dev_scored: tuple[list[QueryScores], list[np.ndarray]]) -> None:
    queries, _ = dev_scored
    tasks = ["even" if i % 2 == 0 else "odd" for i in range(len(queries))]
    records = records_from_matrices([q.matrix for q in queries], queries[0].verifier_names, tasks)
    outcome = refit(records, None, by_task=True)
    assert outcome.published
    assert set(outcome.model.by_task) == {"even", "odd"}
    assert outcome.model.for_task("even").task == "even"
    assert outcome.model.for_task(None) is outcome.model


def test_learner_history_is_bounded(dev_scored: tuple[list[QueryScores], list[np.ndarray]]) -> None:
    """A long-running server refits forever: only the newest ``keep_outcomes`` outcomes are kept."""
    queries, _ = dev_scored
    learner = OnlineLearner(OnlineConfig(policy=RefitPolicy(every_queries=50, window=50, by_task=False),
                                         keep_outcomes=2))
    outcomes = []
    for start in range(0, 150, 50):
        for record in _records(queries[start:start + 50]):
            learner.observe(record)
        outcomes.append(learner.maybe_refit())
    assert all(o is not None for o in outcomes)
    assert list(learner.history) == outcomes[-2:]
