"""Adaptive N against fixed N: candidates sampled per request, at equal agreement with the full-N choice.

Replays sampling rounds (2, 4, 8, ... N, as the worker samples them) on the realistic simulator's candidate
sets: a round "samples" the next candidates of the set in order. Each policy's choice is compared with the
choice the same label model makes on all N candidates (agreement) and with the truth (accuracy).

- fixed k: the first k candidates, for every round size k;
- adaptive, label model: the worker's rule (``models.adaptive.SettleRule`` on the v2 posterior per group, and
  the choice unchanged since the previous round: ``same_choice``);
- adaptive, vote: the same rule without a label model (Adaptive-Consistency's Beta criterion on the answers);
- each adaptive policy again without the same-choice guard (the ablation that justifies it).

Answer agreement is recomputed on each prefix with the service's own function (a candidate's agreement
depends on its siblings); the simulator's embedding-style consistency follows the full set's agreement and
cannot be recomputed on a prefix, so it is left out of every policy. The label model is fitted label-free on
the full sets of the same seed. The last column is the fixed N that reaches the adaptive policy's agreement
(interpolated between round sizes), divided by the adaptive policy's mean candidates.

    PYTHONPATH=. python bench/adaptive_n.py --seeds 0,1,2 --queries 300 --samples 32 [--histograms-only]

For each seed it also prints the label model's P(no answer group right) (first stage and within-query stage)
and the true share of queries without a right candidate, then the prior it scores a set of k candidates
with (``WeaverV2Model.none_right``) beside the true share of queries without a right candidate among their
first k, per round size; the fixed rows carry the expected calibration error
of the chosen candidate's P(correct) (10 bins), which shows how over-confident the model fitted on full sets
is on prefixes.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from models.adaptive import SettleRule, same_choice, sample_rounds
from models.aggregators import QueryScores, WeaverAggregator
from models.answers import agreement_shares, answers_equivalent, group_answers
from models.metrics import expected_calibration_error
from models.simulate_realistic import RealisticConfig, simulate_realistic
from models.weaver_v2 import WeaverV2Config, WeaverV2Model


@dataclass
class Tally:
    candidates: list[int] = field(default_factory=list)
    agree: list[float] = field(default_factory=list)
    correct: list[float] = field(default_factory=list)
    top: list[float] = field(default_factory=list)  # the chosen candidate's P(correct) (fixed policies)

    def add(self, k: int, agree: bool, correct: bool, top: float | None = None) -> None:
        self.candidates.append(k)
        self.agree.append(float(agree))
        self.correct.append(float(correct))
        if top is not None:
            self.top.append(top)


def prefix(query: QueryScores, k: int, agreement_column: int) -> QueryScores:
    matrix = query.matrix[:k].copy()
    answers = (query.answers or ())[:k]
    matrix[:, agreement_column] = agreement_shares(answers)
    return QueryScores(matrix, query.verifier_names, tuple(answers), query.task)


def same_answer(a: str | None, b: str | None, i: int, j: int) -> bool:
    if a is None or b is None:
        return i == j
    return answers_equivalent(a, b)


def replay(seed: int, n_queries: int, n_samples: int, rule: SettleRule,
           config: WeaverV2Config | None = None) -> dict[str, Tally]:
    sim = simulate_realistic(RealisticConfig(n_queries=n_queries, n_samples=n_samples, seed=seed))
    keep = [j for j, name in enumerate(sim.verifier_names) if name != "consistency"]
    names = tuple(sim.verifier_names[j] for j in keep)
    queries = [QueryScores(cs.score_matrix(sim.verifier_names)[:, keep], names, tuple(a))
               for cs, a in zip(sim.sets, sim.answers, strict=True)]
    model = WeaverV2Model.fit([q.matrix for q in queries], names, [q.answers for q in queries], config=config)
    report = model.report
    print(f"seed {seed}: P(no answer group right) first stage {report.none_right:.3f}, within-query stage "
          f"{report.within_none_right:.3f}; queries without a right candidate among {n_samples}: "
          f"{np.mean([1.0 - y.max() for y in sim.labels]):.3f}")
    print(f"seed {seed}: prior P(no answer right) by candidates k, label-free (truth: share of queries without "
          "a right candidate among their first k): " + ", ".join(
              f"{k}: {model.none_right(k):.3f} ({np.mean([1.0 - y[:k].max() for y in sim.labels]):.3f})"
              for k in sample_rounds(n_samples)))
    aggregator = WeaverAggregator(model)
    agreement = names.index("answer_agreement")
    rounds = sample_rounds(n_samples)
    tallies: dict[str, Tally] = {f"fixed {k}": Tally() for k in rounds}
    for kind in ("label model", "vote"):
        tallies[f"adaptive, {kind}"] = Tally()
        tallies[f"adaptive, {kind}, without the same-choice guard"] = Tally()
    for query, labels in zip(queries, sim.labels, strict=True):
        full = aggregator.rank(query).selected
        full_answer = (query.answers or ())[full]
        by_round = {}
        for k in rounds:
            part = prefix(query, k, agreement)
            ranking = aggregator.rank(part)
            chosen = ranking.selected
            by_round[k] = (chosen, ranking.scores, group_answers(part.answers or ()))
            agree = same_answer((part.answers or ())[chosen], full_answer, chosen, full)
            tallies[f"fixed {k}"].add(k, agree, bool(labels[chosen]), float(ranking.scores[chosen]))
        deciders = {"label model": lambda s, g: rule.decide(s, g, True), "vote": lambda s, g: rule.decide_vote(g)}
        for kind, decide in deciders.items():
            for guarded in (True, False):
                previous = None
                for k in rounds:
                    chosen, scores, groups = by_round[k]
                    decision = decide(scores, groups)
                    if decision.settled and (same_choice(previous, decision) or not guarded) or k == rounds[-1]:
                        break
                    previous = decision
                agree = same_answer((query.answers or ())[chosen], full_answer, chosen, full)
                name = f"adaptive, {kind}" + ("" if guarded else ", without the same-choice guard")
                tallies[name].add(k, agree, bool(labels[chosen]))
    return tallies


def fixed_n_for(agreement: float, fixed: Sequence[tuple[int, float]]) -> float:
    """The fixed N reaching ``agreement``, interpolated in log2(N) between round sizes."""
    for (k0, a0), (k1, a1) in zip(fixed, fixed[1:], strict=False):
        if a0 <= agreement <= a1 and a1 > a0:
            t = (agreement - a0) / (a1 - a0)
            return float(2 ** (np.log2(k0) + t * (np.log2(k1) - np.log2(k0))))
    return float(fixed[-1][0]) if agreement > fixed[-1][1] else float(fixed[0][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--confidence", type=float, default=SettleRule.confidence)
    parser.add_argument("--margin", type=float, default=SettleRule.margin, help="default: off (inf)")
    parser.add_argument("--vote-confidence", type=float, default=SettleRule.vote_confidence)
    parser.add_argument("--histograms-only", action="store_true",
                        help="fit the label model without its within-query stage (WeaverV2Config(within_query=False))")
    args = parser.parse_args()
    config = WeaverV2Config(within_query=False) if args.histograms_only else None
    rule = SettleRule(args.confidence, args.margin, args.vote_confidence)
    pooled: dict[str, Tally] = {}
    for seed in [int(s) for s in args.seeds.split(",") if s]:
        for name, tally in replay(seed, args.queries, args.samples, rule, config).items():
            target = pooled.setdefault(name, Tally())
            target.candidates += tally.candidates
            target.agree += tally.agree
            target.correct += tally.correct
            target.top += tally.top
    fixed = [(int(np.mean(t.candidates)), float(np.mean(t.agree))) for n, t in pooled.items() if n.startswith("fixed")]
    print(f"seeds {args.seeds}, {args.queries} queries x {args.samples} candidates each; rule: confidence "
          f"{rule.confidence}, margin {rule.margin}, vote confidence {rule.vote_confidence}\n")
    print("| policy | candidates per request (mean) | agreement with full-N choice % | accuracy % "
          "| fixed N at equal agreement / mean candidates | chosen candidate's ECE |")
    print("|---|---|---|---|---|---|")
    for name, t in pooled.items():
        mean_k = float(np.mean(t.candidates))
        agree = float(np.mean(t.agree))
        ratio = "-" if name.startswith("fixed") else f"{fixed_n_for(agree, fixed) / mean_k:.2f}x"
        ece = f"{expected_calibration_error(np.array(t.top), np.array(t.correct)):.3f}" if t.top else "-"
        print(f"| {name} | {mean_k:.1f} | {100 * agree:.1f} | {100 * float(np.mean(t.correct)):.1f} | {ratio} "
              f"| {ece} |")


if __name__ == "__main__":
    main()
