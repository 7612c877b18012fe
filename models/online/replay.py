"""Replay a labelled candidate-set file through the online learner, one query at a time.

The learner sees score matrices only; labels are read here, after each refit, to measure what the
online model would select on the whole set (and prequentially, on the queries as they arrived).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.aggregators import Aggregator, MajorityVoteAggregator, MeanAggregator, QueryScores, WeaverAggregator
from models.online import (
    ColdStart,
    GuardrailConfig,
    OnlineConfig,
    OnlineLearner,
    RefitPolicy,
    ScoreRecord,
    estimated_accuracies,
    positive_rates,
)
from models.weaver import WeaverConfig, WeaverModel


@dataclass(frozen=True)
class ReplayPoint:
    seen: int  # queries streamed so far
    outcome: str  # "published" / "rejected"
    reasons: tuple[str, ...]
    version: str | None  # the serving version after this refit
    whole_set_accuracy: float  # the serving model's selection accuracy on every query of the file
    prequential_accuracy: float  # share of the queries seen so far whose served selection was correct
    estimated_accuracy: dict[str, float]  # per verifier, of the serving model
    positive_rate: dict[str, float]  # per verifier, over the refit window
    drift: float


@dataclass(frozen=True)
class ReplayResult:
    points: tuple[ReplayPoint, ...]
    online_accuracy: float  # the final serving model on the whole set
    offline_accuracy: float  # one fit on the whole set, the same way
    prequential_accuracy: float
    online_model: WeaverModel | None
    offline_model: WeaverModel
    order: tuple[int, ...]


def selection_accuracy(aggregator: Aggregator, queries: Sequence[QueryScores], labels: Sequence[np.ndarray]) -> float:
    hits = [float(y[aggregator.rank(q).selected] == 1) for q, y in zip(queries, labels, strict=True)]
    return float(np.mean(hits)) if hits else float("nan")


def _cold_aggregator(cold_start: ColdStart, query: QueryScores) -> Aggregator:
    if cold_start.prior == "majority" and query.answers is not None:
        return MajorityVoteAggregator()
    return MeanAggregator()


def replay(
    queries: Sequence[QueryScores],
    labels: Sequence[np.ndarray],
    refit_every: int = 50,
    seed: int = 0,
    window: int | None = None,
    weaver: WeaverConfig | None = None,
    guardrails: GuardrailConfig | None = None,
    cold_start: ColdStart | None = None,
) -> ReplayResult:
    """Stream ``queries`` in a seeded random order; refit every ``refit_every`` queries."""
    config = OnlineConfig(
        policy=RefitPolicy(every_queries=refit_every, every_seconds=float("inf"),
                           window=window or len(queries), by_task=False),
        guardrails=guardrails or GuardrailConfig(),
        weaver=weaver or WeaverConfig(),
        cold_start=cold_start or ColdStart(),
        ring_capacity=max(window or len(queries), 1),
    )
    learner = OnlineLearner(config)
    order = tuple(int(i) for i in np.random.default_rng(seed).permutation(len(queries)))
    hits: list[float] = []
    points: list[ReplayPoint] = []
    for seen, q in enumerate(order, start=1):
        query = queries[q]
        served = learner.current
        aggregator = WeaverAggregator(served) if served is not None else _cold_aggregator(config.cold_start, query)
        hits.append(float(labels[q][aggregator.rank(query).selected] == 1))
        learner.observe(ScoreRecord(matrix=query.matrix, verifier_names=query.verifier_names, task=query.task,
                                    request_id=str(q)))
        outcome = learner.maybe_refit()
        if outcome is None:
            continue
        model = learner.current
        points.append(ReplayPoint(
            seen=seen, outcome=outcome.outcome, reasons=outcome.reasons,
            version=model.version if model is not None else None,
            whole_set_accuracy=selection_accuracy(WeaverAggregator(model), queries, labels) if model else float("nan"),
            prequential_accuracy=float(np.mean(hits)),
            estimated_accuracy=estimated_accuracies(model) if model is not None else {},
            positive_rate=positive_rates(outcome.model), drift=outcome.drift.distance,
        ))
    offline = WeaverModel.fit([q.matrix for q in queries], queries[0].verifier_names, weaver)
    final = learner.current
    return ReplayResult(
        points=tuple(points),
        online_accuracy=selection_accuracy(WeaverAggregator(final), queries, labels) if final else float("nan"),
        offline_accuracy=selection_accuracy(WeaverAggregator(offline), queries, labels),
        prequential_accuracy=float(np.mean(hits)) if hits else float("nan"),
        online_model=final,
        offline_model=offline,
        order=order,
    )
