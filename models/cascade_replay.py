"""Offline replay of the verifier cascade on precomputed scores (``weaver cascade``).

The worker scores a request's verifiers stage by stage (``models.adaptive.Cascade``) and stops once the
label model's posterior says the choice is settled, or the next stage would pass the budget. Here the
same decisions are replayed on score matrices that already hold every verifier's scores: a verifier the
cascade did not run is a NaN column (an abstention) when the served aggregator
(``WeaverAggregator.rank``) ranks the candidates, and the rule (``SettleRule.decide``) and the stop
(``Cascade.stop_reason``) are the ones the worker calls. So the accuracy and compute measured here are
those of the policy served, for the same scores and costs.

A cascade only ever runs a prefix of its stages, so each query's ranking after each prefix is computed
once and shared by every policy of a sweep; the fixed policies ("run the first k stages", the last one
being the full ensemble) are the same prefixes without a rule.

Compute is verifier seconds: a stage's cost (seconds per candidate, summed over its verifiers) times the
query's candidates, summed over the stages run. Costs come from the caller (measured on the worker's
machine, or assumed for simulated verifiers: ``SIMULATED_COSTS``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from models.adaptive import CHEAP_STAGE_S, STOP_EXHAUSTED, Cascade, SettleRule, stage_cost
from models.aggregators import QueryScores, WeaverAggregator
from models.answers import group_answers
from models.label_models import DEFAULT_LABEL_MODEL, LabelModel, fit_named
from models.lookahead import change_probability
from models.metrics import Interval, bootstrap_mean

# Assumed seconds per candidate for the verifiers of ``weaver simulate --regime realistic``. These are NOT
# measurements: simulated verifiers cost nothing. They only set the order and the relative price of the
# stages, by kind: answer agreement and string heuristics almost free, a rule-based check cheap, an
# embedding model a few hundredths of a second, reward models and judges from a tenth of a second (small)
# to a second or more (large) per candidate on a CPU worker.
SIMULATED_COSTS: dict[str, float] = {
    "answer_agreement": 0.0001,  # counting equal final answers
    "length_bias": 0.0001,  # a length heuristic
    "no_signal": 0.001,  # some cheap, useless check
    "math_check": 0.002,  # rule-based arithmetic check
    "consistency": 0.03,  # embedding similarity to the siblings (one small encoder pass)
    "rm_small": 0.1,
    "judge_small": 0.3,
    "prm": 0.4,
    "rm_medium": 0.5,
    "rm_medium_ft": 0.5,
    "rm_large": 1.5,
    "judge_large": 2.0,
}


@dataclass(frozen=True)
class QueryOutcome:
    """One query under one policy."""

    selected: int
    verifiers_run: tuple[str, ...]
    stages_run: int
    compute_s: float  # verifier seconds: stage cost x candidates, summed over the stages run
    stop_reason: str
    correct: float  # 1/0 for the selected candidate's label; NaN when unlabelled
    agrees_with_full: bool  # same answer as the full ensemble's choice (same candidate when it has no answer)


@dataclass(frozen=True)
class PolicyResult:
    """Aggregates of one policy over the queries."""

    name: str
    kind: str  # "fixed" (a prefix of the stages) or "cascade"
    confidence: float | None
    margin: float | None
    budget_s: float | None  # per-candidate seconds cap of the cascade
    max_change: float | None
    accuracy: Interval  # over labelled queries, bootstrap 95% interval
    compute_s: float  # total verifier seconds over all queries
    compute_share: float  # compute_s / the full ensemble's
    agreement: float  # share of queries whose choice agrees with the full ensemble's
    mean_stages: float
    stop_reasons: dict[str, int]
    full_cost_s: float = float("nan")  # the full ensemble's seconds per candidate (budgets are read against it)
    queries: tuple[QueryOutcome, ...] = field(repr=False, default=())


@dataclass
class ReplayTable:
    """Every query's ranking after each prefix of the cost-ordered stages: what a replay reads."""

    queries: Sequence[QueryScores]
    labels: Sequence[np.ndarray | None]
    stages: tuple[tuple[str, ...], ...]
    costs: dict[str, float]
    groups: list[list[int]]
    # rankings[q][k]: (scores, order, is_probability) with stages[:k+1] run
    rankings: list[list[tuple[np.ndarray, int, bool]]]
    cheap_s: float = CHEAP_STAGE_S
    # changes[q][k]: the lookahead's P(the later stages change the choice) after stages[:k+1] (None: no lookahead)
    changes: list[list[float | None]] = field(default_factory=list)

    @property
    def names(self) -> tuple[str, ...]:
        return self.queries[0].verifier_names

    def prefix_cost(self, k: int) -> float:
        """Seconds per candidate of the first ``k`` stages."""
        return float(sum(stage_cost(s, self.costs) for s in self.stages[:k]))

    @property
    def full_cost(self) -> float:
        return self.prefix_cost(len(self.stages))


def _masked(query: QueryScores, run: set[str]) -> QueryScores:
    keep = np.array([n in run for n in query.verifier_names])
    matrix = np.where(keep[None, :], query.matrix, np.nan)
    return QueryScores(matrix=matrix, verifier_names=query.verifier_names, answers=query.answers, task=query.task)


def fit_label_model(queries: Sequence[QueryScores], label_model: str = DEFAULT_LABEL_MODEL) -> LabelModel:
    """The label model fitted label-free on all queries with every verifier, as ``weaver eval`` fits it."""
    tasks = [q.task for q in queries]
    return fit_named(label_model, [q.matrix for q in queries], queries[0].verifier_names,
                     [q.answers for q in queries], tasks, by_task=any(tasks))


def build_table(queries: Sequence[QueryScores], model: LabelModel, costs: Mapping[str, float],
                labels: Sequence[np.ndarray | None] | None = None, cheap_s: float = CHEAP_STAGE_S) -> ReplayTable:
    """Rank every query after each stage prefix with the served aggregator (unrun verifiers abstain)."""
    if not queries:
        raise ValueError("no queries to replay")
    names = queries[0].verifier_names
    if any(q.verifier_names != names for q in queries):
        raise ValueError("every query must carry the same verifiers")
    if labels is not None and len(labels) != len(queries):
        raise ValueError(f"{len(queries)} queries but {len(labels)} label vectors")
    stages = Cascade.plan(names, costs, SettleRule(), None, cheap_s).stages
    aggregator = WeaverAggregator(model)
    groups = [group_answers(q.answers) if q.answers is not None else [-1] * q.n_candidates for q in queries]
    rankings: list[list[tuple[np.ndarray, int, bool]]] = []
    changes: list[list[float | None]] = []
    for query, query_groups in zip(queries, groups, strict=True):
        per_prefix = []
        lookahead: list[float | None] = []
        run: set[str] = set()
        for k, stage in enumerate(stages):
            run |= set(stage)
            masked = _masked(query, run)
            r = aggregator.rank(masked)
            per_prefix.append((r.scores, r.selected, r.is_probability))
            rest = [name for later in stages[k + 1:] for name in later]
            # after the last stage there is nothing to look ahead to: the worker then reads the thresholds too
            lookahead.append(change_probability(model, masked.matrix, names, query_groups, query.task, rest)
                             if rest else None)
        rankings.append(per_prefix)
        changes.append(lookahead)
    return ReplayTable(queries, list(labels) if labels is not None else [None] * len(queries), stages,
                       dict(costs), groups, rankings, cheap_s, changes)


def _correct(y: np.ndarray | None, index: int) -> float:
    if y is None or np.isnan(y[index]):
        return float("nan")
    return float(y[index] == 1)


def _agrees(groups: Sequence[int], a: int, b: int) -> bool:
    return a == b or (groups[a] >= 0 and groups[a] == groups[b])


def _outcome(table: ReplayTable, q: int, k: int, reason: str) -> QueryOutcome:
    """Query ``q`` after the first ``k`` stages (k >= 1), stopped for ``reason``."""
    _, selected, _ = table.rankings[q][k - 1]
    full = table.rankings[q][-1][1]
    n = table.queries[q].n_candidates
    return QueryOutcome(selected, tuple(n for s in table.stages[:k] for n in s), k, table.prefix_cost(k) * n,
                        reason, _correct(table.labels[q], selected), _agrees(table.groups[q], selected, full))


def replay_query(table: ReplayTable, q: int, cascade: Cascade) -> QueryOutcome:
    """The cascade on one query: run stage 0, then ask the rule and the stop before each further stage."""
    scores, _, is_probability = table.rankings[q][0]
    k, spent = 1, stage_cost(cascade.stages[0], cascade.costs)
    while True:
        change = table.changes[q][k - 1] if table.changes else None
        decision = cascade.rule.decide(scores, table.groups[q], is_probability, change)
        reason = cascade.stop_reason(k, spent, decision)
        if reason is not None:
            return _outcome(table, q, k, reason)
        spent += stage_cost(cascade.stages[k], cascade.costs)
        k += 1
        scores, _, is_probability = table.rankings[q][k - 1]


def _summarise(table: ReplayTable, name: str, kind: str, outcomes: list[QueryOutcome], rule: SettleRule | None,
               budget_s: float | None, seed: int) -> PolicyResult:
    hits = np.array([o.correct for o in outcomes])
    hits = hits[~np.isnan(hits)]
    full_s = sum(table.full_cost * q.n_candidates for q in table.queries)
    compute = float(sum(o.compute_s for o in outcomes))
    return PolicyResult(
        name=name, kind=kind,
        confidence=rule.confidence if rule else None, margin=rule.margin if rule else None, budget_s=budget_s,
        max_change=rule.max_change if rule else None,
        accuracy=bootstrap_mean(hits, seed=seed),
        compute_s=compute, compute_share=compute / full_s if full_s > 0 else float("nan"),
        agreement=float(np.mean([o.agrees_with_full for o in outcomes])),
        mean_stages=float(np.mean([o.stages_run for o in outcomes])),
        stop_reasons=dict(Counter(o.stop_reason for o in outcomes)),
        full_cost_s=table.full_cost,
        queries=tuple(outcomes),
    )


def replay_cascade(table: ReplayTable, rule: SettleRule, budget_s: float | None = None, seed: int = 0,
                   name: str | None = None) -> PolicyResult:
    """The cascade with ``rule`` and per-candidate ``budget_s`` on every query of ``table``."""
    cascade = Cascade.plan(table.names, table.costs, rule, budget_s, table.cheap_s)
    if cascade.stages != table.stages:
        raise AssertionError("the cascade planned other stages than the table was ranked on")
    outcomes = [replay_query(table, q, cascade) for q in range(len(table.queries))]
    label = name or cascade_name(rule, budget_s)
    return _summarise(table, label, "cascade", outcomes, rule, budget_s, seed)


def replay_fixed(table: ReplayTable, k: int, seed: int = 0) -> PolicyResult:
    """The first ``k`` stages on every query, no rule (k = len(stages): the full ensemble)."""
    if not 1 <= k <= len(table.stages):
        raise ValueError(f"k must be in 1..{len(table.stages)}")
    outcomes = [_outcome(table, q, k, STOP_EXHAUSTED) for q in range(len(table.queries))]
    return _summarise(table, fixed_name(table, k), "fixed", outcomes, None, None, seed)


def fixed_name(table: ReplayTable, k: int) -> str:
    """``stage 1 (a, b)``, then ``stages 1-k (+ the k-th stage's verifiers)``, and ``full ensemble``."""
    if k == len(table.stages):
        return f"full ensemble (stages 1-{k})"
    if k == 1:
        return f"stage 1 ({', '.join(table.stages[0])})"
    return f"stages 1-{k} (+ {', '.join(table.stages[k - 1])})"


def cascade_name(rule: SettleRule, budget_s: float | None) -> str:
    budget = "none" if budget_s is None else f"{budget_s:.4g} s"
    if rule.max_change is not None:
        return f"cascade lookahead P(change) <= {rule.max_change:g}, budget {budget}"
    margin = "off" if rule.margin > 1 else f"{rule.margin:g}"
    return f"cascade conf {rule.confidence:g}, margin {margin}, budget {budget}"


def sweep(table: ReplayTable, confidences: Sequence[float], margins: Sequence[float],
          budgets: Sequence[float | None], seed: int = 0,
          max_changes: Sequence[float] = ()) -> tuple[list[PolicyResult], list[PolicyResult]]:
    """The fixed policies (every stage prefix) and the cascade over the grid: the lookahead rule for each of
    ``max_changes``, then the threshold rule for confidences x margins, each at every budget."""
    fixed = [replay_fixed(table, k, seed) for k in range(1, len(table.stages) + 1)]
    rules = [SettleRule(max_change=c) for c in max_changes]
    rules += [SettleRule(confidence=c, margin=m, max_change=None) for c in confidences for m in margins]
    cascades = [replay_cascade(table, rule, b, seed) for b in budgets for rule in rules]
    return fixed, cascades


def best_within(cascades: Sequence[PolicyResult], full: PolicyResult, points: float = 0.5,
                max_share: float = 0.4) -> PolicyResult | None:
    """The cheapest cascade whose accuracy is within ``points`` (percentage points) of the full ensemble's
    at no more than ``max_share`` of its compute, or None."""
    ok = [p for p in cascades
          if p.compute_share <= max_share and 100 * (full.accuracy.mean - p.accuracy.mean) <= points]
    return min(ok, key=lambda p: (p.compute_share, -p.accuracy.mean)) if ok else None
