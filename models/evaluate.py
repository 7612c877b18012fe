"""Offline evaluation: every aggregator on the same labelled candidate sets, side by side.

Label use is explicit here: Weaver, first, majority and mean never see labels; best single verifier
(hindsight) and supervised logistic regression (cross-validated by query) do, and are marked so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from models.aggregators import (
    BestSingleVerifierAggregator,
    MajorityVoteAggregator,
    MeanAggregator,
    QueryScores,
    Ranking,
    SupervisedAggregator,
    WeaverAggregator,
)
from models.answers import group_answers
from models.estimates import LabelFreeEstimates, label_free_estimates
from models.label_models import DEFAULT_LABEL_MODEL, LabelModel, fit_named, label_model_name
from models.metrics import (
    Interval,
    ReliabilityBin,
    auroc,
    bootstrap_mean,
    brier_score,
    expected_calibration_error,
    reliability_bins,
)
from models.weaver import WeaverConfig, WeaverModel
from models.weaver_v2 import WeaverV2Model


@dataclass(frozen=True)
class AggregatorRow:
    name: str
    uses_labels: bool
    accuracy: Interval
    auroc: float | None
    ece: float | None
    brier: float | None
    note: str
    reliability: tuple[ReliabilityBin, ...] = ()  # probabilistic aggregators: the reliability diagram's bins


@dataclass(frozen=True)
class VerifierRow:
    name: str
    kept: bool
    reason: str
    normalization: str
    threshold: float
    positive_rate: float
    est_tpr: float
    est_fpr: float
    est_accuracy: float
    true_tpr: float
    true_fpr: float
    true_accuracy: float
    auroc: float
    est_accuracy_low: float = float("nan")  # bootstrap interval over queries (label model v2)
    est_accuracy_high: float = float("nan")
    identified: bool | None = None


@dataclass(frozen=True)
class EvalReport:
    n_queries: int
    n_candidates: int
    n_labelled_queries: int
    verifiers: tuple[str, ...]
    rows: tuple[AggregatorRow, ...]
    verifier_rows: tuple[VerifierRow, ...]
    weaver_version: str
    weaver_warnings: tuple[str, ...]
    weaver_converged: bool
    weaver_iterations: int
    class_balance_estimated: float
    class_balance_true: float
    label_model: str = DEFAULT_LABEL_MODEL
    class_balance_low: float = float("nan")
    class_balance_high: float = float("nan")
    class_balance_identified: bool | None = None


def _labels_matrix(labels: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate(labels) if labels else np.empty(0)


def _hit(ranking: Ranking, y: np.ndarray) -> float:
    return float(y[ranking.selected] == 1)


def majority_expected_hit(answers: Sequence[str | None], y: np.ndarray) -> float:
    """Expected correctness of majority vote with ties between top answers broken at random."""
    groups = np.array(group_answers(answers))
    valid = groups[groups >= 0]
    if valid.size == 0:
        return float(np.mean(y == 1))  # no answers at all: a random pick
    sizes = np.bincount(valid)
    top = np.flatnonzero(sizes == sizes.max())
    return float(np.mean([float(y[np.flatnonzero(groups == g)[0]] == 1) for g in top]))


def _folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [order[i::k] for i in range(k)]


def evaluate(
    queries: Sequence[QueryScores],
    labels: Sequence[np.ndarray],
    *,
    config: WeaverConfig | None = None,
    model: LabelModel | None = None,
    folds: int = 5,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    label_model: str = DEFAULT_LABEL_MODEL,
    resamples: int = 20,
) -> EvalReport:
    """Evaluate all aggregators. ``labels[q]`` holds 0/1/NaN per candidate of query q.

    Weaver (``label_model``, or the given ``model``'s generation) is fitted label-free on all queries
    (the usual weak-supervision protocol) unless a fitted ``model`` is given; it is also cross-fitted
    (fit on k-1 folds of queries, scored on the held-out fold) to show how it does on queries it has
    never seen. The other generation gets a row too. For v2, ``resamples`` bootstrap refits give
    intervals on the label-free class balance and verifier accuracies (0: none).
    """
    if len(queries) != len(labels):
        raise ValueError(f"{len(queries)} queries but {len(labels)} label vectors")
    note = progress or (lambda _msg: None)
    names = queries[0].verifier_names
    labelled = [i for i, y in enumerate(labels) if not np.all(np.isnan(y))]
    lq = [queries[i] for i in labelled]
    ly = [labels[i] for i in labelled]
    rows: list[AggregatorRow] = []

    def add(name: str, hits: Sequence[float], uses_labels: bool, probs: list[np.ndarray] | None = None,
            row_note: str = "", prob_labels: list[np.ndarray] | None = None) -> None:
        """``probs[k]`` are scored against ``prob_labels[k]`` (default: the labelled queries in order)."""
        if probs is not None:
            p, y = np.concatenate(probs), _labels_matrix(prob_labels if prob_labels is not None else ly)
            a: float | None = auroc(p, y)
            e: float | None = expected_calibration_error(p, y)
            b: float | None = brier_score(p, y)
            bins = reliability_bins(p, y)
        else:
            a = e = b = None
            bins = ()
        rows.append(AggregatorRow(name, uses_labels, bootstrap_mean(np.array(hits), seed=seed), a, e, b, row_note,
                                  bins))

    note("fitting Weaver (label-free)")
    tasks = [q.task for q in queries]
    answers = [q.answers for q in queries]
    label_model = label_model_name(model) if model is not None else label_model

    def fit(name: str, part: Sequence[QueryScores]) -> LabelModel:
        if name == "weaver-v1" and config is not None:
            return WeaverModel.fit([q.matrix for q in part], names, config)
        part_tasks = [q.task for q in part]
        return fit_named(name, [q.matrix for q in part], names, [q.answers for q in part], part_tasks,
                         by_task=any(part_tasks))

    fitted = model or fit(label_model, queries)
    weaver = WeaverAggregator(fitted)
    rankings = [weaver.rank(q) for q in lq]
    add("weaver", [_hit(r, y) for r, y in zip(rankings, ly, strict=True)], False,
        [r.scores for r in rankings],
        f"{label_model}; label-free; fitted on all queries" if model is None else f"{label_model}; given model")

    if folds > 1 and len(queries) >= 2 * folds and model is None:
        note(f"cross-fitting Weaver on {folds} folds of queries")
        hits, probs, prob_labels = [], [], []
        index_of = {qi: pos for pos, qi in enumerate(labelled)}
        for fold in _folds(len(queries), folds, seed):
            held = set(fold.tolist())
            fold_model = WeaverAggregator(fit(label_model, [q for i, q in enumerate(queries) if i not in held]))
            for i in sorted(held):
                if i in index_of:
                    r = fold_model.rank(queries[i])
                    hits.append(_hit(r, labels[i]))
                    probs.append(r.scores)
                    prob_labels.append(labels[i])
        add(f"weaver ({folds}-fold, unseen queries)", hits, False, probs, f"{label_model}; label-free; inductive",
            prob_labels)

    if model is None:
        other = "weaver-v1" if label_model == "weaver-v2" else "weaver-v2"
        other_agg = WeaverAggregator(fit(other, queries))
        ranked = [other_agg.rank(q) for q in lq]
        add(other, [_hit(r, y) for r, y in zip(ranked, ly, strict=True)], False, [r.scores for r in ranked],
            "label-free; the other label model, for comparison")

    add("first", [float(y[0] == 1) for y in ly], False)
    add("random (expected)", [float(np.nanmean(y == 1)) for y in ly], False)
    if all(q.answers is not None for q in lq):
        add("majority (ties expected)", [majority_expected_hit(q.answers or (), y) for q, y in zip(lq, ly,
            strict=True)], False)
        majority = MajorityVoteAggregator()
        add("majority (first of tied)", [_hit(majority.rank(q), y) for q, y in zip(lq, ly, strict=True)], False)
    mean = MeanAggregator.fit(queries)
    add("mean (normalized)", [_hit(mean.rank(q), y) for q, y in zip(lq, ly, strict=True)], False)

    if lq:
        best = BestSingleVerifierAggregator.fit(lq, ly)
        add("best single verifier", [_hit(best.rank(q), y) for q, y in zip(lq, ly, strict=True)], True,
            row_note=f"{best.verifier} (chosen with labels)")
        all_y = _labels_matrix(ly)
        if len(np.unique(all_y[~np.isnan(all_y)])) == 2 and len(lq) >= 2 * folds:
            note(f"fitting supervised logistic regression ({folds}-fold by query)")
            hits, probs, prob_labels = [], [], []
            for fold in _folds(len(lq), folds, seed):
                held = set(fold.tolist())
                train_q = [q for i, q in enumerate(lq) if i not in held]
                train_y = [y for i, y in enumerate(ly) if i not in held]
                sup = SupervisedAggregator.fit(train_q, train_y)
                for i in sorted(held):
                    r = sup.rank(lq[i])
                    hits.append(_hit(r, ly[i]))
                    probs.append(r.scores)
                    prob_labels.append(ly[i])
            add(f"supervised LR ({folds}-fold by query)", hits, True, probs, "uses labels", prob_labels)
        add("oracle (any correct)", [float(np.nanmax(y) == 1) for y in ly], True)

    estimates: LabelFreeEstimates | None = None
    if isinstance(fitted, WeaverV2Model) and resamples > 0 and len(queries) >= 2:
        note(f"bootstrapping label-free estimates ({resamples} refits)")
        estimates = label_free_estimates([q.matrix for q in queries], names, answers, tasks, fitted.config,
                                         model=fitted, n_resamples=resamples, seed=seed)
    verifier_rows = _verifier_rows(fitted, queries, labels, estimates)
    all_labels = _labels_matrix(ly)
    cb = estimates.class_balance if estimates is not None else None
    return EvalReport(
        n_queries=len(queries),
        n_candidates=int(sum(q.n_candidates for q in queries)),
        n_labelled_queries=len(lq),
        verifiers=names,
        rows=tuple(rows),
        verifier_rows=verifier_rows,
        weaver_version=fitted.version,
        weaver_warnings=fitted.report.warnings + (estimates.warnings[len(fitted.report.warnings):]
                                                  if estimates is not None else ()),
        weaver_converged=fitted.report.converged,
        weaver_iterations=fitted.report.iterations,
        class_balance_estimated=fitted.class_balance,
        class_balance_true=float(np.nanmean(all_labels)) if all_labels.size else float("nan"),
        label_model=label_model,
        class_balance_low=cb.interval.low if cb else float("nan"),
        class_balance_high=cb.interval.high if cb else float("nan"),
        class_balance_identified=cb.identified if cb else None,
    )


def _verifier_rows(model: LabelModel, queries: Sequence[QueryScores], labels: Sequence[np.ndarray],
                   estimates: LabelFreeEstimates | None = None) -> tuple[VerifierRow, ...]:
    matrix = model.align(np.vstack([q.matrix for q in queries]), queries[0].verifier_names)
    y = _labels_matrix(labels)
    if isinstance(model, WeaverV2Model):
        normalized = model.normalizer.transform(matrix)
        thresholds = np.array([r.threshold for r in model.report.verifiers])
        votes = np.where(np.isnan(normalized), -1, (normalized >= thresholds[None, :]).astype(int))
    else:
        votes = model.explain(matrix).votes
    intervals = {e.name: e for e in estimates.accuracies} if estimates is not None else {}
    rows = []
    for j, name in enumerate(model.verifier_names):
        rep = model.report.verifiers[j]
        v = votes[:, j]
        obs = (v >= 0) & ~np.isnan(y)
        pos, neg = obs & (y == 1), obs & (y == 0)
        true_tpr = float((v[pos] == 1).mean()) if pos.any() else float("nan")
        true_fpr = float((v[neg] == 1).mean()) if neg.any() else float("nan")
        true_acc = float((v[obs] == y[obs]).mean()) if obs.any() else float("nan")
        est = intervals.get(name)
        rows.append(VerifierRow(
            name=name, kept=rep.kept, reason=rep.reason, normalization=rep.normalization,
            threshold=rep.threshold, positive_rate=float((v[v >= 0] == 1).mean()) if (v >= 0).any() else float("nan"),
            est_tpr=rep.tpr, est_fpr=rep.fpr, est_accuracy=rep.accuracy, true_tpr=true_tpr, true_fpr=true_fpr,
            true_accuracy=true_acc, auroc=auroc(matrix[:, j], y),
            est_accuracy_low=est.interval.low if est else float("nan"),
            est_accuracy_high=est.interval.high if est else float("nan"),
            identified=est.identified if est else None,
        ))
    return tuple(rows)
