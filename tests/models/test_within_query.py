"""Within-query contrasts (label model v2's second stage): what they ignore, what they find, what they gain."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models import label_models
from models.aggregators import QueryScores, WeaverAggregator, rank_order
from models.answers import group_answers
from models.lookahead import change_probability
from models.metrics import expected_calibration_error
from models.simulate_realistic import RealisticConfig, simulate_realistic
from models.weaver_v2 import WeaverV2Config, WeaverV2Model
from models.within_query import ContrastFit, contrast_evidence, contrasts, level_verifiers, within_association


def _small_sets(seed: int) -> tuple[list[QueryScores], list[np.ndarray]]:
    sim = simulate_realistic(RealisticConfig(n_queries=300, n_samples=4, seed=seed))
    queries = [QueryScores(cs.score_matrix(sim.verifier_names), sim.verifier_names, a)
               for cs, a in zip(sim.sets, sim.answers, strict=True)]
    return queries, sim.labels


def _fit(queries: list[QueryScores], config: WeaverV2Config | None = None) -> WeaverV2Model:
    return WeaverV2Model.fit([q.matrix for q in queries], queries[0].verifier_names, [q.answers for q in queries],
                             config=config)


def _selection_and_ece(model: WeaverV2Model, queries: list[QueryScores], labels: list[np.ndarray]) -> tuple:
    hits, probs = [], []
    for q, y in zip(queries, labels, strict=True):
        p, tie = model.score(q.matrix, q.answers)
        hits.append(y[int(rank_order(p, tie)[0])])
        probs.append(p)
    return float(np.mean(hits)), expected_calibration_error(np.concatenate(probs), np.concatenate(labels))


@pytest.fixture(scope="module")
def small_sets() -> tuple[list[QueryScores], list[np.ndarray], WeaverV2Model]:
    queries, labels = _small_sets(seed=0)
    return queries, labels, _fit(queries)


def test_level_verifiers_are_those_constant_inside_every_answer_group() -> None:
    group_of = np.array([0, 0, 1, 2, 2, 3])
    sizes = np.bincount(group_of)
    agreement = np.array([0.4, 0.4, 0.0, 0.4, 0.4, 0.0])
    noisy = np.array([0.1, 0.9, 0.5, 0.3, 0.3, 0.2])
    gap = np.array([0.7, np.nan, 0.1, 0.2, 0.2, 0.6])  # constant wherever two members are observed
    z = np.column_stack([agreement, noisy, gap])
    assert level_verifiers(z, group_of, sizes).tolist() == [True, False, True]
    singletons = np.arange(6)
    assert not level_verifiers(z, singletons, np.ones(6, dtype=int)).any()  # nothing to check against


def test_contrasts_ignore_a_per_query_shift_and_abstentions() -> None:
    rng = np.random.default_rng(0)
    z = rng.random((8, 2))
    z[3, 1] = np.nan
    query_of = np.repeat([0, 1], 4)
    group_of = np.array([0, 0, 1, 2, 3, 3, 4, 5])
    shifted = z + np.array([0.3, -0.2])[None, :] * (query_of[:, None] == 1) + 0.5 * (query_of[:, None] == 0)
    a, b = contrasts(z, group_of, query_of, 2), contrasts(shifted, group_of, query_of, 2)
    np.testing.assert_allclose(a.c, b.c, atol=1e-12)
    assert not a.usable[3, 1] and a.c[3, 1] == 0.0
    np.testing.assert_allclose(a.c[:4, 1].sum(), 0.0, atol=1e-12)  # centred over the observed candidates
    # the group share of the observed candidates: 2 of 4 in group 0, and 2 of 3 where verifier 1 abstained
    assert a.f[0, 0] == pytest.approx(0.5) and a.f[0, 1] == pytest.approx(2 / 3)
    fit = ContrastFit(np.array([1.0, 2.0]), np.array([0.0, 0.5]), np.array([0.5, 1.0]))
    np.testing.assert_allclose(contrast_evidence(a, fit, np.array([True, True])),
                               contrast_evidence(b, fit, np.array([True, True])), atol=1e-12)


def test_within_association_sees_only_what_varies_inside_queries() -> None:
    rng = np.random.default_rng(0)
    n_queries, k = 400, 4
    query_of = np.repeat(np.arange(n_queries), k)
    posterior = rng.random(n_queries * k)
    difficulty = rng.normal(size=n_queries)
    tracks = posterior + rng.normal(scale=0.5, size=posterior.size)  # follows the posterior inside queries
    by_prompt = difficulty[query_of]  # moves with the prompt only
    shifted = tracks + 3 * difficulty[query_of]  # the same signal under a large per-prompt shift
    z = within_association(np.column_stack([tracks, by_prompt, shifted]), posterior, query_of, n_queries)
    assert z[0] > 8 and z[1] == 0.0
    assert z[2] == pytest.approx(z[0])
    # under the null (scores exchangeable inside each query) the statistic is close to standard normal
    nulls = [within_association(rng.random((n_queries * k, 1)) + difficulty[query_of, None], posterior, query_of,
                                n_queries)[0] for _ in range(300)]
    assert abs(np.mean(nulls)) < 0.2 and 0.85 < np.std(nulls) < 1.15
    # abstentions drop out of both centrings
    holes = tracks.copy()
    holes[::3] = np.nan
    assert within_association(holes[:, None], posterior, query_of, n_queries)[0] > 5


def test_a_check_that_only_tracks_prompt_difficulty_carries_no_evidence_within_queries(small_sets: tuple) -> None:
    queries, labels, plain = small_sets
    rng = np.random.default_rng(1)
    # a check most candidates pass, failing more often on hard prompts but blind to which candidate is right
    solve_rate = [float(np.mean(y)) for y in labels]
    with_check = [replace(q, matrix=np.column_stack([q.matrix, rng.random(len(y)) < 0.55 + 0.4 * rate]),
                          verifier_names=(*q.verifier_names, "difficulty_check"))
                  for q, y, rate in zip(queries, labels, solve_rate, strict=True)]
    untested = _fit(with_check, WeaverV2Config(within_association=False))
    assert untested.report.within_silent == ()
    model = _fit(with_check)
    assert model.report.within_silent == ("difficulty_check",)
    # the report counts every EM iteration run: the stage the test looked at, then its refit without the check
    assert model.report.iterations > untested.report.iterations
    assert plain.report.within_silent == ()  # the simulator's verdicts do tell candidates of a prompt apart
    j = model.verifier_names.index("difficulty_check")
    first_stage = model.log_p1[j] - model.log_p0[j]
    assert first_stage[1] - first_stage[0] > 0.3  # pooled over prompts the check looks useful
    assert model.grouped is not None
    np.testing.assert_allclose(model.grouped.log_p1[j], model.grouped.log_p0[j])  # inside them it says nothing
    q = with_check[0]
    assert np.all(model.evidence(q.matrix, group_answers(list(q.answers)), unique=True)[:, j] == 0.0)
    reloaded = label_models.from_json(json.loads(json.dumps(model.to_json())))
    assert isinstance(reloaded, WeaverV2Model) and reloaded.report.within_silent == ("difficulty_check",)


def test_the_fit_finds_level_verifiers_and_scores_the_rest_by_contrast(small_sets: tuple) -> None:
    queries, _, model = small_sets
    assert model.grouped is not None
    names = model.verifier_names
    columns = dict(zip(names, model.grouped.columns.tolist(), strict=True))
    assert columns["answer_agreement"] is False  # a function of the answers: histograms
    assert columns["rm_large"] and columns["consistency"]
    assert columns["judge_large"] is False  # a verdict: two values, histograms fit it, a Gaussian does not
    assert model.report.within_query == tuple(n for n in names if columns[n])
    ranking = WeaverAggregator(model).rank(queries[0])
    assert ranking.note == "label model v2, answer groups, within-query contrasts"
    assert "within-query" not in WeaverAggregator(model).rank(replace(queries[0], task="code")).note
    delta = dict(zip(names, (model.grouped.delta / np.sqrt(model.grouped.var)).tolist(), strict=True))
    assert delta["rm_large"] > 0.3 and delta["length_bias"] < 0 and abs(delta["no_signal"]) < delta["rm_large"] / 4
    # the selection of a query does not move when one verifier rates all its candidates higher
    q = queries[0]
    j = names.index("rm_large")
    lifted = q.matrix.copy()
    lifted[:, j] += 2.0  # logits: a per-prompt offset
    np.testing.assert_allclose(model.posterior(lifted, q.answers), model.posterior(q.matrix, q.answers), atol=0.02)


def test_within_query_stage_helps_small_candidate_sets() -> None:
    for seed in (0, 1):
        queries, labels = _small_sets(seed)
        with_stage = _selection_and_ece(_fit(queries), queries, labels)
        without = _selection_and_ece(_fit(queries, WeaverV2Config(within_query=False)), queries, labels)
        assert with_stage[0] >= without[0] + 0.04, (seed, with_stage, without)
        assert with_stage[1] < without[1], (seed, with_stage, without)


def test_artifact_keeps_the_second_stage_and_reads_older_artifacts(small_sets: tuple, tmp_path: Path) -> None:
    queries, _, model = small_sets
    model.save(tmp_path / "v2.json")
    loaded = label_models.load(tmp_path / "v2.json")
    assert isinstance(loaded, WeaverV2Model) and loaded.grouped is not None and loaded.version == model.version
    q = queries[1]
    np.testing.assert_allclose(loaded.posterior(q.matrix, q.answers), model.posterior(q.matrix, q.answers))
    data = json.loads((tmp_path / "v2.json").read_text())
    del data["grouped"], data["config"]["within_query"], data["version"]  # as written before the second stage
    del data["none_by_size"]  # and before P(no group right) by set size
    del data["config"]["within_association"], data["fit_report"]["within_silent"]  # and before its test
    older = label_models.from_json(data)
    assert isinstance(older, WeaverV2Model) and older.grouped is None and not older.config.within_query
    assert not older.config.within_association and older.report.within_silent == ()
    p = older.posterior(q.matrix, q.answers)
    assert p.shape == (q.n_candidates,) and np.all((p >= 0) & (p <= 1))


def test_lookahead_simulates_contrast_verifiers(small_sets: tuple) -> None:
    queries, _, model = small_sets
    names = list(model.verifier_names)
    cheap = {"answer_agreement", "consistency"}
    rest = [n for n in names if n not in cheap]
    mixed = [q for q in queries if len(set(group_answers(q.answers or ()))) > 1][:30]
    assert mixed
    changes = []
    for q in mixed:
        observed = np.where([n in cheap for n in names], q.matrix, np.nan)
        groups = group_answers(q.answers or ())
        changes.append(change_probability(model, observed, names, groups, None, rest))
        assert change_probability(model, q.matrix, names, groups, None, []) == 0.0
    assert all(c is not None and 0.0 <= c <= 1.0 for c in changes)
    assert max(c for c in changes if c is not None) > 0.1  # strong verifiers are still to come: answers can move
