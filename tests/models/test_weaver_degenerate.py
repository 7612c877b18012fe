"""Degenerate inputs: the Weaver aggregator never crashes and always selects deterministically."""

from __future__ import annotations

import numpy as np

from models.aggregators import QueryScores, WeaverAggregator
from models.weaver import WeaverModel

NAMES = ("a", "b", "c")


def _rank(model: WeaverModel, matrix: np.ndarray, names: tuple[str, ...] = NAMES) -> tuple:
    r = WeaverAggregator(model).rank(QueryScores(matrix, names))
    assert np.all((r.scores >= 0) & (r.scores <= 1))
    return r.selected, r.scores


def _pool(seed: int = 0, n: int = 50) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        y = rng.random(8) < 0.4
        out.append(np.where(rng.random((8, 3)) < np.where(y[:, None], 0.8, 0.2), 1.0, 0.0))
    return out


def test_one_candidate() -> None:
    model = WeaverModel.fit([np.array([[1.0, 0.0, 1.0]])] * 5, NAMES)
    selected, scores = _rank(model, np.array([[0.0, 1.0, 1.0]]))
    assert selected == 0 and scores.shape == (1,)


def test_one_verifier() -> None:
    rng = np.random.default_rng(0)
    pool = [rng.normal(size=(6, 1)) for _ in range(30)]
    model = WeaverModel.fit(pool, ("rm",))
    assert model.report.converged and not model.report.identifiable
    assert any("not identifiable" in w for w in model.report.warnings)
    selected, _ = _rank(model, np.array([[-1.0], [3.0], [0.5]]), ("rm",))
    assert selected == 1  # monotone in the single verifier's score


def test_zero_usable_verifiers() -> None:
    pool = [np.full((4, 3), np.nan) for _ in range(10)]
    model = WeaverModel.fit(pool, NAMES)
    assert model.report.n_kept == 0
    assert any("no usable verifier" in w for w in model.report.warnings)
    selected, scores = _rank(model, np.full((4, 3), np.nan))
    assert selected == 0 and np.allclose(scores, 0.5)


def test_all_nan_column_is_dropped_not_counted_as_wrong() -> None:
    pool = [np.hstack([m[:, :2], np.full((8, 1), np.nan)]) for m in _pool()]
    model = WeaverModel.fit(pool, NAMES)
    assert not model.kept[2] and model.report.verifiers[2].reason == "no scores"
    selected, _ = _rank(model, np.array([[0, 0, np.nan], [1, 1, np.nan]], dtype=float))
    assert selected == 1


def test_marginal_filter_never_leaves_zero_verifiers() -> None:
    rng = np.random.default_rng(0)
    # every verifier says "yes" to 99% of candidates
    pool = [(rng.random((10, 3)) < 0.99).astype(float) for _ in range(100)]
    model = WeaverModel.fit(pool, NAMES)
    assert model.report.n_kept >= 1
    assert any("kept the most balanced" in w for w in model.report.warnings)


def test_all_verifiers_agree() -> None:
    rng = np.random.default_rng(0)
    pool = []
    for _ in range(40):
        v = (rng.random(6) < 0.5).astype(float)
        pool.append(np.repeat(v[:, None], 3, axis=1))
    model = WeaverModel.fit(pool, NAMES)
    assert model.report.converged
    selected, scores = _rank(model, np.array([[0, 0, 0], [1, 1, 1], [1, 1, 1]], dtype=float))
    assert selected == 1 and scores[1] > scores[0]


def test_identical_candidates_tie_break_is_deterministic() -> None:
    model = WeaverModel.fit(_pool(), NAMES)
    matrix = np.tile(np.array([[1.0, 0.0, 1.0]]), (5, 1))
    first = _rank(model, matrix)
    assert first[0] == 0 and np.allclose(first[1], first[1][0])
    assert _rank(model, matrix)[0] == 0


def test_ties_broken_by_continuous_scores_not_index() -> None:
    rng = np.random.default_rng(0)
    pool = [rng.normal(size=(10, 3)) for _ in range(50)]
    model = WeaverModel.fit(pool, NAMES)
    # both candidates vote identically (all above threshold), candidate 1 scores higher everywhere
    matrix = np.array([[2.0, 2.0, 2.0], [3.0, 3.0, 3.0]])
    exp = model.explain(matrix)
    assert np.array_equal(exp.votes[0], exp.votes[1])
    assert _rank(model, matrix)[0] == 1


def test_request_with_other_verifier_names_aligns_by_name() -> None:
    model = WeaverModel.fit(_pool(), NAMES)
    reordered = np.array([[1.0, 1.0], [0.0, 0.0]])  # only c and a, in another order, plus unknown d
    r = WeaverAggregator(model).rank(QueryScores(np.hstack([reordered, [[5.0], [5.0]]]), ("c", "a", "d")))
    assert r.selected == 0
