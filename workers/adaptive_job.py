"""Compute by need for one job: sample in rounds, verify in cost-ordered stages, stop once the choice is settled.

The decisions come from ``models.adaptive`` (the same code ``weaver cascade`` replays offline):

- **Verifier cascade.** Each round's candidates are verified stage by stage, cheapest first (seconds per
  candidate measured by each verifier's batcher). After a stage the served aggregator ranks what has been
  scored (verifiers not run abstain) and the settle rule reads its posterior per answer group; a settled
  choice, or a stage past the request's budget, ends verification. Without a probabilistic aggregator (no
  fitted label model, or a baseline aggregator) there is nothing to read, so every verifier runs at once.
- **Adaptive N.** Chat candidates are sampled in rounds (2, 4, 8, ... up to ``n_candidates``) on the same
  prompt; each round is verified through the cascade, and the same rule decides whether to sample more: it
  stops on a settled decision whose choice is the previous round's (``models.adaptive.same_choice``).
  Without a label model the rule reads the answer vote (Adaptive-Consistency's Beta criterion).

Every round re-verifies all candidates so far: pair verifiers answer earlier candidates from the score
cache, group verifiers (answer agreement, embedding consistency) must see the new siblings. The compute
report counts only the work that was new (``ComputeInfo``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from models.adaptive import (
    MARGIN_OFF,
    STOP_BUDGET,
    STOP_DISABLED,
    STOP_EXHAUSTED,
    STOP_NO_MODEL,
    STOP_SETTLED,
    Cascade,
    Decision,
    SettleRule,
    same_choice,
    sample_rounds,
    stage_cost,
)
from workers.config import AdaptiveConfig
from workers.contract import ComputeInfo, GenerationInfo, Job
from workers.diagnostics import Column


@dataclass
class Candidates:
    """The candidates of a job so far (generated in rounds, or given)."""

    texts: list[str] = field(default_factory=list)
    finish_reasons: list[str | None] = field(default_factory=list)
    completion_tokens: list[int] = field(default_factory=list)
    generation: GenerationInfo | None = None

    def extend(self, more: Candidates) -> None:
        self.texts += more.texts
        self.finish_reasons += more.finish_reasons
        self.completion_tokens += more.completion_tokens
        if more.generation is None:
            return
        if self.generation is None:
            self.generation = more.generation.model_copy()
            return
        info, new = self.generation, more.generation
        info.returned += new.returned
        info.prompt_tokens = max(info.prompt_tokens, new.prompt_tokens)  # usage counts the prompt once
        info.completion_tokens += new.completion_tokens
        info.latency_s += new.latency_s
        info.reason = new.reason or info.reason


@dataclass(frozen=True)
class Policy:
    """What one job does: resolved from the request's overrides and the worker's defaults."""

    cascade: bool
    adaptive_n: bool
    rule: SettleRule
    budget_s: float | None
    first_round: int
    cheap_stage_s: float

    @classmethod
    def resolve(cls, job: Job, config: AdaptiveConfig) -> Policy:
        cascade = config.cascade if job.cascade is None else job.cascade
        adaptive = job.kind == "generate" and (config.adaptive_n if job.adaptive_n is None else job.adaptive_n)
        rule = SettleRule(config.confidence, MARGIN_OFF if config.margin is None else config.margin,
                          config.vote_confidence, config.max_change)
        budget = config.budget_s if job.budget_s is None else job.budget_s
        return cls(cascade, adaptive, rule, budget, config.first_round, config.cheap_stage_s)


# (start index, count) -> the new candidates
GenerateRound = Callable[[int, int], Awaitable[Candidates]]
ScoreColumn = Callable[[str, Sequence[str]], Awaitable[Column]]
# (verifier names, their columns, candidate texts, verifiers not yet run) -> (the rule's decision, whether it
# read a posterior)
Decide = Callable[[list[str], list[Column], Sequence[str], list[str]], tuple[Decision, bool]]


@dataclass
class Outcome:
    candidates: Candidates
    columns: list[Column]  # one per requested verifier, in request order; skipped ones are all-NaN
    skipped: dict[str, str]  # verifier -> why it did not run
    compute: ComputeInfo
    generation_s: float
    verification_s: float


class ComputeLoop:
    """Runs one job's rounds and stages. The worker supplies generation, scoring and ranking."""

    def __init__(self, policy: Policy, names: list[str], costs: dict[str, float], group_verifiers: set[str],
                 generate: GenerateRound, score: ScoreColumn, decide: Decide, posterior: bool = True) -> None:
        """``posterior``: whether the job's aggregator can give one (a fitted label model behind ``weaver``);
        without it the cascade has nothing to read and runs every verifier at once."""
        self.policy = policy
        self.posterior = posterior
        self.names = names
        self.costs = costs
        self.group_verifiers = group_verifiers
        self.generate = generate
        self.score = score
        self.decide = decide
        self._scored: dict[str, int] = {}  # pair verifier -> candidates it has scored (a prefix)
        self.calls = 0
        self.spent_s = 0.0

    async def run(self, n_requested: int) -> Outcome:
        policy = self.policy
        rounds = sample_rounds(n_requested, policy.first_round) if policy.adaptive_n else [n_requested]
        candidates = Candidates()
        done_rounds: list[int] = []
        generation_s = verification_s = 0.0
        sampling_stop: str | None = None
        sampling_detail = ""
        previous: Decision | None = None
        for index, target in enumerate(rounds):
            t = time.perf_counter()
            before = len(candidates.texts)
            more = await self.generate(before, target - before)
            generation_s += time.perf_counter() - t
            short = len(more.texts) < target - before  # the backend gave fewer (and said why): no more rounds
            candidates.extend(more)
            done_rounds.append(len(candidates.texts))
            t = time.perf_counter()
            columns, skipped, stop, decision, stages = await self._verify(candidates.texts)
            verification_s += time.perf_counter() - t
            if not policy.adaptive_n:
                break
            # more samples is another question than more verifiers: the posterior rule on everything scored
            sampling, _ = self.decide(self.names, [columns[n] for n in self.names], candidates.texts, [])
            sampling_detail = sampling.reason
            if sampling.settled and same_choice(previous, sampling):
                sampling_stop = STOP_SETTLED
                break
            previous = sampling
            if index == len(rounds) - 1 or short:
                sampling_stop = STOP_EXHAUSTED
                break
        ran = [n for n in self.names if n not in skipped]
        full = sum(self.costs.get(n, 0.0) for n in self.names) * n_requested
        compute = ComputeInfo(
            cascade=policy.cascade, adaptive_n=policy.adaptive_n, candidates_requested=n_requested,
            candidates_generated=len(candidates.texts), rounds=done_rounds, stages=[list(s) for s in stages],
            verifiers_run=ran, verifiers_skipped=[n for n in self.names if n in skipped],
            verifier_calls=self.calls, verifier_seconds=round(self.spent_s, 6),
            full_verifier_seconds=round(full, 6), budget_s=policy.budget_s, stop_reason=stop,
            sampling_stop_reason=sampling_stop, detail=decision.reason if decision is not None else "",
            sampling_detail=sampling_detail)
        return Outcome(candidates, [columns[n] for n in self.names], skipped, compute,
                       generation_s, verification_s)

    async def _verify(self, texts: Sequence[str]) -> tuple[dict[str, Column], dict[str, str], str,
                                                           Decision | None, tuple[tuple[str, ...], ...]]:
        """One round's verification: (columns by name, skipped -> why, stop reason, last decision, stages)."""
        policy = self.policy
        if not policy.cascade:
            columns = await self._run_stage(self.names, texts)
            return columns, {}, STOP_DISABLED, None, (tuple(self.names),)
        cascade = Cascade.plan(self.names, self.costs, policy.rule, policy.budget_s, policy.cheap_stage_s)
        if not self.posterior:  # nothing to read: every stage the budget affords, at once
            return await self._without_posterior(cascade, 0, 0.0, {}, texts, None)
        columns = await self._run_stage(cascade.stages[0], texts)
        spent = stage_cost(cascade.stages[0], self.costs)
        index = 1
        while True:
            ran = [n for n in self.names if n in columns]
            rest = [n for stage in cascade.stages[index:] for n in stage]
            decision, is_probability = self.decide(ran, [columns[n] for n in ran], texts, rest)
            if not is_probability:
                return await self._without_posterior(cascade, index, spent, columns, texts, decision)
            stop = cascade.stop_reason(index, spent, decision)
            if stop is not None:
                break
            columns.update(await self._run_stage(cascade.stages[index], texts))
            spent += stage_cost(cascade.stages[index], self.costs)
            index += 1
        if stop == STOP_BUDGET:
            why = f"cascade: stage {index + 1} would pass the budget of {policy.budget_s} s per candidate"
        else:
            why = f"cascade settled after stage {index} ({decision.reason})"
        skipped = {n: why for n in self.names if n not in columns}
        for name in skipped:
            columns[name] = Column(name, [float("nan")] * len(texts), 0.0, None, None)
        return columns, skipped, stop, decision, cascade.stages

    async def _without_posterior(self, cascade: Cascade, index: int, spent: float, columns: dict[str, Column],
                                 texts: Sequence[str], decision: Decision | None) -> tuple[
            dict[str, Column], dict[str, str], str, Decision | None, tuple[tuple[str, ...], ...]]:
        """No posterior to read (no label model): run the stages from ``index`` on together, as many as the
        budget affords (the first stage always runs); the budget is a cap whether or not a model decides."""
        run: list[str] = []
        for k in range(index, len(cascade.stages)):
            cost = stage_cost(cascade.stages[k], self.costs)
            if k > 0 and cascade.budget_s is not None and spent + cost > cascade.budget_s:
                break
            run += cascade.stages[k]
            spent += cost
        columns = {**columns, **await self._run_stage(run, texts)}
        why = f"cascade: no label model to read; it would pass the budget of {cascade.budget_s} s per candidate"
        skipped = {n: why for n in self.names if n not in columns}
        for name in skipped:
            columns[name] = Column(name, [float("nan")] * len(texts), 0.0, None, None)
        return columns, skipped, STOP_BUDGET if skipped else STOP_NO_MODEL, decision, cascade.stages

    async def _run_stage(self, stage: Sequence[str], texts: Sequence[str]) -> dict[str, Column]:
        results = await asyncio.gather(*(self.score(name, texts) for name in stage))
        n = len(texts)
        for name in stage:
            new = n if name in self.group_verifiers else n - self._scored.get(name, 0)
            if name not in self.group_verifiers:
                self._scored[name] = n
            self.calls += n
            self.spent_s += self.costs.get(name, 0.0) * max(new, 0)
        return dict(zip(stage, results, strict=True))


__all__ = ["Candidates", "ComputeLoop", "Outcome", "Policy"]
