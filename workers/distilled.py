"""Serving the distilled cross-encoder: the ``cross_encoder`` and ``cascade`` aggregators.

- ``cross_encoder``: score only with the cross-encoder verifier and rank by its P(correct).
- ``cascade``: the cross-encoder first; the job's full verifier ensemble (and Weaver) only when the
  cross-encoder's top-two margin or top probability is below the configured thresholds.
  ``aggregator_note`` says which path a request took and why; ``timings`` gets ``cascade_fallback``.

Both plug into the Worker through ``register_aggregator(name, rank, plan)``: ``plan`` decides which
columns to score (in stages), ``rank`` turns the scored columns into a ranking.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from models.aggregators import QueryScores, Ranking, WeaverAggregator, rank_order
from models.distill.cascade import CascadeRule
from models.weaver import WeaverModel

ROUTE_CROSS_ENCODER = "cascade: cross-encoder"
ROUTE_ENSEMBLE = "cascade: full ensemble"

ColumnScorer = Callable[[str], Awaitable[Any]]  # verifier name -> scored column (``workers.diagnostics.Column``)


def cross_encoder_name(config: Any, loaded: Sequence[str]) -> str | None:
    """The configured cross-encoder verifier: ``aggregation.cross_encoder``, else the first of that type."""
    name = getattr(config.aggregation, "cross_encoder", None)
    if name is None:
        name = next((spec.name for spec in config.verifiers if spec.type == "cross_encoder"), None)
    return name if name in loaded else None


class DistilledAggregators:
    """The two aggregators around one cross-encoder verifier column."""

    def __init__(self, verifier: str, rule: CascadeRule, weaver: Callable[[], WeaverModel | None],
                 cold_start: Callable[[QueryScores], Ranking]) -> None:
        self.verifier = verifier
        self.rule = rule
        self.weaver = weaver
        self.cold_start = cold_start

    # -- plans: which columns to score ----------------------------------------------------------
    async def plan_cross_encoder(self, names: list[str], score: ColumnScorer) -> tuple[list[str], list[Any]]:
        return [self.verifier], [await score(self.verifier)]

    async def plan_cascade(self, names: list[str], score: ColumnScorer) -> tuple[list[str], list[Any]]:
        first = await score(self.verifier)
        fallback, _ = self.rule.decide(np.asarray(first.values, dtype=float))
        if not fallback:
            return [self.verifier], [first]
        rest = [n for n in names if n != self.verifier]
        import asyncio

        columns = await asyncio.gather(*(score(n) for n in rest))
        return [self.verifier, *rest], [first, *columns]

    # -- ranking ---------------------------------------------------------------------------------
    def rank_cross_encoder(self, query: QueryScores) -> Ranking:
        probs = self._column(query)
        return Ranking("cross_encoder", self.verifier, probs, rank_order(probs), True,
                       note=f"cross-encoder {self.verifier}")

    def rank_cascade(self, query: QueryScores) -> Ranking:
        probs = self._column(query)
        fallback, why = self.rule.decide(probs)
        if not fallback or query.verifier_names == (self.verifier,):
            ranking = Ranking("cascade", self.verifier, probs, rank_order(probs), True)
            note = f"{ROUTE_CROSS_ENCODER} ({why})" if not fallback else \
                f"{ROUTE_CROSS_ENCODER} ({why}; no other verifier requested)"
            return _with_note(ranking, note)
        keep = [j for j, n in enumerate(query.verifier_names) if n != self.verifier]
        ensemble = QueryScores(query.matrix[:, keep], tuple(query.verifier_names[j] for j in keep),
                               query.answers, query.task)
        model = self.weaver()
        if model is not None:
            inner = WeaverAggregator(model).rank(ensemble)
            used = f"Weaver {inner.version}"
        else:
            inner = self.cold_start(ensemble)
            used = f"cold start {inner.aggregator} (no Weaver model yet)"
        return _with_note(Ranking("cascade", inner.version, inner.scores, inner.order, inner.is_probability),
                          f"{ROUTE_ENSEMBLE} ({why}) -> {used}")

    def _column(self, query: QueryScores) -> np.ndarray:
        if self.verifier not in query.verifier_names:
            raise ValueError(f"cross-encoder verifier {self.verifier!r} was not scored")
        return np.asarray(query.matrix[:, query.verifier_names.index(self.verifier)], dtype=float)


def _with_note(ranking: Ranking, note: str) -> Ranking:
    return Ranking(ranking.aggregator, ranking.version, ranking.scores, ranking.order, ranking.is_probability,
                   note, ranking.extras)


def install(worker: Any) -> str | None:
    """Register ``cross_encoder`` and ``cascade`` on a started worker when a cross-encoder verifier loaded."""
    name = cross_encoder_name(worker.config, worker.available_verifiers())
    if name is None:
        return None
    agg = worker.config.aggregation
    rule = CascadeRule(min_margin=agg.cascade_min_margin, min_confidence=agg.cascade_min_confidence)
    distilled = DistilledAggregators(name, rule, lambda: worker.weaver_model, worker.cold_start_rank)
    worker.register_aggregator("cross_encoder", distilled.rank_cross_encoder, distilled.plan_cross_encoder)
    worker.register_aggregator("cascade", distilled.rank_cascade, distilled.plan_cascade)
    return name
