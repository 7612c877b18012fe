"""Label-model benchmark: fit on 50,000 candidates x 35 verifiers, score 100 candidates x 35 verifiers.

    python bench/label_model.py [--repeats 5]

Prints a table of median and best wall times; goals from the core issue: fit < 1 s, score < 0.2 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.aggregators import QueryScores, WeaverAggregator  # noqa: E402
from models.simulate import simulate  # noqa: E402
from models.weaver import WeaverModel  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sim = simulate(500, 100, 35, seed=0)
    matrices = [cs.score_matrix(sim.verifier_names) for cs in sim.sets]
    fit_times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        model = WeaverModel.fit(matrices, sim.verifier_names)
        fit_times.append(time.perf_counter() - start)
    agg = WeaverAggregator(model)
    query = QueryScores(matrices[0], sim.verifier_names)
    n = 2000
    score_times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(n):
            agg.rank(query)
        score_times.append((time.perf_counter() - start) / n)
    print(f"{'operation':<44} {'median':>12} {'best':>12} {'goal':>10}")
    print(f"{'fit 50,000 candidates x 35 verifiers':<44} {statistics.median(fit_times):>10.3f} s "
          f"{min(fit_times):>10.3f} s {'< 1 s':>10}")
    print(f"{'score+rank 100 candidates x 35 verifiers':<44} {1e3 * statistics.median(score_times):>9.4f} ms "
          f"{1e3 * min(score_times):>9.4f} ms {'< 0.2 ms':>10}")
    print(f"(EM iterations: {model.report.iterations}, converged: {model.report.converged})")


if __name__ == "__main__":
    main()
