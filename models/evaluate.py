"""Offline evaluation: every aggregator on the same labelled candidate sets, side by side.

Label use is explicit here: Weaver, first, majority and mean never see labels; best single verifier
(hindsight) and supervised logistic regression (cross-validated by query) do, and are marked so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.aggregators import (
    Aggregator,
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
from models.v2_options import changed_options
from models.weaver import WeaverConfig, WeaverModel
from models.weaver_v2 import WeaverV2Config, WeaverV2Model


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
    rests_on: str | None = None  # the verifier this estimate rests on (models.estimates), if any
    est_accuracy_without: float = float("nan")  # the estimate refitted without it (NaN: nothing identified)


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
    class_balance_rests_on: str | None = None
    class_balance_without: float = float("nan")
    label_model_options: dict[str, Any] = field(default_factory=dict)  # v2 fit options changed from the default


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
    v2_config: WeaverV2Config | None = None,
) -> EvalReport:
    """Evaluate all aggregators. ``labels[q]`` holds 0/1/NaN per candidate of query q.

    Weaver (``label_model``, or the given ``model``'s generation) is fitted label-free on all queries
    (the usual weak-supervision protocol) unless a fitted ``model`` is given; it is also cross-fitted
    (fit on k-1 folds of queries, scored on the held-out fold) to show how it does on queries it has
    never seen. The other generation gets a row too. For v2, ``resamples`` bootstrap refits give
    intervals on the label-free class balance and verifier accuracies (0: none); ``v2_config`` is the v2
    fit's options (every v2 fit here, the comparison row's too; default: ``WeaverV2Config()``).
    """
    if len(queries) != len(labels):
        raise ValueError(f"{len(queries)} queries but {len(labels)} label vectors")
    note = progress or (lambda _msg: None)
    book = _RowBook(queries, labels, seed)
    label_model = label_model_name(model) if model is not None else label_model
    fitter = _Fitter(queries[0].verifier_names, config, v2_config)
    note("fitting Weaver (label-free)")
    fitted = model or fitter.fit(label_model, queries)
    _label_model_rows(book, fitter, fitted, label_model, given=model is not None, folds=folds, note=note)
    _baseline_rows(book)
    _supervised_rows(book, folds, note)
    estimates: LabelFreeEstimates | None = None
    if isinstance(fitted, WeaverV2Model) and resamples > 0 and len(queries) >= 2:
        note(f"bootstrapping label-free estimates ({resamples} refits)")
        estimates = label_free_estimates([q.matrix for q in queries], fitter.names, [q.answers for q in queries],
                                         [q.task for q in queries], fitted.config, model=fitted,
                                         n_resamples=resamples, seed=seed)
    return _report(book, fitted, label_model, estimates)


class _RowBook:
    """The rows of the report, and the labelled queries they are scored on."""

    def __init__(self, queries: Sequence[QueryScores], labels: Sequence[np.ndarray], seed: int) -> None:
        self.queries, self.labels, self.seed = queries, labels, seed
        self.labelled = [i for i, y in enumerate(labels) if not np.all(np.isnan(y))]
        self.lq = [queries[i] for i in self.labelled]
        self.ly = [labels[i] for i in self.labelled]
        self.rows: list[AggregatorRow] = []

    def add(self, name: str, hits: Sequence[float], uses_labels: bool, probs: list[np.ndarray] | None = None,
            row_note: str = "", prob_labels: list[np.ndarray] | None = None) -> None:
        """``probs[k]`` are scored against ``prob_labels[k]`` (default: the labelled queries in order)."""
        if probs is not None:
            p, y = np.concatenate(probs), _labels_matrix(prob_labels if prob_labels is not None else self.ly)
            a: float | None = auroc(p, y)
            e: float | None = expected_calibration_error(p, y)
            b: float | None = brier_score(p, y)
            bins = reliability_bins(p, y)
        else:
            a = e = b = None
            bins = ()
        self.rows.append(AggregatorRow(name, uses_labels, bootstrap_mean(np.array(hits), seed=self.seed), a, e, b,
                                       row_note, bins))

    def add_ranked(self, name: str, aggregator: Aggregator, uses_labels: bool, row_note: str = "",
                   probabilities: bool = False) -> None:
        """A row for an aggregator scored on every labelled query."""
        rankings = [aggregator.rank(q) for q in self.lq]
        self.add(name, [_hit(r, y) for r, y in zip(rankings, self.ly, strict=True)], uses_labels,
                 [r.scores for r in rankings] if probabilities else None, row_note)


@dataclass(frozen=True)
class _Fitter:
    """Fits a label model by name on a subset of queries (the same verifiers, tasks and config each time)."""

    names: tuple[str, ...]
    config: WeaverConfig | None
    v2_config: WeaverV2Config | None = None

    def fit(self, name: str, part: Sequence[QueryScores]) -> LabelModel:
        if name == "weaver-v1" and self.config is not None:
            return WeaverModel.fit([q.matrix for q in part], self.names, self.config)
        part_tasks = [q.task for q in part]
        return fit_named(name, [q.matrix for q in part], self.names, [q.answers for q in part], part_tasks,
                         by_task=any(part_tasks), v2_config=self.v2_config)


def _label_model_rows(book: _RowBook, fitter: _Fitter, fitted: LabelModel, label_model: str, *, given: bool,
                      folds: int, note: Callable[[str], None]) -> None:
    """The label model on all queries, cross-fitted on unseen queries, and the other generation beside it."""
    book.add_ranked("weaver", WeaverAggregator(fitted), False,
                    f"{label_model}; given model" if given else f"{label_model}; label-free; fitted on all queries",
                    probabilities=True)
    queries, labels = book.queries, book.labels
    if folds > 1 and len(queries) >= 2 * folds and not given:
        note(f"cross-fitting Weaver on {folds} folds of queries")
        hits, probs, prob_labels = [], [], []
        labelled = set(book.labelled)
        for fold in _folds(len(queries), folds, book.seed):
            held = set(fold.tolist())
            fold_model = WeaverAggregator(fitter.fit(label_model, [q for i, q in enumerate(queries) if i not in held]))
            for i in sorted(held & labelled):
                r = fold_model.rank(queries[i])
                hits.append(_hit(r, labels[i]))
                probs.append(r.scores)
                prob_labels.append(labels[i])
        book.add(f"weaver ({folds}-fold, unseen queries)", hits, False, probs, f"{label_model}; label-free; inductive",
                 prob_labels)
    if not given:
        other = "weaver-v1" if label_model == "weaver-v2" else "weaver-v2"
        book.add_ranked(other, WeaverAggregator(fitter.fit(other, queries)), False,
                        "label-free; the other label model, for comparison", probabilities=True)


def _baseline_rows(book: _RowBook) -> None:
    """The label-free baselines: first, random (expected), majority vote, mean of normalized scores."""
    lq, ly = book.lq, book.ly
    book.add("first", [float(y[0] == 1) for y in ly], False)
    book.add("random (expected)", [float(np.nanmean(y == 1)) for y in ly], False)
    if all(q.answers is not None for q in lq):
        book.add("majority (ties expected)",
                 [majority_expected_hit(q.answers or (), y) for q, y in zip(lq, ly, strict=True)], False)
        book.add_ranked("majority (first of tied)", MajorityVoteAggregator(), False)
    book.add_ranked("mean (normalized)", MeanAggregator.fit(book.queries), False)


def _supervised_rows(book: _RowBook, folds: int, note: Callable[[str], None]) -> None:
    """What labels buy: the best single verifier in hindsight, supervised LR cross-fitted by query, the oracle."""
    lq, ly = book.lq, book.ly
    if not lq:
        return
    best = BestSingleVerifierAggregator.fit(lq, ly)
    book.add_ranked("best single verifier", best, True, f"{best.verifier} (chosen with labels)")
    all_y = _labels_matrix(ly)
    if len(np.unique(all_y[~np.isnan(all_y)])) == 2 and len(lq) >= 2 * folds:
        note(f"fitting supervised logistic regression ({folds}-fold by query)")
        hits, probs, prob_labels = [], [], []
        for fold in _folds(len(lq), folds, book.seed):
            held = set(fold.tolist())
            train_q = [q for i, q in enumerate(lq) if i not in held]
            train_y = [y for i, y in enumerate(ly) if i not in held]
            sup = SupervisedAggregator.fit(train_q, train_y)
            for i in sorted(held):
                r = sup.rank(lq[i])
                hits.append(_hit(r, ly[i]))
                probs.append(r.scores)
                prob_labels.append(ly[i])
        book.add(f"supervised LR ({folds}-fold by query)", hits, True, probs, "uses labels", prob_labels)
    book.add("oracle (any correct)", [float(np.nanmax(y) == 1) for y in ly], True)


def _report(book: _RowBook, fitted: LabelModel, label_model: str,
            estimates: LabelFreeEstimates | None) -> EvalReport:
    queries = book.queries
    all_labels = _labels_matrix(book.ly)
    cb = estimates.class_balance if estimates is not None else None
    return EvalReport(
        n_queries=len(queries),
        n_candidates=int(sum(q.n_candidates for q in queries)),
        n_labelled_queries=len(book.lq),
        verifiers=queries[0].verifier_names,
        rows=tuple(book.rows),
        verifier_rows=_verifier_rows(fitted, queries, book.labels, estimates),
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
        class_balance_rests_on=cb.rests_on if cb else None,
        class_balance_without=cb.without if cb else float("nan"),
        label_model_options=changed_options(fitted.config) if isinstance(fitted, WeaverV2Model) else {},
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
            rests_on=est.rests_on if est else None,
            est_accuracy_without=est.without if est else float("nan"),
        ))
    return tuple(rows)
