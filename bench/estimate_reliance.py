"""Which label-free estimates rest on one verifier, where they are right and where they are off.

    python bench/estimate_reliance.py [--seeds 0,1,2] [--samples 32,4] [--queries 300] [--resamples 5]
        [--dev-scores .cache/scores-gsm8k_gpt3_dev.jsonl] [--dev-verifiers cpu-default]

For each realistic-simulator world (and the GSM8K dev set when its score cache exists) it prints the v2
class balance estimated without labels beside the truth, whether it is flagged "not identified", and how
many estimates (the balance and each verifier's accuracy) rest on one verifier (``models.estimates``:
refitted without it they move by more than 0.05, or the others identify nothing), with the largest such
move. Labels are read for the truth column only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.dev_set import dev_queries, dev_set_path  # noqa: E402
from models.estimates import LabelFreeEstimates, label_free_estimates  # noqa: E402
from models.simulate_realistic import RealisticConfig, simulate_realistic  # noqa: E402


def summary(name: str, estimates: LabelFreeEstimates, truth: float) -> str:
    balance = estimates.class_balance
    resting = [e for e in (balance, *estimates.accuracies) if e.rests_on is not None]
    moves = [abs(e.without - e.value) for e in resting if np.isfinite(e.without)]
    on = sorted({e.rests_on for e in resting if e.rests_on is not None})
    largest = f"{max(moves):.3f}" if moves else ("unidentified" if resting else "-")
    return (f"| {name} | {balance.value:.3f} | {truth:.3f} | {'yes' if balance.identified else 'no'} | "
            f"{len(resting)} of {1 + len(estimates.accuracies)} | {', '.join(on) or '-'} | {largest} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--samples", default="32,4")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--resamples", type=int, default=5)
    parser.add_argument("--dev-scores", type=Path, default=Path(".cache/scores-gsm8k_gpt3_dev.jsonl"))
    parser.add_argument("--dev-verifiers", default="cpu-default")
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()
    print("| data | class balance, estimated | truth | balance identified | estimates resting on one verifier "
          "| on | largest move without it |")
    print("|---|---|---|---|---|---|---|")
    for samples in (int(s) for s in args.samples.split(",") if s.strip()):
        for seed in (int(s) for s in args.seeds.split(",") if s.strip()):
            sim = simulate_realistic(RealisticConfig(n_queries=args.queries, n_samples=samples, seed=seed))
            matrices = [cs.score_matrix(sim.verifier_names) for cs in sim.sets]
            estimates = label_free_estimates(matrices, sim.verifier_names, sim.answers, n_resamples=args.resamples,
                                             seed=seed)
            print(summary(f"simulator, {samples} candidates, seed {seed}", estimates,
                          float(np.concatenate(sim.labels).mean())), flush=True)
    data = args.data or dev_set_path()
    if not (args.dev_scores.exists() and data.exists()):
        print(f"\n(dev set skipped: no score cache at {args.dev_scores} or no data at {data})")
        return
    queries, labels = dev_queries(args.dev_scores, data, args.dev_verifiers)
    estimates = label_free_estimates([q.matrix for q in queries], queries[0].verifier_names,
                                     [q.answers for q in queries], [q.task for q in queries],
                                     n_resamples=args.resamples)
    truth = float(np.nanmean(np.concatenate([y for y in labels if y is not None])))
    print(summary(f"dev set, {args.dev_verifiers}", estimates, truth))


if __name__ == "__main__":
    main()
