"""Label model ablation: each ingredient of version 2 switched off, on the realistic simulator and the dev set.

    python bench/label_model_ablation.py [--seeds 0,1,2] [--queries 300] [--samples 32]
        [--dev-scores .cache/scores-gsm8k_gpt3_dev.jsonl]

Simulator: per seed, ``queries`` label-free queries (the aggregators fit on them without labels) and
10x as many labelled queries from the same simulated world for the supervised logistic regression.
Dev set: the GSM8K dev file scored by the ``cpu-default`` verifiers (from the score cache that
``weaver eval gsm8k_gpt3_dev.jsonl --verifiers cpu-default`` writes by default, the ``--dev-scores``
default; skipped when absent); supervised LR is cross-fitted on 5 folds of queries there.

Prints one table per data source: selection accuracy with a bootstrap 95% interval over queries,
expected calibration error of the posterior, and the label-free class balance against the truth;
then the v2 default minus every other row on the same queries, with a paired bootstrap interval; on the
dev set also each row's selection accuracy by stratum of queries (what their answer groups decide).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.aggregators import (  # noqa: E402
    BestSingleVerifierAggregator,
    MeanAggregator,
    QueryScores,
    SupervisedAggregator,
    WeaverAggregator,
    rank_order,
)
from models.evaluate import majority_expected_hit  # noqa: E402
from models.metrics import bootstrap_mean, expected_calibration_error  # noqa: E402
from models.simulate_realistic import RealisticConfig, simulate_realistic  # noqa: E402
from models.weaver import WeaverModel  # noqa: E402
from models.weaver_v2 import WeaverV2Config, WeaverV2Model  # noqa: E402

V2_VARIANTS: dict[str, WeaverV2Config] = {
    "v2 default (bins + groups + one right + guard + within-query + association test)": WeaverV2Config(),
    "v2 - bins (one Otsu cut per verifier)": WeaverV2Config(max_bins=2),
    "v2 - answer groups (candidates independent)": WeaverV2Config(answer_groups=False),
    "v2 - at most one right group": WeaverV2Config(unique_answers=False),
    "v2 - dependency guard": WeaverV2Config(dependency_guard=False),
    "v2 - within-query contrasts (histograms for all)": WeaverV2Config(within_query=False),
    "v2 - association test (few-valued verifiers keep histograms)": WeaverV2Config(within_association=False),
}


@dataclass
class Row:
    name: str
    labels: str
    hits: list[float]
    probs: list[np.ndarray] | None = None
    y: list[np.ndarray] | None = None
    balance: float | None = None


Scored = tuple[float, np.ndarray]  # a query's hit (0/1) and its candidates' probabilities


def v2_scores(model: WeaverV2Model, q: QueryScores) -> tuple[np.ndarray, int]:
    p, tie = model.score(model.align(q.matrix, q.verifier_names), q.answers, q.task)
    return p, int(rank_order(p, tie)[0])


def hit(y: np.ndarray, i: int) -> float:
    return float(y[i] == 1)


def label_free_rows(queries: Sequence[QueryScores], labels: Sequence[np.ndarray], folds: int, seed: int) -> list[Row]:
    """Every v2 variant and v1 fitted without labels on all queries; v2 default also cross-fitted by query."""
    names = queries[0].verifier_names
    mats = [q.matrix for q in queries]
    answers = [q.answers for q in queries]
    rows = []
    for label, config in V2_VARIANTS.items():
        model = WeaverV2Model.fit(mats, names, answers, [q.task for q in queries], config)
        scored = [v2_scores(model, q) for q in queries]
        rows.append(Row(label, "no", [hit(y, i) for (_, i), y in zip(scored, labels, strict=True)],
                        [p for p, _ in scored], list(labels), model.report.class_balance))
        if config == WeaverV2Config() and folds > 1:
            def v2_fold(train: list[int], held: list[int], config: WeaverV2Config = config) -> list[Scored]:
                fold = WeaverV2Model.fit([mats[i] for i in train], names, [answers[i] for i in train],
                                         config=config)
                scored = [v2_scores(fold, queries[i]) for i in held]
                return [(hit(labels[i], top), p) for i, (p, top) in zip(held, scored, strict=True)]

            hits, probs = cross_fitted(len(queries), folds, seed, v2_fold)
            rows.append(Row(f"v2 default, {folds}-fold (unseen queries)", "no", hits, probs, list(labels)))
    v1 = WeaverModel.fit(mats, names)
    agg = WeaverAggregator(v1)
    ranked = [agg.rank(q) for q in queries]
    rows.append(Row("v1 (binary votes, independent candidates)", "no",
                    [hit(y, r.selected) for r, y in zip(ranked, labels, strict=True)],
                    [r.scores for r in ranked], list(labels), v1.class_balance))
    mean = MeanAggregator.fit(queries)
    rows.append(Row("mean of normalized scores", "no", [hit(y, mean.rank(q).selected) for q, y in
                                                         zip(queries, labels, strict=True)]))
    rows.append(Row("majority vote (ties expected)", "no", [majority_expected_hit(q.answers or (), y) for q, y in
                                                             zip(queries, labels, strict=True)]))
    best = BestSingleVerifierAggregator.fit(queries, labels)
    rows.append(Row(f"best single verifier ({best.verifier}, hindsight)", "yes",
                    [hit(y, best.rank(q).selected) for q, y in zip(queries, labels, strict=True)]))
    return rows


def supervised_row(name: str, train: Sequence[QueryScores], train_y: Sequence[np.ndarray],
                   test: Sequence[QueryScores], test_y: Sequence[np.ndarray]) -> Row:
    sup = SupervisedAggregator.fit(train, train_y)
    ranked = [sup.rank(q) for q in test]
    return Row(name, "yes", [hit(y, r.selected) for r, y in zip(ranked, test_y, strict=True)],
               [r.scores for r in ranked], list(test_y))


def cross_fitted(n: int, folds: int, seed: int,
                 score_fold: Callable[[list[int], list[int]], list[Scored]]) -> tuple[list[float], list[np.ndarray]]:
    """Each of ``n`` queries scored by a model fitted on the other folds (a random split by ``seed``, the same
    for every aggregator given the seed); ``score_fold(train, held)`` returns (hit, probabilities) per held
    query. Hits and probabilities come back in query order."""
    order = np.random.default_rng(seed).permutation(n)
    unseen: dict[int, Scored] = {}
    for k in range(folds):
        held = sorted(order[k::folds].tolist())
        held_set = set(held)
        train = [i for i in range(n) if i not in held_set]
        unseen.update(zip(held, score_fold(train, held), strict=True))
    return [unseen[i][0] for i in range(n)], [unseen[i][1] for i in range(n)]


def cross_fitted_supervised(queries: Sequence[QueryScores], labels: Sequence[np.ndarray], folds: int,
                            seed: int) -> Row:
    """Supervised LR scored on each fold of queries after training on the others; rows in query order."""
    def lr_fold(train: list[int], held: list[int]) -> list[Scored]:
        row = supervised_row("", [queries[i] for i in train], [labels[i] for i in train],
                             [queries[i] for i in held], [labels[i] for i in held])
        return list(zip(row.hits, row.probs or [], strict=True))

    hits, probs = cross_fitted(len(queries), folds, seed, lr_fold)
    return Row(f"supervised LR ({folds}-fold by query)", "yes", hits, probs, list(labels))


def sim_queries(sim_sets: Sequence, names: tuple[str, ...], answers: Sequence) -> list[QueryScores]:
    return [QueryScores(cs.score_matrix(names), names, a) for cs, a in zip(sim_sets, answers, strict=True)]


def simulator_rows(seeds: Sequence[int], n_queries: int, n_samples: int) -> tuple[list[Row], float]:
    """Rows pooled over seeds (hits and probabilities concatenated); also the true class balance."""
    pooled: dict[str, Row] = {}
    truth = []
    for seed in seeds:
        sim = simulate_realistic(RealisticConfig(n_queries=11 * n_queries, n_samples=n_samples, seed=seed))
        queries = sim_queries(sim.sets, sim.verifier_names, sim.answers)
        test, test_y = queries[:n_queries], sim.labels[:n_queries]
        truth.append(np.concatenate(test_y))
        rows = label_free_rows(test, test_y, folds=5, seed=seed)
        rows.append(supervised_row(f"supervised LR ({10 * n_queries} labelled queries)", queries[n_queries:],
                                   sim.labels[n_queries:], test, test_y))
        oracle = [float(y[int(np.argmax(s))]) for s, y in zip(sim.oracle_llr[:n_queries], test_y, strict=True)]
        rows.append(Row("oracle-informed rule (true parameters)", "truth", oracle))
        rows.append(Row("any candidate correct (ceiling)", "yes", [float(y.max()) for y in test_y]))
        for row in rows:
            if row.name not in pooled:
                pooled[row.name] = replace(row, hits=[], probs=[] if row.probs is not None else None,
                                           y=[] if row.y is not None else None,
                                           balance=[] if row.balance is not None else None)  # type: ignore[arg-type]
            target = pooled[row.name]
            target.hits += row.hits
            if row.probs is not None and target.probs is not None and target.y is not None and row.y is not None:
                target.probs += row.probs
                target.y += row.y
            if row.balance is not None:
                target.balance.append(row.balance)  # type: ignore[union-attr]
    for row in pooled.values():
        if row.balance is not None:
            row.balance = float(np.mean(row.balance))  # type: ignore[arg-type]
    return list(pooled.values()), float(np.mean(np.concatenate(truth)))


def dev_rows(path: Path, data: Path, verifiers: str) -> tuple[list[Row], float, str, dict[str, np.ndarray]]:
    """Rows, the true class balance, the verifier names and the queries' strata (``answer_strata``)."""
    from bench.dev_set import dev_queries

    queries, labels = dev_queries(path, data, verifiers)
    names = queries[0].verifier_names
    rows = label_free_rows(queries, labels, folds=5, seed=0)
    rows.append(cross_fitted_supervised(queries, labels, 5, 0))
    rows.append(Row("any candidate correct (ceiling)", "yes", [float(np.nanmax(y)) for y in labels]))
    return rows, float(np.nanmean(np.concatenate(labels))), ", ".join(names), answer_strata(queries)


def answer_strata(queries: Sequence[QueryScores]) -> dict[str, np.ndarray]:
    """Queries by what their answer groups decide: one largest group (every aggregator that follows the
    answers picks it), largest groups tied, or every answer different (the groups decide nothing)."""
    from bench.label_model_small_sets import groups_of

    shapes = []
    for q in queries:
        g = groups_of(q)
        shapes.append(np.bincount(g)[np.unique(g)])
    differ = np.array([sizes.max() == 1 for sizes in shapes])
    tied = np.array([(sizes == sizes.max()).sum() > 1 for sizes in shapes]) & ~differ
    return {"one largest answer group": ~differ & ~tied, "largest groups tied": tied, "answers all differ": differ}


def print_by_stratum(rows: list[Row], strata: dict[str, np.ndarray], out: Callable[[str], None] = print) -> None:
    """Selection accuracy per stratum of queries: where the aggregators part ways."""
    out("\nSelection accuracy % by stratum of queries (queries in each)")
    out("| aggregator | " + " | ".join(f"{name} ({int(mask.sum())})" for name, mask in strata.items()) + " |")
    out("|---|" + "---|" * len(strata))
    for row in rows:
        hits = np.array(row.hits)
        out(f"| {row.name} | " + " | ".join(f"{100 * hits[mask].mean():.1f}" for mask in strata.values()) + " |")


def print_table(title: str, rows: list[Row], true_balance: float, out: Callable[[str], None] = print) -> None:
    out(f"\n{title}")
    out(f"| {'aggregator':<52} | labels | accuracy % | 95% CI      | ECE   | class balance (true {true_balance:.3f}) |")
    out(f"|{'-' * 54}|--------|------------|-------------|-------|{'-' * 30}|")
    for row in rows:
        ci = bootstrap_mean(np.array(row.hits), seed=0)
        ece = "-"
        if row.probs:
            ece = f"{expected_calibration_error(np.concatenate(row.probs), np.concatenate(row.y or [])):.3f}"
        balance = f"{row.balance:.3f}" if isinstance(row.balance, float) else "-"
        out(f"| {row.name:<52} | {row.labels:<6} | {100 * ci.mean:10.1f} | {100 * ci.low:4.1f}-{100 * ci.high:4.1f}"
            f"   | {ece:<5} | {balance:<28} |")


def print_paired_differences(rows: list[Row], out: Callable[[str], None] = print) -> None:
    """The v2 default against each baseline on the same queries: the interval of the paired difference.

    Separate intervals overlap long before two aggregators are indistinguishable; resampling the
    per-query difference keeps each query's difficulty in both terms and says which gaps the
    queries can resolve.
    """
    reference = rows[0]
    out(f"\nPaired differences: {reference.name.split(' (')[0]} minus each row, percentage points "
        "(95% bootstrap interval over queries)")
    out(f"| {'minus':<52} | difference | 95% CI          |")
    out(f"|{'-' * 54}|------------|-----------------|")
    for row in rows[1:]:
        if row.name.startswith("any candidate"):
            continue
        ci = bootstrap_mean(np.array(reference.hits) - np.array(row.hits), seed=0)
        out(f"| {row.name:<52} | {100 * ci.mean:+10.1f} | {100 * ci.low:+6.1f} to {100 * ci.high:+5.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--dev-scores", type=Path, default=Path(".cache/scores-gsm8k_gpt3_dev.jsonl"))
    parser.add_argument("--dev-verifiers", default="cpu-default",
                        help="a workers profile or comma-separated verifier names (scored into --dev-scores)")
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if seeds:
        rows, balance = simulator_rows(seeds, args.queries, args.samples)
        print_table(f"Realistic simulator: seeds {seeds}, {args.queries} queries x {args.samples} candidates each "
                    f"(intervals over the {len(seeds) * args.queries} pooled queries)", rows, balance)
        print_paired_differences(rows)
    from bench.dev_set import dev_set_path

    data = args.data or dev_set_path()
    if args.dev_scores.exists() and data.exists():
        rows, balance, names, strata = dev_rows(args.dev_scores, data, args.dev_verifiers)
        print_table(f"Dev set {data.name} ({len(rows[0].hits)} queries), verifiers: {names}", rows, balance)
        print_paired_differences(rows)
        print_by_stratum(rows, strata)
    else:
        print(f"\n(dev set skipped: no score cache at {args.dev_scores} or no data at {data})")


if __name__ == "__main__":
    main()
