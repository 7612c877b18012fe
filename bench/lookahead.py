"""What the cascade's lookahead costs per decision (models/lookahead.py): 64 simulated futures of the
verifiers not yet run, under a v2 label model fitted on the realistic simulator.

    PYTHONPATH=. python bench/lookahead.py [--queries 100]

Each decision is timed after the first stage (answer agreement and the free checks) with the other eight
verifiers remaining, the case with the most to simulate; answer grouping (``group_answers``) is included.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from models.aggregators import QueryScores
from models.answers import group_answers
from models.lookahead import change_probability
from models.simulate_realistic import RealisticConfig, simulate_realistic
from models.weaver_v2 import WeaverV2Model

FIRST_STAGE = {"answer_agreement", "length_bias", "no_signal", "math_check"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    print("| candidates per query | verifiers (remaining) | median ms per decision | p90 ms |")
    print("|---|---|---|---|")
    for n in (4, 32):
        sim = simulate_realistic(RealisticConfig(n_queries=max(200, args.queries), n_samples=n, seed=1))
        names = sim.verifier_names
        queries = [QueryScores(cs.score_matrix(names), names, tuple(a)) for cs, a in zip(sim.sets, sim.answers,
                                                                                         strict=True)]
        model = WeaverV2Model.fit([q.matrix for q in queries], names, [q.answers for q in queries])
        rest = [name for name in names if name not in FIRST_STAGE]
        seen = np.array([name in FIRST_STAGE for name in names])
        times = []
        for query in queries[:args.queries]:
            observed = np.where(seen[None, :], query.matrix, np.nan)
            start = time.perf_counter()
            change_probability(model, observed, names, group_answers(query.answers or ()), None, rest)
            times.append(time.perf_counter() - start)
        print(f"| {n} | {len(names)} ({len(rest)}) | {1000 * np.median(times):.2f} | "
              f"{1000 * np.percentile(times, 90):.2f} |")


if __name__ == "__main__":
    main()
