"""Label model v2 with and without final answers: fit and score times, to compare two checkouts side by side.

    PYTHONPATH=. python bench/label_model_answers.py [--repeats 5]

The candidates are ``bench/label_model.py``'s (500 queries x 100 candidates x 35 verifiers); with answers,
right candidates share one final answer and wrong ones pick one of five recurring answers, so v2 groups
answers and (where it has one) runs its within-query stage. The script uses only the public API, so it runs
unchanged in an older checkout: ``git worktree add /tmp/before <commit>``, then run this file there with
``PYTHONPATH=/tmp/before`` and alternate the two runs (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from models.aggregators import QueryScores, WeaverAggregator
from models.simulate import simulate
from models.weaver_v2 import WeaverV2Model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sim = simulate(500, 100, 35, seed=0)
    matrices = [cs.score_matrix(sim.verifier_names) for cs in sim.sets]
    rng = np.random.default_rng(0)
    answers = [tuple("42" if y == 1 else str(rng.integers(1, 6)) for y in labels) for labels in sim.labels]
    print("| case | fit s (median) | score + rank ms per 100 candidates (median) |\n|---|---|---|")
    for label, given in (("without answers", None), ("with answers", answers)):
        fits = []
        for _ in range(3):
            start = time.perf_counter()
            model = WeaverV2Model.fit(matrices, sim.verifier_names, given)
            fits.append(time.perf_counter() - start)
        agg = WeaverAggregator(model)
        query = QueryScores(matrices[0], sim.verifier_names, given[0] if given else None)
        scores = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for _ in range(1000):
                agg.rank(query)
            scores.append((time.perf_counter() - start) / 1000 * 1e3)
        print(f"| {label} | {statistics.median(fits):.3f} | {statistics.median(scores):.3f} |")


if __name__ == "__main__":
    main()
