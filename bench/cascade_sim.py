"""The verifier cascade on the realistic simulator, over several seeds: what ``weaver cascade`` prints per file,
summarised per setting across seeds.

    python bench/cascade_sim.py [--seeds 0,1,2] [--queries 300] [--samples 32]

Per seed: ``weaver simulate --regime realistic``'s world, weaver-v2 fitted label-free on all its queries,
the assumed per-verifier costs (``models.cascade_replay.SIMULATED_COSTS``: assumptions, simulated verifiers
cost nothing) and ``weaver cascade``'s default sweep. Prints, per policy, the accuracy difference to the full
ensemble (percentage points) and the compute share, per seed and averaged over seeds, and which cascades are
within 0.5 points of the full ensemble at <= 40 % of its compute.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.adaptive import MARGIN_OFF  # noqa: E402
from models.aggregators import QueryScores  # noqa: E402
from models.cascade_replay import (  # noqa: E402
    SIMULATED_COSTS,
    PolicyResult,
    build_table,
    fit_label_model,
    sweep,
)
from models.simulate_realistic import RealisticConfig, simulate_realistic  # noqa: E402

MAX_CHANGES = (0.005, 0.01, 0.02, 0.05)  # weaver cascade's defaults: the lookahead rule
CONFIDENCES = (0.8, 0.9, 0.95, 0.99, 0.999)  # ... and the threshold rule
MARGINS = (0.5, 0.7, MARGIN_OFF)
BUDGET_SHARES = (None, 0.6, 0.4, 0.25)


def run_seed(seed: int, queries: int, samples: int) -> tuple[list[PolicyResult], list[PolicyResult]]:
    sim = simulate_realistic(RealisticConfig(n_queries=queries, n_samples=samples, seed=seed))
    names = sim.verifier_names
    scored = [QueryScores(cs.score_matrix(names), names, a) for cs, a in zip(sim.sets, sim.answers, strict=True)]
    table = build_table(scored, fit_label_model(scored), SIMULATED_COSTS, sim.labels)
    budgets = [None if s is None else s * table.full_cost for s in BUDGET_SHARES]
    return sweep(table, CONFIDENCES, MARGINS, budgets, max_changes=MAX_CHANGES)


def label(p: PolicyResult, k: int, n_fixed: int) -> str:
    if p.kind == "fixed":
        return "full ensemble" if k == n_fixed - 1 else f"first {k + 1} stages"
    budget = "none" if p.budget_s is None else f"{100 * p.budget_s / p.full_cost_s:.0f}%"
    if p.max_change is not None:
        return f"cascade lookahead P(change) <= {p.max_change:g} budget {budget}"
    margin = "off" if p.margin is not None and p.margin > 1 else f"{p.margin:g}"
    return f"cascade conf {p.confidence:g} margin {margin} budget {budget}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--samples", type=int, default=32)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = [run_seed(s, args.queries, args.samples) for s in seeds]
    n_fixed = len(runs[0][0])
    rows: dict[str, list[tuple[float, float, float]]] = {}
    for fixed, cascades in runs:
        full = fixed[-1]
        for k, p in enumerate(fixed + cascades):
            rows.setdefault(label(p, k, n_fixed), []).append(
                (100 * (p.accuracy.mean - full.accuracy.mean), 100 * p.compute_share, 100 * p.agreement))
    fulls = ", ".join(f"seed {s}: {100 * r[0][-1].accuracy.mean:.1f} % [{100 * r[0][-1].accuracy.low:.1f}, "
                      f"{100 * r[0][-1].accuracy.high:.1f}]" for s, r in zip(seeds, runs, strict=True))
    print(f"realistic simulator, {args.queries} queries x {args.samples} candidates; full ensemble: {fulls}")
    per_seed = " | ".join(f"seed {s} d acc / compute" for s in seeds)
    print(f"| policy | {per_seed} | mean d acc (points) | mean compute (%) | mean agreement (%) "
          "| within 0.5 at <= 40 % |")
    print("|---" * (len(seeds) + 5) + "|")
    for name, values in rows.items():
        arr = np.array(values)
        cells = " | ".join(f"{d:+.1f} / {c:.1f}" for d, c, _ in values)
        ok = sum(d >= -0.5 and c <= 40 for d, c, _ in values)
        print(f"| {name} | {cells} | {arr[:, 0].mean():+.2f} | {arr[:, 1].mean():.1f} | {arr[:, 2].mean():.1f} | "
              f"{ok}/{len(values)} seeds |")


if __name__ == "__main__":
    main()
