"""Aggregators: one small interface (``rank``) for Weaver and every baseline.

An aggregator turns one query's score matrix (candidates x verifiers, NaN = abstain) into a score
per candidate and a ranking. Ties are always broken deterministically: by the aggregator's score,
then by the mean normalized verifier score, then by candidate index.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from models.answers import group_answers
from models.normalization import Normalizer, observed_mean
from models.weaver import WeaverModel
from models.weaver_v2 import WeaverV2Model


@dataclass(frozen=True)
class QueryScores:
    """Everything an aggregator may look at for one query. Never contains labels."""

    matrix: np.ndarray  # (n_candidates, n_verifiers), NaN = abstain
    verifier_names: tuple[str, ...]
    answers: tuple[str | None, ...] | None = None  # extracted final answers, for majority vote
    task: str | None = None

    def __post_init__(self) -> None:
        if self.matrix.ndim != 2 or self.matrix.shape[1] != len(self.verifier_names):
            raise ValueError(
                f"score matrix shape {self.matrix.shape} does not match {len(self.verifier_names)} verifier names"
            )
        if self.answers is not None and len(self.answers) != self.matrix.shape[0]:
            raise ValueError(f"{len(self.answers)} answers for {self.matrix.shape[0]} candidates")

    @property
    def n_candidates(self) -> int:
        return int(self.matrix.shape[0])


@dataclass(frozen=True)
class Ranking:
    aggregator: str
    version: str
    scores: np.ndarray  # (n,) higher is better; P(correct) when is_probability
    order: np.ndarray  # candidate indices, best first
    is_probability: bool
    note: str = ""  # e.g. which model or fallback produced the scores
    extras: dict[str, object] = field(default_factory=dict)

    @property
    def selected(self) -> int:
        return int(self.order[0])

    @property
    def margin(self) -> float:
        """Score gap between the best and the second-best candidate (0 for a single candidate)."""
        if self.order.size < 2:
            return 0.0
        return float(self.scores[self.order[0]] - self.scores[self.order[1]])


def rank_order(primary: np.ndarray, secondary: np.ndarray | None = None) -> np.ndarray:
    """Indices sorted by primary desc, then secondary desc, then index asc (NaN sorts last)."""
    n = primary.shape[0]
    p = np.where(np.isnan(primary), -np.inf, primary)
    s = np.zeros(n) if secondary is None else np.where(np.isnan(secondary), -np.inf, secondary)
    return np.lexsort((np.arange(n), -s, -p))


class Aggregator(ABC):
    name: ClassVar[str]
    is_probability: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = False
    version: str = "builtin"

    @abstractmethod
    def rank(self, query: QueryScores) -> Ranking: ...

    def _ranking(self, scores: np.ndarray, secondary: np.ndarray | None = None, note: str = "") -> Ranking:
        return Ranking(self.name, self.version, scores, rank_order(scores, secondary), self.is_probability, note)


class WeaverAggregator(Aggregator):
    """P(correct | scores) from a fitted label model, either generation (per task when v1 has one)."""

    name = "weaver"
    is_probability = True

    def __init__(self, model: WeaverModel | WeaverV2Model) -> None:
        self.model = model
        self.version = model.version

    def rank(self, query: QueryScores) -> Ranking:
        if isinstance(self.model, WeaverV2Model):
            v2 = self.model
            posterior, tie = v2.score(v2.align(query.matrix, query.verifier_names), query.answers, query.task)
            note = "label model v2" + (", answer groups" if query.answers is not None else "")
            if query.answers is not None and v2.scores_within(v2.answers_unique(query.task)):
                note += ", within-query contrasts"
            return Ranking(self.name, v2.version, posterior, rank_order(posterior, tie), True, note)
        model = self.model.for_task(query.task)
        matrix = model.align(query.matrix, query.verifier_names)
        posterior, tie = model.score(matrix)
        note = f"task model {model.task}" if model.task else "global model"
        return Ranking(self.name, model.version, posterior, rank_order(posterior, tie), True, note)


class FirstAggregator(Aggregator):
    """The first candidate, as a generator without reranking would return (Pass@1)."""

    name = "first"

    def rank(self, query: QueryScores) -> Ranking:
        scores = np.zeros(query.n_candidates)
        scores[0] = 1.0
        return self._ranking(scores)


class MajorityVoteAggregator(Aggregator):
    """Self-consistency: the share of candidates whose final answer is equivalent to this one's."""

    name = "majority"

    def rank(self, query: QueryScores) -> Ranking:
        if query.answers is None:
            raise ValueError("majority vote needs extracted answers")
        groups = np.array(group_answers(query.answers))
        sizes = np.array([(groups == g).sum() if g >= 0 else 0 for g in groups], dtype=float)
        return self._ranking(sizes / max(query.n_candidates, 1))


class MeanAggregator(Aggregator):
    """Unweighted mean of normalized verifier scores (the paper's naive ensemble)."""

    name = "mean"

    def __init__(self, normalizer: Normalizer | None = None, verifier_names: Sequence[str] | None = None) -> None:
        self.normalizer = normalizer
        self.verifier_names = tuple(verifier_names) if verifier_names is not None else None

    @classmethod
    def fit(cls, queries: Sequence[QueryScores]) -> MeanAggregator:
        names = queries[0].verifier_names
        return cls(Normalizer.fit(np.vstack([q.matrix for q in queries])), names)

    def rank(self, query: QueryScores) -> Ranking:
        if self.normalizer is not None and self.verifier_names == query.verifier_names:
            normalized = self.normalizer.transform(query.matrix)
            note = "fitted normalization"
        else:  # cold start: normalize on this query alone
            normalized = Normalizer.fit(query.matrix).transform(query.matrix)
            note = "per-query normalization"
        return self._ranking(observed_mean(normalized, empty=0.0), note=note)


class BestSingleVerifierAggregator(Aggregator):
    """The one verifier with the best selection accuracy on labelled data (hindsight)."""

    name = "best_single"
    needs_labels = True

    def __init__(self, verifier: str) -> None:
        self.verifier = verifier
        self.version = verifier

    @classmethod
    def fit(cls, queries: Sequence[QueryScores], labels: Sequence[np.ndarray]) -> BestSingleVerifierAggregator:
        names = queries[0].verifier_names
        best_name, best_acc = names[0], -1.0
        for j, name in enumerate(names):
            hits = [
                float(y[rank_order(q.matrix[:, j])[0]] == 1) for q, y in zip(queries, labels, strict=True)
            ]
            acc = float(np.mean(hits))
            if acc > best_acc:
                best_name, best_acc = name, acc
        return cls(best_name)

    def rank(self, query: QueryScores) -> Ranking:
        column = query.verifier_names.index(self.verifier)
        return self._ranking(query.matrix[:, column], note=self.verifier)


class SupervisedAggregator(Aggregator):
    """Logistic regression on normalized scores and missing-value indicators (needs labels)."""

    name = "supervised"
    is_probability = True
    needs_labels = True

    def __init__(self, normalizer: Normalizer, verifier_names: tuple[str, ...], classifier: object) -> None:
        self.normalizer = normalizer
        self.verifier_names = verifier_names
        self.classifier = classifier

    @staticmethod
    def features(normalizer: Normalizer, matrix: np.ndarray) -> np.ndarray:
        normalized = normalizer.transform(matrix)
        missing = np.isnan(normalized)
        return np.hstack([np.where(missing, 0.5, normalized), missing.astype(float)])

    @classmethod
    def fit(cls, queries: Sequence[QueryScores], labels: Sequence[np.ndarray]) -> SupervisedAggregator:
        from sklearn.linear_model import LogisticRegression

        matrix = np.vstack([q.matrix for q in queries])
        y = np.concatenate(labels)
        known = ~np.isnan(y)
        normalizer = Normalizer.fit(matrix)
        x = cls.features(normalizer, matrix)[known]
        classifier = LogisticRegression(class_weight="balanced", max_iter=1000, C=1.0)
        if len(np.unique(y[known])) < 2:
            raise ValueError("supervised aggregator needs both correct and incorrect labelled candidates")
        classifier.fit(x, y[known].astype(int))
        return cls(normalizer, queries[0].verifier_names, classifier)

    def rank(self, query: QueryScores) -> Ranking:
        if query.verifier_names != self.verifier_names:
            raise ValueError("supervised aggregator was fitted on other verifiers")
        proba = self.classifier.predict_proba(self.features(self.normalizer, query.matrix))[:, 1]  # type: ignore[attr-defined]
        return self._ranking(proba)
