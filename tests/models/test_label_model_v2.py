"""Label model v2 and the realistic simulator: known truth in, recovered estimates and selections out."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from models import label_models
from models.aggregators import MeanAggregator, QueryScores, WeaverAggregator, rank_order
from models.answers import agreement_shares, group_answers
from models.binning import Digitizer, bin_edges, digitize
from models.estimates import label_free_estimates
from models.evaluate import majority_expected_hit
from models.label_model_v2 import build_layout, none_right_by_size
from models.metrics import expected_calibration_error
from models.simulate import simulate
from models.simulate_realistic import RealisticConfig, simulate_realistic, write_realistic
from models.weaver import WeaverModel
from models.weaver_v2 import WeaverV2Config, WeaverV2Model


@pytest.fixture(scope="module")
def realistic() -> tuple:
    sim = simulate_realistic(RealisticConfig(n_queries=200, n_samples=32, seed=3))
    queries = [QueryScores(cs.score_matrix(sim.verifier_names), sim.verifier_names, a)
               for cs, a in zip(sim.sets, sim.answers, strict=True)]
    model = WeaverV2Model.fit([q.matrix for q in queries], sim.verifier_names, sim.answers)
    return sim, queries, model


def _selection(rank, queries, labels) -> float:  # type: ignore[no-untyped-def]
    return float(np.mean([y[rank(q)] for q, y in zip(queries, labels, strict=True)]))


def test_realistic_simulator_has_the_structure_it_promises(realistic: tuple, tmp_path: Path) -> None:
    sim, queries, _ = realistic
    solve = np.array([y.mean() for y in sim.labels])
    assert (solve == 0).any() and (solve > 0.9).any()  # difficulty varies from none right to nearly all
    wrong_wins = 0
    for q, y, answers in zip(queries, sim.labels, sim.answers, strict=True):
        groups = np.array(group_answers(answers))
        for g in set(groups[y == 1].tolist()):  # correct candidates share one answer
            assert (y[groups == g] == 1).all()
        assert len(set(groups[y == 1].tolist())) <= 1
        np.testing.assert_allclose(q.matrix[:, 0], agreement_shares(answers), equal_nan=True)
        sizes = np.bincount(groups[groups >= 0]) if (groups >= 0).any() else np.zeros(1)
        wrong_wins += bool(y.any() and y[groups == int(np.argmax(sizes))].max() == 0)
    assert wrong_wins >= 10  # a recurring wrong answer out-votes the right one on hard queries
    assert np.isnan(np.vstack([q.matrix for q in queries])).any()  # abstentions
    truth = json.loads(write_realistic(sim, tmp_path / "sim.jsonl").read_text())
    assert truth["auroc"]["length_bias"] < 0.45 and abs(truth["auroc"]["no_signal"] - 0.5) < 0.03
    assert 0 < truth["oracle_informed_accuracy"] <= truth["any_correct_accuracy"] <= 1


def test_v2_beats_baselines_and_is_calibrated_on_the_realistic_simulator(realistic: tuple) -> None:
    sim, queries, model = realistic
    labels = sim.labels
    v2 = WeaverAggregator(model)
    mean = MeanAggregator.fit(queries)
    v1 = WeaverAggregator(WeaverModel.fit([q.matrix for q in queries], sim.verifier_names))
    acc = {
        "v2": _selection(lambda q: v2.rank(q).selected, queries, labels),
        "v1": _selection(lambda q: v1.rank(q).selected, queries, labels),
        "mean": _selection(lambda q: mean.rank(q).selected, queries, labels),
        "majority": float(np.mean([majority_expected_hit(q.answers, y) for q, y in zip(queries, labels,
                                                                                         strict=True)])),
    }
    best_single = max(_selection(lambda q, j=j: int(rank_order(q.matrix[:, j])[0]), queries, labels)
                      for j in range(len(sim.verifier_names)))
    for name in ("v1", "mean", "majority"):
        assert acc["v2"] >= acc[name] + 0.03, acc
    assert acc["v2"] >= best_single + 0.03
    y = np.concatenate(labels)
    posterior = np.concatenate([v2.rank(q).scores for q in queries])
    assert expected_calibration_error(posterior, y) <= 0.05
    assert abs(model.class_balance - y.mean()) <= 0.03


def test_learned_structure_finds_group_level_and_duplicated_verifiers(realistic: tuple) -> None:
    sim, _, model = realistic
    by_name = {v.name: v for v in model.report.verifiers}
    assert by_name["answer_agreement"].icc > 0.95  # identical across an answer group: counted once per group
    assert by_name["rm_medium"].weight < 0.8 and by_name["rm_medium_ft"].weight < 0.8  # the correlated pair
    assert by_name["rm_large"].weight > by_name["rm_medium"].weight
    assert by_name["no_signal"].max_llr < 0.5 < by_name["rm_large"].max_llr


def test_an_exact_copy_of_a_verifier_does_not_double_its_vote() -> None:
    sim = simulate(300, 20, 4, seed=2)
    names = sim.verifier_names
    matrices = [cs.score_matrix(names) for cs in sim.sets]
    copied = [np.column_stack([m, m[:, 0]]) for m in matrices]
    base = WeaverV2Model.fit(matrices, names)
    guarded = WeaverV2Model.fit(copied, (*names, "copy"))
    naive = WeaverV2Model.fit(copied, (*names, "copy"), config=WeaverV2Config(dependency_guard=False))
    assert guarded.weight[0] == pytest.approx(0.5, abs=0.1) and guarded.weight[-1] == pytest.approx(0.5, abs=0.1)
    y = np.concatenate(sim.labels)
    p_base = np.concatenate([base.posterior(m) for m in matrices])
    p_guard = np.concatenate([guarded.posterior(m) for m in copied])
    p_naive = np.concatenate([naive.posterior(m) for m in copied])
    assert expected_calibration_error(p_guard, y) < expected_calibration_error(p_naive, y)
    assert np.mean(np.abs(p_guard - p_base)) < np.mean(np.abs(p_naive - p_base))


def test_at_most_one_answer_group_is_right_per_query(realistic: tuple) -> None:
    _, queries, model = realistic
    for q in queries[:50]:
        p = model.posterior(q.matrix, q.answers)
        groups = np.array(group_answers(q.answers or ()))
        per_group = [p[groups == g][0] for g in set(groups.tolist()) if g >= 0] + list(p[groups < 0])
        assert sum(per_group) <= 1 + 1e-9
        for g in set(groups.tolist()) - {-1}:
            assert np.ptp(p[groups == g]) == 0  # members share one posterior
    multi = model.posterior(queries[0].matrix, queries[0].answers, task="code")  # answers not unique there
    assert multi.sum() > model.posterior(queries[0].matrix, queries[0].answers).sum() - 1e-9


def test_none_right_by_size_is_the_chance_a_random_subset_misses_the_right_group() -> None:
    # one query of 4 candidates: answer groups of 3 and 1, P(right) 0.6 and 0.3, so P(none right) 0.1
    layout = build_layout([np.zeros((4, 0), dtype=np.int16)], [np.array([0, 0, 0, 1])], [True])
    curve = none_right_by_size(np.array([0.6, 0.6, 0.6, 0.3]), layout)
    assert curve.shape == (4,)
    for k in range(1, 5):
        subsets = list(itertools.combinations(range(4), k))
        misses_big = np.mean([all(i == 3 for i in s) for s in subsets])
        misses_small = np.mean([3 not in s for s in subsets])
        exact = 0.1 + 0.6 * misses_big + 0.3 * misses_small
        assert curve[k - 1] == pytest.approx((exact + 1) / 3)  # smoothed as the M-step smooths rho0
    # a second query of 2 candidates (different answers, P(right) 0.5 and 0.2) counts for k <= 2 only;
    # a multi-answer query does not count at all
    layout = build_layout([np.zeros((n, 0), dtype=np.int16) for n in (4, 2, 3)],
                          [np.array([0, 0, 0, 1]), np.array([0, 1]), np.array([0, 0, 1])], [True, True, False])
    mixed = none_right_by_size(np.array([0.6, 0.6, 0.6, 0.3, 0.5, 0.2, 0.9, 0.9, 0.1]), layout)
    small = [0.3 + 0.5 * 0.5 + 0.2 * 0.5, 0.3]  # P(none) 0.3, then k = 1 and k = 2
    assert mixed[0] == pytest.approx((curve[0] * 3 - 1 + small[0] + 1) / 4)
    assert mixed[1] == pytest.approx((curve[1] * 3 - 1 + small[1] + 1) / 4)
    assert mixed[2:] == pytest.approx(curve[2:])


def test_p_none_right_follows_the_set_size_without_labels(realistic: tuple) -> None:
    sim, _, model = realistic
    assert model.grouped is not None
    assert model.none_right(32) == pytest.approx(model.grouped.rho0, abs=1e-3)  # the fitted size: unchanged
    for k in (2, 4, 8):  # the share of queries whose first k candidates hold no right answer
        truth = np.mean([1 - np.max(y[:k]) for y in sim.labels])
        assert abs(model.none_right(k) - truth) < 0.05, (k, model.none_right(k), truth)
    assert model.none_right(2) > model.none_right(8) > model.none_right(32) == model.none_right(64)


def test_without_answers_candidates_are_independent_and_rates_recovered() -> None:
    sim = simulate(400, 30, 8, seed=5)
    matrices = [cs.score_matrix(sim.verifier_names) for cs in sim.sets]
    model = WeaverV2Model.fit(matrices, sim.verifier_names, [tuple([None] * 30)] * 400)
    assert model.report.converged and model.report.identifiable
    assert abs(model.class_balance - np.concatenate(sim.labels).mean()) < 0.02
    for j, v in enumerate(model.report.verifiers):
        assert abs(v.tpr - sim.tpr[j]) < 0.03 and abs(v.fpr - sim.fpr[j]) < 0.03


def test_artifact_round_trip_and_loading_either_generation(realistic: tuple, tmp_path: Path) -> None:
    _, queries, model = realistic
    model.save(tmp_path / "v2.json")
    loaded = label_models.load(tmp_path / "v2.json")
    assert isinstance(loaded, WeaverV2Model) and loaded.version == model.version
    q = queries[0]
    np.testing.assert_allclose(loaded.posterior(q.matrix, q.answers), model.posterior(q.matrix, q.answers))
    v1 = WeaverModel.fit([q.matrix for q in queries[:40]], q.verifier_names)
    v1.save(tmp_path / "v1.json")
    assert isinstance(label_models.load(tmp_path / "v1.json"), WeaverModel)
    data = json.loads((tmp_path / "v2.json").read_text())
    data["rho0"] = 0.9
    with pytest.raises(ValueError, match="version does not match"):
        label_models.from_json(data)
    with pytest.raises(ValueError, match="not a label-model artifact"):
        label_models.from_json({"format": "something-else"})


def test_estimates_come_with_intervals_and_say_when_not_identified(realistic: tuple) -> None:
    sim, queries, model = realistic
    est = label_free_estimates([q.matrix for q in queries], sim.verifier_names, sim.answers, model=model,
                               n_resamples=8)
    truth = np.concatenate(sim.labels).mean()
    assert est.class_balance.interval.low <= est.class_balance.value <= est.class_balance.interval.high
    assert est.class_balance.identified and abs(est.class_balance.value - truth) < 0.03
    # 32 candidates and a dozen verifiers: no estimate rests on any one of them
    assert est.class_balance.rests_on is None and all(a.rests_on is None and a.identified for a in est.accuracies)
    # one weak verifier, no answers: nothing can be identified from agreement
    rng = np.random.default_rng(0)
    lone = [rng.random((10, 1)) for _ in range(30)]
    weak = label_free_estimates(lone, ("only",), n_resamples=5)
    assert not weak.class_balance.identified and any("not identifiable" in w for w in weak.warnings)


def test_bins_keep_discrete_levels_and_cut_continuous_scores_by_quantile() -> None:
    levels = np.array([0.0, 1 / 3, 2 / 3, 1.0] * 10)
    edges, _ = bin_edges(levels, 8)
    assert len(edges) == 3
    continuous = np.random.default_rng(0).random(1000)
    edges, otsu = bin_edges(continuous, 8)
    assert 7 <= len(edges) <= 8 and np.isfinite(otsu)
    bins = digitize(np.column_stack([levels[:4], [np.nan, 0.1, 0.5, 0.99]]), [bin_edges(levels, 8)[0], edges])
    assert bins[:, 0].tolist() == [0, 1, 2, 3] and bins[0, 1] == -1 and bins[1, 1] < bins[2, 1] < bins[3, 1]


@pytest.mark.parametrize("seed", range(5))
def test_lookup_binning_matches_binary_search(seed: int) -> None:
    rng = np.random.default_rng(seed)
    edges = [bin_edges(rng.beta(0.3, 0.3, 400), 8)[0], bin_edges(rng.integers(0, 5, 400) / 4, 8)[0],
             np.empty(0), np.array([1.0]), np.array([0.0005, 0.5, 0.9995])]
    digitizer = Digitizer(edges)
    assert digitizer.lookup is not None
    scores = rng.random((300, len(edges)))
    on_edges = np.concatenate([np.concatenate([e, np.nextafter(e, -1), np.nextafter(e, 2)]) for e in edges[:2]])
    scores[: on_edges.size // 2, 0] = on_edges[: on_edges.size // 2]  # ties and neighbours of every edge
    scores[:20, :] = np.array([0.0, 1.0] * 10)[:, None]
    scores[rng.random(scores.shape) < 0.1] = np.nan
    missing = np.isnan(scores)
    fast, searched = digitizer.global_bins(scores, missing), digitizer.searched_bins(scores, missing)
    assert np.array_equal(fast[~missing], searched[~missing])


def test_edges_closer_than_a_lookup_cell_fall_back_to_search() -> None:
    edges = [np.array([0.5, 0.5 + 1e-7]), np.array([0.2, 0.8])]
    digitizer = Digitizer(edges)
    assert digitizer.lookup is None
    bins = digitizer(np.array([[0.5 + 5e-8, 0.9], [0.6, np.nan]]))
    assert bins.tolist() == [[1, 2], [2, -1]]
    assert Digitizer([np.array([0.2, 1.5])]).lookup is None and Digitizer([np.array([np.nan])]).lookup is None


def test_cli_realistic_regime_and_both_label_models(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from service.cli import app

    runner = CliRunner()
    data = tmp_path / "simr.jsonl"
    result = runner.invoke(app, ["simulate", "-o", str(data), "--regime", "realistic", "--queries", "60",
                                 "--samples", "12", "--seed", "1"])
    assert result.exit_code == 0, result.output
    truth = json.loads((tmp_path / "simr.jsonl.truth.json").read_text())
    assert truth["regime"] == "realistic" and len(truth["labels"]) == 60
    formats = {}
    for name in ("weaver-v2", "weaver-v1"):
        out = tmp_path / f"{name}.json"
        result = runner.invoke(app, ["fit", str(data), "-o", str(out), "--label-model", name])
        assert result.exit_code == 0, result.output
        formats[name] = json.loads(out.read_text())["format"]
        assert ("P(no answer right) on single-answer queries, by candidates per query: 1: " in result.output
                ) == (name == "weaver-v2")
        assert ("12: " in result.output) == (name == "weaver-v2")
    assert formats == {"weaver-v2": "weaver-label-model/2", "weaver-v1": "weaver-label-model/1"}
    result = runner.invoke(app, ["fit", str(data), "--label-model", "weaver-v9"])
    assert result.exit_code == 2 and "unknown label model" in result.output
    result = runner.invoke(app, ["simulate", "-o", str(data), "--regime", "easy"])
    assert result.exit_code == 2 and "unknown regime" in result.output
    result = runner.invoke(app, ["eval", str(data), "--model", str(tmp_path / "weaver-v2.json"), "--json",
                                 "--resamples", "4", "--folds", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["label_model"] == "weaver-v2"
    assert report["class_balance_low"] <= report["class_balance_estimated"] <= report["class_balance_high"]
    assert all(r["est_accuracy_low"] <= r["est_accuracy_high"] for r in report["verifier_rows"] if r["kept"])
