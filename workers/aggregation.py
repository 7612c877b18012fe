"""Which aggregator ranks a job's candidates: the one registry of aggregators a worker serves.

Built in: ``weaver`` (the served label model, swapped atomically by online refits; before one exists, the
cold-start aggregator), ``mean``, ``majority`` and ``first``. Plugged in: aggregators such as the distilled
``cross_encoder`` and ``cascade`` (``workers.distilled``), each with an optional scoring plan that chooses
which verifier columns to score, in stages.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

from models.aggregators import (
    FirstAggregator,
    MajorityVoteAggregator,
    MeanAggregator,
    QueryScores,
    Ranking,
    WeaverAggregator,
)
from models.label_models import LabelModel
from workers.diagnostics import Column

RankFunction = Callable[[QueryScores], Ranking]
# An aggregator's scoring plan: (requested verifier names, score one column by name) -> (names, columns)
ScoringPlan = Callable[[list[str], Callable[[str], Awaitable[Column]]], Awaitable[tuple[list[str], list[Column]]]]
BUILTIN = ("weaver", "majority", "mean", "first")
COLD_STARTS = ("mean", "majority")


class UnknownAggregator(ValueError):
    """The job names an aggregator this worker does not serve."""


class AggregatorRegistry:
    """The served label model, the cold-start aggregator and the plugged-in aggregators, in one place."""

    def __init__(self, cold_start: str = "mean", model: LabelModel | None = None) -> None:
        self.model = model
        self.cold_start = cold_start
        self._extra: dict[str, RankFunction] = {}
        self._plans: dict[str, ScoringPlan] = {}

    # -- configuration --------------------------------------------------------------------------
    def set_model(self, model: LabelModel, task: str | None = None) -> None:
        """Swap the label model (one reference: atomic for readers). With ``task``, replace that task's only."""
        if task is None or self.model is None:
            self.model = model
            return
        self.model = replace(self.model, by_task={**self.model.by_task, task: model})  # type: ignore[arg-type]

    def set_cold_start(self, name: str) -> None:
        if name not in COLD_STARTS:
            raise ValueError(f"cold start must be mean or majority, not {name!r}")
        self.cold_start = name

    def register(self, name: str, rank: RankFunction, plan: ScoringPlan | None = None) -> None:
        self._extra[name] = rank
        if plan is not None:
            self._plans[name] = plan

    # -- per job --------------------------------------------------------------------------------
    def check(self, name: str) -> None:
        if name not in BUILTIN and name not in self._extra:
            raise UnknownAggregator(f"aggregator {name!r} is not configured on this worker")

    def plan(self, name: str) -> ScoringPlan | None:
        return self._plans.get(name)

    def rank(self, name: str, task: str | None, query: QueryScores) -> tuple[Ranking, str, LabelModel | None]:
        """(ranking, note for the response, the label model used or None)."""
        if name in self._extra:
            ranking = self._extra[name](query)
            return ranking, ranking.note, None
        if name != "weaver":
            return baseline(name, query), "", None
        root = self.model  # read the reference once: a concurrent swap must not mix two versions
        model = root.for_task(task) if root is not None else None
        cold = self.cold_start
        if model is None:
            return baseline(cold, query), f"cold start: no Weaver model fitted yet; used {cold}", None
        if not any(model.kept[model.verifier_names.index(n)] for n in query.verifier_names
                   if n in model.verifier_names):
            note = f"the Weaver model {model.version} keeps none of these verifiers; used {cold}"
            return baseline(cold, query), note, None
        ranking = WeaverAggregator(model).rank(query)
        return ranking, ranking.note, model

    def cold_start_rank(self, query: QueryScores) -> Ranking:
        return baseline(self.cold_start, query)


def baseline(name: str, query: QueryScores) -> Ranking:
    """The label-free baselines a worker serves without a model: majority vote, first, or the mean."""
    if name == "majority":
        return MajorityVoteAggregator().rank(query)
    if name == "first":
        return FirstAggregator().rank(query)
    return MeanAggregator().rank(query)
