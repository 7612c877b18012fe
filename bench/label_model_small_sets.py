"""Why label model v2 is weak on small candidate sets: three diagnostics, none of them shipped.

    python bench/label_model_small_sets.py [--seeds 0,1,2] [--samples 4,32]
        [--dev-scores .cache/scores-gsm8k_gpt3_dev.jsonl] [--no-association-test]

Rows (selection accuracy %, ECE of P(correct)):

* ``v2 default``: as shipped, with its within-query stage (``models.within_query``); with
  ``--no-association-test``, without that stage's association test for few-valued verifiers.
* ``v2 histograms only``: v2 without the within-query stage; the diagnostics below start from it.
* ``v2 structure, tables from labels``: v2's binning, answer groups, dependency weights and icc kept,
  but each verifier's class histograms and P(no group right) counted from the true labels. This is
  the ceiling of better *estimation* within v2's model; it reads labels (a diagnostic, not a method).
  The fit objective of both parameter sets is printed: EM's is the higher one when the problem is
  the model (misspecification), not EM stopping short.
* ``v2, per-query drift removed``: a label-free two-stage prototype. A verifier's scores shift by
  prompt (a reward model rates every answer to a hard prompt low); with 4 candidates that shift
  decides "no answer right" against "some answer right" and EM sharpens on it. Stage 1 fits v2;
  the drift share ``kappa`` of each verifier is the correlation, within a query, of class-conditional
  residuals of candidates with *different* answers (they share only the prompt); each query's drift
  is the BLUP ``n kappa / (1 + (n - 1) kappa)`` times its mean residual; stage 2 refits on scores
  minus that drift. Two fits and two scoring passes: it does not fit the speed goals as written.
* simulator only, ``v2 default, world without query drift``: the same simulated worlds with every
  verifier's per-query offset set to 0 (the misspecification named above, removed at the source).

Dev set only: each within-query verifier's effect on its contrast (delta / residual sd, the within-query
stage's parameter) and its answer-group share's effect (gamma / residual sd), counted from the labels and as
the label-free fit finds them, on all queries, on those whose answers all differ and on those where some
answer repeats; then each pair of verifiers' within-query contrast correlation beside what conditional
independence predicts from their correlations with the label's contrast, and its standard error: how much
the data can say about a verifier's within-query direction without labels. Last, where the served posterior's
class balance departs from the labels' (by the number of distinct answers per query), and each level
verifier's evidence per bin as served beside the log-ratio counted from the labels.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.aggregators import QueryScores, rank_order  # noqa: E402
from models.answers import group_answers  # noqa: E402
from models.binning import digitize, n_bins  # noqa: E402
from models.metrics import auroc, expected_calibration_error  # noqa: E402
from models.normalization import Normalizer  # noqa: E402
from models.simulate_realistic import DEFAULT_VERIFIERS, RealisticConfig, simulate_realistic  # noqa: E402
from models.weaver_v2 import WeaverV2Config, WeaverV2Model  # noqa: E402
from models.within_query import contrasts, fit_contrasts, level_verifiers  # noqa: E402

Result = tuple[list[float], list[np.ndarray]]  # per-query hits, per-query posteriors
NO_DRIFT = "v2 default, world without query drift"


def groups_of(q: QueryScores) -> np.ndarray:
    """Answer group per candidate; candidates without an answer (or queries without answers) alone."""
    n = q.n_candidates
    g = np.array(group_answers(q.answers)) if q.answers is not None else -np.ones(n, dtype=np.int64)
    return np.where(g < 0, n + np.arange(n), g)


HISTOGRAMS_ONLY = WeaverV2Config(within_query=False)


def fit(queries: Sequence[QueryScores], config: WeaverV2Config = HISTOGRAMS_ONLY) -> WeaverV2Model:
    return WeaverV2Model.fit([q.matrix for q in queries], queries[0].verifier_names,
                             [q.answers for q in queries], [q.task for q in queries], config)


def evaluate(model: WeaverV2Model, queries: Sequence[QueryScores], labels: Sequence[np.ndarray]) -> Result:
    hits, probs = [], []
    for q, y in zip(queries, labels, strict=True):
        p, tie = model.score(model.align(q.matrix, q.verifier_names), q.answers, q.task)
        hits.append(float(y[int(rank_order(p, tie)[0])] == 1))
        probs.append(p)
    return hits, probs


def label_tables(model: WeaverV2Model, queries: Sequence[QueryScores], labels: Sequence[np.ndarray],
                 smoothing: float = 0.5) -> WeaverV2Model:
    """The fitted model with histograms and P(no group right) counted from labels (members weighted by icc)."""
    m, width = model.log_p1.shape
    c1, c0 = np.zeros((m, width)), np.zeros((m, width))
    for q, y in zip(queries, labels, strict=True):
        bins = digitize(model.normalizer.transform(q.matrix), list(model.edges))
        g = groups_of(q)
        size = np.array([(g == k).sum() for k in g])
        weight = 1.0 / (1.0 + (size[:, None] - 1) * model.icc[None, :])
        for i, j in zip(*np.nonzero(bins >= 0), strict=True):
            (c1 if y[i] == 1 else c0)[j, bins[i, j]] += weight[i, j]
    valid = np.arange(width)[None, :] < n_bins(list(model.edges))[:, None]
    c1, c0 = np.where(valid, c1 + smoothing, 1.0), np.where(valid, c0 + smoothing, 1.0)
    log_p1 = np.where(valid, np.log(c1 / np.where(valid, c1, 0).sum(1, keepdims=True)), 0.0)
    log_p0 = np.where(valid, np.log(c0 / np.where(valid, c0, 0).sum(1, keepdims=True)), 0.0)
    rho0 = float(np.clip(np.mean([1.0 - np.nanmax(y) for y in labels]), 1e-4, 1 - 1e-4))
    return replace(model, log_p1=log_p1, log_p0=log_p0, rho0=rho0, none_by_size=None)


def objective(model: WeaverV2Model, queries: Sequence[QueryScores]) -> float:
    """The fit's objective: member-weighted log-likelihood of every query's bins, summed over queries."""
    total = 0.0
    for q in queries:
        bins = digitize(model.normalizer.transform(model.align(q.matrix, q.verifier_names)), list(model.edges))
        g = groups_of(q)
        size = np.array([(g == k).sum() for k in g])
        weight = model.weight[None, :] / (1.0 + (size[:, None] - 1) * model.icc[None, :])
        cols = np.arange(bins.shape[1])[None, :]
        seen = bins >= 0
        log1 = np.where(seen, model.log_p1[cols, np.maximum(bins, 0)], 0.0)
        log0 = np.where(seen, model.log_p0[cols, np.maximum(bins, 0)], 0.0)
        evidence = np.bincount(np.unique(g, return_inverse=True)[1].ravel(), (weight * (log1 - log0)).sum(1))
        terms = np.append(np.log((1 - model.rho0) / evidence.size) + evidence, np.log(model.rho0))
        total += float((weight * log0).sum() + np.logaddexp.reduce(terms))
    return total


def drift_removed(queries: Sequence[QueryScores], labels: Sequence[np.ndarray]) -> Result:
    """Two-stage prototype: v2, class-conditional across-answer drift share, BLUP removal, v2 again."""
    stage1 = fit(queries)
    normalizer = Normalizer.fit(np.vstack([q.matrix for q in queries]))
    scores = [normalizer.transform(q.matrix) for q in queries]
    post = [stage1.score(stage1.align(q.matrix, q.verifier_names), q.answers, q.task)[0] for q in queries]
    x, p = np.vstack(scores), np.concatenate(post)[:, None]
    seen = ~np.isnan(x)
    mu1 = (p * seen * np.nan_to_num(x)).sum(0) / (p * seen).sum(0)
    mu0 = ((1 - p) * seen * np.nan_to_num(x)).sum(0) / ((1 - p) * seen).sum(0)
    resid = [s - (pq[:, None] * mu1 + (1 - pq[:, None]) * mu0) for s, pq in zip(scores, post, strict=True)]
    num, den = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for q, r in zip(queries, resid, strict=True):
        g, rz, obs = groups_of(q), np.nan_to_num(r), (~np.isnan(r)).astype(float)
        num += rz.sum(0) ** 2 - (rz ** 2).sum(0)  # all ordered pairs i != k ...
        for k in np.unique(g):
            member = g == k
            num -= rz[member].sum(0) ** 2 - (rz[member] ** 2).sum(0)  # ... less pairs with the same answer
            den += (rz[member] ** 2).sum(0) * (obs.sum(0) - obs[member].sum(0))
    kappa = np.clip(num / np.maximum(den, 1e-12), 0.0, 1.0)
    corrected = []
    for q, s, r in zip(queries, scores, resid, strict=True):
        n = (~np.isnan(s)).sum(0)
        shrink = n * kappa / np.maximum(1 + (n - 1) * kappa, 1e-12)
        drift = shrink * np.nan_to_num(r).sum(0) / np.maximum(n, 1)
        corrected.append(replace(q, matrix=s - drift))
    return evaluate(fit(corrected), corrected, labels)


def contrast_terms(model: WeaverV2Model, queries: Sequence[QueryScores]) -> tuple:
    """The within-query stage's contrast terms for ``queries`` (concatenated) and each candidate's query."""
    z = np.vstack([model.normalizer.transform(model.align(q.matrix, q.verifier_names)) for q in queries])
    query_of = np.repeat(np.arange(len(queries)), [q.n_candidates for q in queries])
    return contrasts(z, flat_group_of(queries), query_of, len(queries)), query_of


def flat_group_of(queries: Sequence[QueryScores]) -> np.ndarray:
    """Answer group per candidate of all ``queries`` concatenated, numbered 0.. across queries."""
    groups = [np.unique(groups_of(q), return_inverse=True)[1].ravel() for q in queries]
    offsets = np.cumsum([0] + [int(g.max()) + 1 for g in groups[:-1]])
    return np.concatenate([g + o for g, o in zip(groups, offsets, strict=True)])


def contrasts_from_labels(model: WeaverV2Model, queries: Sequence[QueryScores],
                          labels: Sequence[np.ndarray]) -> Result:
    """The default model with its within-query parameters (delta, gamma, var) counted from the labels."""
    if model.grouped is None:
        return evaluate(model, queries, labels)
    terms, query_of = contrast_terms(model, queries)
    f = fit_contrasts(terms, np.concatenate(labels).astype(float), query_of, len(queries), model.grouped.columns)
    grouped = replace(model.grouped, delta=f.delta, gamma=f.gamma, var=f.var)
    return evaluate(replace(model, grouped=grouped), queries, labels)


def within_effects(model: WeaverV2Model, queries: Sequence[QueryScores], labels: Sequence[np.ndarray]) -> None:
    """Print delta / sd and gamma / sd (the answer-group share's effect) per within-query verifier, from the
    labels and from the label-free posterior, by stratum."""
    if model.grouped is None:
        print("\n(no within-query stage: no verifier varies inside an answer group)")
        return
    columns = model.grouped.columns
    names = [n for n, c in zip(model.verifier_names, columns, strict=True) if c]
    distinct = [len(set(groups_of(q).tolist())) == q.n_candidates for q in queries]
    posteriors = [model.posterior(q.matrix, q.answers, q.task) for q in queries]  # once, shared by the strata
    print(f"\nWithin-query effect (delta / sd) and share effect (gamma / sd; '-' where every answer differs): "
          f"{', '.join(names)}\n| queries | n | delta from labels | delta label-free | gamma from labels "
          "| gamma label-free |\n|---|---|---|---|---|---|")
    for title, keep in (("all", [True] * len(queries)), ("answers all differ", distinct),
                        ("some answer repeats", [not d for d in distinct])):
        chosen = [i for i, k in enumerate(keep) if k]
        terms, query_of = contrast_terms(model, [queries[i] for i in chosen])
        deltas, gammas = [], []
        for weights in (np.concatenate([labels[i] for i in chosen]).astype(float),
                        np.concatenate([posteriors[i] for i in chosen])):
            f = fit_contrasts(terms, weights, query_of, len(chosen), columns)
            sd = np.sqrt(f.var)[columns]
            deltas.append(" / ".join(f"{d:+.2f}" for d in f.delta[columns] / sd))
            shared = bool(np.any(terms.x[:, columns] != 0))
            gammas.append(" / ".join(f"{g:+.2f}" for g in f.gamma[columns] / sd) if shared else "-")
        print(f"| {title} | {len(chosen)} | {deltas[0]} | {deltas[1]} | {gammas[0]} | {gammas[1]} |")


def contrast_correlations(model: WeaverV2Model, queries: Sequence[QueryScores],
                          labels: Sequence[np.ndarray]) -> None:
    """Print how much the data can say about each verifier's within-query direction without labels.

    Under conditional independence given the label, the within-query correlation of two verifiers' contrasts is
    the product of their correlations with the label's contrast, r_j * r_k: the moment a label-free fit learns a
    verifier's direction from. Beside it, what the data show and the sampling standard error (1 / sqrt of the
    within-query degrees of freedom: candidates minus queries)."""
    terms, query_of = contrast_terms(model, queries)
    y = np.concatenate(labels).astype(float)
    y_c = y - (np.bincount(query_of, y) / np.bincount(query_of))[query_of]
    c = np.column_stack([np.where(terms.usable, terms.c, 0.0), y_c])
    norm = np.sqrt((c ** 2).sum(0))
    corr = (c.T @ c) / np.outer(norm, norm)
    names = model.verifier_names
    m = len(names)
    se = 1 / np.sqrt(len(y) - len(queries))
    r = corr[:m, m]
    print("\nWithin-query correlation of contrasts with the label's: "
          + ", ".join(f"{n} {v:+.3f}" for n, v in zip(names, r, strict=True))
          + "\n| pair | observed | r_j * r_k (conditional independence) | standard error |\n|---|---|---|---|")
    for j in range(m):
        for k in range(j + 1, m):
            print(f"| {names[j]} / {names[k]} | {corr[j, k]:+.3f} | {r[j] * r[k]:+.3f} | {se:.3f} |")


def within_query_auroc(queries: Sequence[QueryScores], labels: Sequence[np.ndarray]) -> tuple[np.ndarray, int]:
    """(m,) per verifier, the share of (correct, wrong) pairs of candidates of one query that it orders right
    (ties half; pairs where it abstains skipped), and the number of such pairs: AUROC inside queries, where
    no per-prompt shift counts."""
    m = len(queries[0].verifier_names)
    won, seen, pairs = np.zeros(m), np.zeros(m), 0
    for q, y in zip(queries, labels, strict=True):
        right, wrong = q.matrix[y == 1], q.matrix[y == 0]
        diff = right[:, None, :] - wrong[None, :, :]  # (right, wrong, m)
        scored = ~np.isnan(diff)
        won += np.where(scored, (diff > 0) + 0.5 * (diff == 0), 0.0).sum((0, 1))
        seen += scored.sum((0, 1))
        pairs += len(right) * len(wrong)
    return won / np.maximum(seen, 1), pairs


def print_aurocs(queries: Sequence[QueryScores], labels: Sequence[np.ndarray]) -> None:
    """Each verifier's AUROC pooled over all candidates (what a histogram learns from) and inside queries,
    on all queries and on those whose answers all differ (where the answer groups cannot decide)."""
    names = queries[0].verifier_names
    pooled = [auroc(np.concatenate([q.matrix[:, j] for q in queries]), np.concatenate(labels)) for j in
              range(len(names))]
    distinct = [i for i, q in enumerate(queries) if len(set(groups_of(q).tolist())) == q.n_candidates]
    inside, n_all = within_query_auroc(queries, labels)
    inside_distinct, n_distinct = within_query_auroc([queries[i] for i in distinct], [labels[i] for i in distinct])
    print(f"\nAUROC per verifier: pooled, inside queries ({n_all} correct/wrong pairs), inside the {len(distinct)} "
          f"queries whose answers all differ ({n_distinct} pairs)\n| verifier | pooled | inside queries "
          "| inside, answers all differ |\n|---|---|---|---|")
    for j, name in enumerate(names):
        print(f"| {name} | {pooled[j]:.2f} | {inside[j]:.2f} | {inside_distinct[j]:.2f} |")


def balance_by_answers(model: WeaverV2Model, queries: Sequence[QueryScores], labels: Sequence[np.ndarray]) -> None:
    """Print where the served posterior's class balance departs from the labels'.

    By the number of distinct answers in a query: the posterior's mean and its P(no answer right) beside the
    labels'. Then, per level verifier (constant inside every answer group: answer agreement), the evidence each
    bin carries as served beside the log-ratio counted from the labels, each answer group counted once as the
    fit counts it (smoothed as the fit smooths): how steep the label-free histogram is against the labels'."""
    posteriors = [model.posterior(q.matrix, q.answers, q.task) for q in queries]
    groups = [np.unique(groups_of(q), return_index=True, return_inverse=True) for q in queries]
    distinct = np.array([ids.size for ids, _, _ in groups])
    fitted_none = np.array([1.0 - p[first].sum() for p, (_, first, _) in zip(posteriors, groups, strict=True)])
    true_none = np.array([float(np.nanmax(y) < 1) for y in labels])
    print("\nClass balance by distinct answers per query (the served posterior against the labels)\n"
          "| distinct answers | queries | posterior mean | share correct | P(no answer right) | share with none right |"
          "\n|---|---|---|---|---|---|")
    for k in np.unique(distinct):
        chosen = np.flatnonzero(distinct == k)
        post = np.concatenate([posteriors[i] for i in chosen])
        y = np.concatenate([labels[i] for i in chosen]).astype(float)
        print(f"| {k} | {chosen.size} | {post.mean():.3f} | {np.nanmean(y):.3f} | {fitted_none[chosen].mean():.3f} "
              f"| {true_none[chosen].mean():.3f} |")
    z = [model.normalizer.transform(model.align(q.matrix, q.verifier_names)) for q in queries]
    group_of = flat_group_of(queries)
    level = level_verifiers(np.vstack(z), group_of, np.bincount(group_of)) & model.kept
    smoothing = model.config.smoothing
    for j in np.flatnonzero(level):
        served = model.bin_distributions(int(j), within=model.grouped is not None)
        assert served is not None  # kept
        width = served[2].size
        right, wrong = np.zeros(width), np.zeros(width)
        sizes: list[set[int]] = [set() for _ in range(width)]
        for y, scores, (_, first, inverse) in zip(labels, z, groups, strict=True):
            bins = digitize(scores[first][:, [j]], [model.edges[j]])[:, 0]
            for b, i, size in zip(bins, first, np.bincount(inverse.ravel()), strict=True):
                if b >= 0:
                    (right if y[i] == 1 else wrong)[b] += 1
                    sizes[b].add(int(size))
        c1, c0 = right + smoothing, wrong + smoothing
        from_labels = np.log(c1 / c1.sum()) - np.log(c0 / c0.sum())
        print(f"\n{model.verifier_names[j]}: evidence per bin, as served and counted from the labels (groups once)\n"
              "| bin | group sizes | groups right | groups wrong | from labels | as served |\n"
              "|---|---|---|---|---|---|")
        for b in range(width):
            print(f"| {b} | {', '.join(map(str, sorted(sizes[b])))} | {right[b]:.0f} | {wrong[b]:.0f} "
                  f"| {from_labels[b]:+.2f} | {served[2][b]:+.2f} |")


def rows(default: WeaverV2Model, queries: Sequence[QueryScores], labels: Sequence[np.ndarray]) -> dict[str, Result]:
    model = fit(queries)
    counted = label_tables(model, queries, labels)
    print(f"fit objective: EM {objective(model, queries):.1f}, tables from labels {objective(counted, queries):.1f}")
    ceiling = contrasts_from_labels(default, queries, labels)
    return {"v2 default": evaluate(default, queries, labels),
            "v2 default, within-query parameters from labels (ceiling)": ceiling,
            "v2 histograms only": evaluate(model, queries, labels),
            "v2 structure, tables from labels (ceiling)": evaluate(counted, queries, labels),
            "v2, per-query drift removed (prototype)": drift_removed(queries, labels)}


def simulated(seed: int, n_queries: int, samples: int, drift: bool) -> tuple[list[QueryScores], list[np.ndarray]]:
    verifiers = DEFAULT_VERIFIERS if drift else tuple(replace(v, query_sd=0.0) for v in DEFAULT_VERIFIERS)
    # the ablation's worlds: 11x the queries are drawn (the rest train its supervised baseline), the first used
    sim = simulate_realistic(RealisticConfig(n_queries=11 * n_queries, n_samples=samples, seed=seed), verifiers)
    names = sim.verifier_names
    sets = zip(sim.sets[:n_queries], sim.answers[:n_queries], strict=True)
    return [QueryScores(cs.score_matrix(names), names, a) for cs, a in sets], sim.labels[:n_queries]


def print_rows(title: str, results: dict[str, Result], labels: Sequence[np.ndarray]) -> None:
    print(f"\n{title}\n| variant | accuracy % | ECE |\n|---|---|---|")
    y = np.concatenate(list(labels))
    for name, (hits, probs) in results.items():
        print(f"| {name} | {100 * np.mean(hits):.1f} | {expected_calibration_error(np.concatenate(probs), y):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--samples", default="4,32")
    parser.add_argument("--dev-scores", type=Path, default=Path(".cache/scores-gsm8k_gpt3_dev.jsonl"))
    parser.add_argument("--dev-verifiers", default="cpu-default")
    parser.add_argument("--no-association-test", action="store_true",
                        help="the shipped model without its within-query association test (as before 2026-11-30)")
    args = parser.parse_args()
    shipped = WeaverV2Config(within_association=not args.no_association_test)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    for samples in [int(s) for s in args.samples.split(",") if s.strip()] if seeds else []:
        pooled: dict[str, Result] = {}
        truth: list[np.ndarray] = []
        no_drift_truth: list[np.ndarray] = []
        for seed in seeds:
            queries, labels = simulated(seed, args.queries, samples, drift=True)
            plain, plain_labels = simulated(seed, args.queries, samples, drift=False)
            result = rows(fit(queries, shipped), queries, labels)
            result[NO_DRIFT] = evaluate(fit(plain, shipped), plain, plain_labels)
            truth += labels
            no_drift_truth += plain_labels
            for name, (hits, probs) in result.items():
                pooled.setdefault(name, ([], []))
                pooled[name][0].extend(hits)
                pooled[name][1].extend(probs)
        print_rows(f"Realistic simulator, seeds {seeds}, {args.queries} queries x {samples} candidates",
                   {k: v for k, v in pooled.items() if k != NO_DRIFT}, truth)
        print_rows("same seeds, world without per-query drift", {NO_DRIFT: pooled[NO_DRIFT]}, no_drift_truth)
    from bench.dev_set import dev_queries, dev_set_path

    data = dev_set_path()
    if args.dev_scores.exists() and data.exists():
        queries, maybe = dev_queries(args.dev_scores, data, args.dev_verifiers)
        names = queries[0].verifier_names
        labels = [y for y in maybe if y is not None]
        if len(labels) != len(maybe):
            raise SystemExit("the dev set needs correctness labels for every query")
        default = fit(queries, shipped)  # the shipped model, fitted once for every dev diagnostic
        print_rows(f"Dev set {data.name}, verifiers {', '.join(names)}", rows(default, queries, labels), labels)
        within_effects(default, queries, labels)
        contrast_correlations(default, queries, labels)
        print_aurocs(queries, labels)
        balance_by_answers(default, queries, labels)
    else:
        print(f"\n(dev set skipped: no score cache at {args.dev_scores} or no data at {data})")


if __name__ == "__main__":
    main()
