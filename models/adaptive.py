"""Compute by need: when is a query's choice settled, which verifiers run in which stage, how many samples.

The worker (verifier cascade, adaptive N) and the offline replay (``weaver cascade``) take their decisions
here, so a policy measured offline is the policy served. Pure numpy; no web or worker code.

- ``plan_stages``: verifiers ordered by measured cost, cheap ones together in the first stage.
- ``SettleRule.decide``: after a stage (or a sampling round), is the top answer group settled? With a
  probabilistic aggregator (the label model) the rule reads its posterior per answer group; without one
  (cold start) it reads the answer vote as Adaptive-Consistency does (Aggarwal et al., 2023): the
  probability, under a uniform Beta prior, that the leading answer's share exceeds the runner-up's.
- ``sample_rounds``: the cumulative candidate counts of adaptive N (2, 4, 8, ... up to N); sampling stops on a
  settled decision whose choice is the previous round's (``same_choice``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.special import betainc

CHEAP_STAGE_S = 0.005  # verifiers at most this many seconds per candidate share the first stage

STOP_SETTLED = "settled"  # the rule says the choice will not change
STOP_BUDGET = "budget"  # the next stage (or round) would pass the compute budget
STOP_EXHAUSTED = "exhausted"  # every stage ran (or N candidates were sampled) without settling
STOP_DISABLED = "disabled"  # the request or the configuration turned the policy off
STOP_NO_MODEL = "no_model"  # the cascade needs a posterior; without a label model every verifier runs

MARGIN_OFF = math.inf  # a ``SettleRule.margin`` no lead reaches: the margin criterion is off


@dataclass(frozen=True)
class Decision:
    """Whether to stop, why (for the response's diagnostics), and the numbers the rule looked at."""

    settled: bool
    reason: str
    top: float  # P(top group right), or P(the leading answer leads) for the vote
    margin: float  # top minus the best candidate outside the top group (label model only; NaN for the vote)
    selected: int = -1  # the candidate the rule read as the choice
    group: int = -1  # its answer group (ids from ``group_answers``: stable as candidates are appended)


@dataclass(frozen=True)
class SettleRule:
    """Settled when the top group's probability reaches ``confidence`` or leads the runner-up by ``margin``.

    ``vote_confidence`` is the threshold of the label-free vote rule (0.95 as in Adaptive-Consistency).
    With a lookahead (``max_change``, the served default) the thresholds only decide where none is known
    (v1 models, the last stage). Evidence for the defaults, from ``weaver cascade``'s sweep
    (docs/adaptive-compute.md): the lookahead at 0.01 kept every choice of the full ensemble on three
    realistic-simulator seeds at 37.1% of its compute and on the GSM8K dev set at 38.0%; the best threshold
    setting, confidence 0.95 without a margin criterion, lost 0.33 points at 39.5% on the simulator.
    """

    confidence: float = 0.95
    margin: float = MARGIN_OFF
    vote_confidence: float = 0.95
    # with a lookahead (``models.lookahead.change_probability``): settled when the verifiers not yet run would
    # change the top answer group with at most this probability; it replaces confidence and margin
    max_change: float | None = 0.01

    def decide(self, scores: np.ndarray, groups: Sequence[int], is_probability: bool,
               change: float | None = None) -> Decision:
        """``scores``: per candidate, P(correct) when ``is_probability``; ``groups`` from ``group_answers``;
        ``change``: the lookahead's P(the choice changes if the remaining verifiers ran), when known."""
        if is_probability:
            decision = self._decide_posterior(np.asarray(scores, dtype=float), groups)
            if change is None or self.max_change is None or not math.isfinite(decision.top):
                return decision
            settled = change <= self.max_change
            why = f"P(the rest would change the answer) {change:.3f} {'<=' if settled else '>'} {self.max_change}"
            return replace(decision, settled=settled, reason=why)
        return self.decide_vote(groups)

    def _decide_posterior(self, scores: np.ndarray, groups: Sequence[int]) -> Decision:
        finite = np.where(np.isfinite(scores), scores, -np.inf)
        if finite.size == 0 or not np.isfinite(finite).any():
            return Decision(False, "no usable posterior", float("nan"), float("nan"))
        best = int(np.argmax(finite))
        top = float(finite[best])
        group = np.asarray(groups, dtype=np.int64) if len(groups) == finite.size else np.full(finite.size, -1)
        same = (group == group[best]) & (group[best] >= 0)
        same[best] = True
        rest = finite[~same]
        runner_up = float(rest.max()) if rest.size and np.isfinite(rest.max()) else 0.0
        margin = top - runner_up
        chosen = {"selected": best, "group": int(group[best])}
        if top >= self.confidence:
            return Decision(True, f"P(top answer) {top:.3f} >= {self.confidence}", top, margin, **chosen)
        if margin >= self.margin:
            return Decision(True, f"lead over the runner-up {margin:.3f} >= {self.margin}", top, margin, **chosen)
        return Decision(False, f"P(top answer) {top:.3f}, lead {margin:.3f}", top, margin, **chosen)

    def decide_vote(self, groups: Sequence[int]) -> Decision:
        lead = vote_lead_probability(groups)
        answered = [g for g in groups if g >= 0]
        group = int(np.bincount(np.array(answered, dtype=np.int64)).argmax()) if answered else -1
        selected = list(groups).index(group) if answered else 0
        if lead >= self.vote_confidence:
            return Decision(True, f"P(leading answer leads) {lead:.3f} >= {self.vote_confidence}", lead,
                            float("nan"), selected, group)
        return Decision(False, f"P(leading answer leads) {lead:.3f}", lead, float("nan"), selected, group)


def same_choice(before: Decision | None, now: Decision) -> bool:
    """Whether two rounds chose the same answer (the same group, or the same candidate when it has no answer).

    Adaptive N stops only on a settled decision whose choice survived the last round: on the realistic
    simulator this guard took the label-model rule from 74.8% to 90.4% agreement with the full-N choice
    (6.5 -> 12.0 candidates of 32; ``bench/adaptive_n.py``), because small-set posteriors are over-confident.
    """
    if before is None:
        return False
    if now.group >= 0:
        return now.group == before.group
    return now.selected == before.selected


def vote_lead_probability(groups: Sequence[int]) -> float:
    """P(the most frequent answer's share exceeds the runner-up's) under Beta(v1 + 1, v2 + 1).

    Candidates without an answer (group -1) count for no answer. 0 when no candidate has an answer.
    """
    counts = np.bincount(np.array([g for g in groups if g >= 0], dtype=np.int64))
    if counts.size == 0:
        return 0.0
    ordered = np.sort(counts)[::-1]
    first = float(ordered[0])
    second = float(ordered[1]) if ordered.size > 1 else 0.0
    return float(1.0 - betainc(first + 1.0, second + 1.0, 0.5))


def plan_stages(names: Sequence[str], costs: Mapping[str, float], cheap_s: float = CHEAP_STAGE_S) -> list[list[str]]:
    """Stages from cheap to expensive: every verifier costing <= ``cheap_s`` per candidate in the first one
    (waiting for a decision would cost more than running them), then one stage per verifier by cost.
    A verifier without a measured cost counts as the most expensive (it runs last)."""
    order = sorted(names, key=lambda n: (costs.get(n, float("inf")), list(names).index(n)))
    cheap = [n for n in order if costs.get(n, float("inf")) <= cheap_s]
    stages = [cheap] if cheap else []
    stages += [[n] for n in order if n not in cheap]
    return stages


def stage_cost(stage: Sequence[str], costs: Mapping[str, float]) -> float:
    """Seconds per candidate for one stage; an unmeasured verifier adds nothing it can be charged for yet."""
    return float(sum(c for c in (costs.get(n, 0.0) for n in stage) if np.isfinite(c)))


@dataclass(frozen=True)
class Cascade:
    """The verifier cascade of one request: stages, their costs, the rule and the budget.

    The caller scores ``stages[0]`` (always: a request gets at least its cheapest verifiers), asks the
    rule, and calls ``stop_reason`` before each further stage; ``None`` means run ``stages[index]``.
    """

    stages: tuple[tuple[str, ...], ...]
    costs: Mapping[str, float]
    rule: SettleRule
    budget_s: float | None = None  # verifier seconds per candidate; None: no cap

    @classmethod
    def plan(cls, names: Sequence[str], costs: Mapping[str, float], rule: SettleRule,
             budget_s: float | None = None, cheap_s: float = CHEAP_STAGE_S) -> Cascade:
        stages = tuple(tuple(stage) for stage in plan_stages(names, costs, cheap_s))
        return cls(stages, dict(costs), rule, budget_s)

    def stop_reason(self, index: int, spent_s: float, decision: Decision) -> str | None:
        """Why to stop before running ``stages[index]`` (``spent_s`` per candidate so far), or None to run it."""
        if decision.settled:
            return STOP_SETTLED
        if index >= len(self.stages):
            return STOP_EXHAUSTED
        if self.budget_s is not None and spent_s + stage_cost(self.stages[index], self.costs) > self.budget_s:
            return STOP_BUDGET
        return None


def sample_rounds(n_max: int, first: int = 2) -> list[int]:
    """Cumulative candidate counts per round: ``first``, then doubling, ending exactly at ``n_max``."""
    if n_max <= first:
        return [n_max]
    out = [first]
    while out[-1] < n_max:
        out.append(min(out[-1] * 2, n_max))
    return out
