"""Label-model benchmark: fit on 50,000 candidates x 35 verifiers, score 100 candidates x 35 verifiers.

    python bench/label_model.py [--repeats 5]

Prints a table of median and best wall times for both label models (weaver-v2, the default, and
weaver-v1); goals from the core issue: fit < 1 s, score < 0.2 ms. The simulated candidates carry no
final answers, so v2 runs without answer groups in the rows with goals. A third model,
``weaver-v2 + answers``, gives the same candidates final answers (right ones share one, wrong ones pick
one of five recurring answers), so it also pays for answer groups and the within-query stage (a
second EM stage); it has no goal of its own. The last row groups answers no earlier call has seen (the
answer caches cannot help), as a request of 100 candidates with 50 distinct answers would. Wall and CPU
time are both printed: on a shared, oversubscribed box the wall time measures the neighbours.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.aggregators import QueryScores, WeaverAggregator  # noqa: E402
from models.answers import group_answers  # noqa: E402
from models.simulate import simulate  # noqa: E402
from models.weaver import WeaverModel  # noqa: E402
from models.weaver_v2 import WeaverV2Model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sim = simulate(500, 100, 35, seed=0)
    matrices = [cs.score_matrix(sim.verifier_names) for cs in sim.sets]
    rng = np.random.default_rng(0)
    answers = [tuple("42" if y == 1 else str(rng.integers(1, 6)) for y in labels) for labels in sim.labels]
    print(f"{'operation':<52} {'median wall':>12} {'best wall':>12} {'median CPU':>12} {'goal':>10}")
    for label, fit, with_answers in (
            ("weaver-v2", lambda: WeaverV2Model.fit(matrices, sim.verifier_names), False),
            ("weaver-v1", lambda: WeaverModel.fit(matrices, sim.verifier_names), False),
            ("weaver-v2 + answers", lambda: WeaverV2Model.fit(matrices, sim.verifier_names, answers), True)):
        fit_times, fit_cpu = [], []
        for _ in range(args.repeats):
            start, cpu = time.perf_counter(), time.process_time()
            model = fit()
            fit_times.append(time.perf_counter() - start)
            fit_cpu.append(time.process_time() - cpu)
        agg = WeaverAggregator(model)
        query = QueryScores(matrices[0], sim.verifier_names, answers[0] if with_answers else None)
        n = 2000
        score_times, score_cpu = [], []
        for _ in range(args.repeats):
            start, cpu = time.perf_counter(), time.process_time()
            for _ in range(n):
                agg.rank(query)
            score_times.append((time.perf_counter() - start) / n)
            score_cpu.append((time.process_time() - cpu) / n)
        print(f"{label + ': fit 50,000 candidates x 35 verifiers':<52} {statistics.median(fit_times):>10.3f} s "
              f"{min(fit_times):>10.3f} s {statistics.median(fit_cpu):>10.3f} s {'-' if with_answers else '< 1 s':>10}")
        print(f"{label + ': score+rank 100 candidates x 35 verifiers':<52} "
              f"{1e3 * statistics.median(score_times):>9.4f} ms {1e3 * min(score_times):>9.4f} ms "
              f"{1e3 * statistics.median(score_cpu):>9.4f} ms {'-' if with_answers else '< 0.2 ms':>10}")
        print(f"  ({label} EM iterations: {model.report.iterations}, converged: {model.report.converged})")
    grouping_times = []
    for repeat in range(args.repeats):  # answers never seen before (no cache helps): the cost of a fresh request
        fresh = np.random.default_rng(100 + repeat).integers(0, 10**12, (500, 50)).astype(str).tolist()
        calls = [row + row[:30] + row[:20] for row in fresh]
        start = time.perf_counter()
        for call in calls:
            group_answers(call)
        grouping_times.append((time.perf_counter() - start) / len(calls))
    print(f"{'group_answers: 100 unseen answers, 50 distinct':<52} {1e3 * statistics.median(grouping_times):>9.4f} ms "
          f"{1e3 * min(grouping_times):>9.4f} ms {'':>12} {'-':>10}")


if __name__ == "__main__":
    main()
