"""The label model on data with known truth, and its step functions on tiny matrices."""

from __future__ import annotations

import numpy as np
import pytest

from models.aggregators import QueryScores, WeaverAggregator
from models.label_model import fit_label_model
from models.normalization import Normalizer
from models.simulate import simulate
from models.thresholds import otsu_threshold
from models.weaver import WeaverModel


@pytest.fixture(scope="module", params=[(500, 100, 30, 0.55, 0.92), (400, 50, 10, 0.55, 0.80)],
                ids=["paper-regime-30", "weak-10"])
def fitted(request: pytest.FixtureRequest) -> tuple:
    n_queries, n_samples, n_verifiers, _, _ = request.param
    sim = simulate(n_queries, n_samples, n_verifiers, seed=1)
    matrices = [cs.score_matrix(sim.verifier_names) for cs in sim.sets]
    return sim, matrices, WeaverModel.fit(matrices, sim.verifier_names)


def test_rates_recovered_within_002(fitted: tuple) -> None:
    sim, _, model = fitted
    assert model.report.converged
    assert model.kept.all()
    assert np.max(np.abs(model.tpr - sim.tpr)) < 0.02
    assert np.max(np.abs(model.fpr - sim.fpr)) < 0.02
    assert abs(model.class_balance - np.mean(np.concatenate(sim.labels))) < 0.02


def test_selection_within_one_point_of_bayes_optimal(fitted: tuple) -> None:
    sim, matrices, model = fitted
    agg = WeaverAggregator(model)
    acc = np.mean([y[agg.rank(QueryScores(m, sim.verifier_names)).selected] for m, y in
                   zip(matrices, sim.labels, strict=True)])
    assert acc >= sim.bayes_optimal_accuracy() - 0.01


def test_thresholds_recover_latent_votes(fitted: tuple) -> None:
    sim, matrices, model = fitted
    votes = model.explain(model.align(matrices[0], sim.verifier_names)).votes
    assert np.array_equal(votes, sim.votes[0])


def test_em_is_deterministic_and_reports_convergence() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(2000) < 0.3
    votes = np.where(rng.random((2000, 5)) < np.where(y[:, None], 0.8, 0.2), 1, 0).astype(np.int8)
    a, b = fit_label_model(votes), fit_label_model(votes)
    assert a.converged and a.iterations < 5000 and a.last_change < 1e-7
    assert np.array_equal(a.tpr, b.tpr) and a.class_balance == b.class_balance


def test_abstentions_are_not_negative_votes() -> None:
    rng = np.random.default_rng(1)
    y = rng.random(5000) < 0.4
    votes = np.where(rng.random((5000, 4)) < np.where(y[:, None], 0.85, 0.15), 1, 0).astype(np.int8)
    votes[:, 0][rng.random(5000) < 0.5] = -1  # verifier 0 abstains half of the time
    fit = fit_label_model(votes)
    assert abs(fit.tpr[0] - 0.85) < 0.03 and abs(fit.fpr[0] - 0.15) < 0.03


def test_em_rejects_bad_votes() -> None:
    with pytest.raises(ValueError, match="only -1"):
        fit_label_model(np.array([[2, 0, 1]]))
    with pytest.raises(ValueError, match="2-D"):
        fit_label_model(np.array([1, 0, 1]))


def test_normalizer_kinds_and_persistence() -> None:
    x = np.array([[0.0, 5.0, 1.0, np.nan], [1.0, 5.0, -30.0, np.nan], [1.0, 5.0, 200.0, np.nan],
                  [0.0, 5.0, 2.0, np.nan]])
    norm = Normalizer.fit(x)
    assert norm.kinds == ("identity", "constant", "robust_sigmoid", "empty")
    out = norm.transform(x)
    assert np.array_equal(out[:, 0], x[:, 0])
    assert np.all(out[:, 1] == 0.5)
    assert np.all((out[:, 2] > 0) & (out[:, 2] < 1)) and np.argmax(out[:, 2]) == 2
    assert np.all(np.isnan(out[:, 3]))
    again = Normalizer.from_json(norm.to_json()).transform(np.array([[0.5, 7.0, 1e9, 1.0]]))
    assert again[0, 0] == 0.5 and again[0, 1] == 0.5 and again[0, 2] == pytest.approx(1.0)
    extremes = norm.transform(np.array([[np.nan, np.nan, -np.inf, 0.0], [2.0, 1.0, np.inf, 0.0],
                                        [-1.0, 1.0, -1e308, 0.0]]))
    assert np.isnan(extremes[0, :2]).all()  # an abstention stays one, whatever the column's kind
    assert extremes[0, 2] == 0.0 and extremes[1, 2] == 1.0 and extremes[2, 2] == 0.0
    assert extremes[1, 0] == 1.0 and extremes[2, 0] == 0.0 and extremes[1, 1] == 0.5
    assert np.isnan(extremes[:, 3]).all()


def test_otsu_threshold_on_verdicts_and_gap() -> None:
    assert otsu_threshold(np.array([0.0, 1.0, 1.0, 0.0, np.nan])) == 0.5
    values = np.concatenate([np.linspace(0.0, 0.3, 80), np.linspace(0.7, 1.0, 20)])
    assert 0.3 < otsu_threshold(values) < 0.7
    assert np.isnan(otsu_threshold(np.array([0.2, 0.2])))
