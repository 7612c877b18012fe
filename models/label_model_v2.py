"""Second-generation label model: binned scores, answer groups, learned dependencies, fitted by EM.

Generative story, per query:

* candidates whose final answers are equivalent form an answer group and are right or wrong
  together; a candidate without an answer is a group of its own;
* on single-answer tasks at most one group is right: "none is right" has probability ``rho0`` and
  otherwise each group is equally likely a priori (so the per-query difficulty, from none right to
  all right, is part of the model); on other tasks every group is right independently with ``pi``;
* each verifier's score, cut into a few ordered bins, follows a class-conditional categorical
  distribution (a histogram per class), so continuous margins and multi-level agreement count.

Two dependencies break conditional independence, and both are learned from the fit, label-free:

* members of one group: answer agreement is identical across a group, a judge fooled by an answer
  is fooled on every candidate giving it. Per verifier, the intra-group correlation ``icc`` of its
  class-centred evidence turns the members' summed evidence into that of ``1 + (n - 1) icc``
  effective members (Kish's design effect): identical members count once, independent ones fully;
* between verifiers: two scores of the same thing (answer agreement and embedding consistency, a
  model and its fine-tune) would double-count. Each verifier's evidence is divided by
  ``1 + sum_k rho_jk``, its positive class-conditional correlations with the others (shrunk by two
  standard errors), which is the design effect again: k equally correlated copies count as
  ``k / (1 + (k - 1) rho)``.

EM alternates posteriors (E) with weighted histogram counts (M); the structure (icc, rho) is
re-estimated between EM rounds from the current posteriors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Layout:
    """Flattened candidates, sorted so that each group's members and each query's groups are contiguous."""

    bins: np.ndarray  # (N, m) int16, -1 abstain, in sorted order
    order: np.ndarray  # sorted position -> original flat candidate index
    group_of: np.ndarray  # (N,) group index per sorted candidate
    group_starts: np.ndarray  # (G,) first sorted candidate of each group
    group_size: np.ndarray  # (G,)
    group_query: np.ndarray  # (G,) query index
    query_starts: np.ndarray  # (Q,) first group of each query
    query_groups: np.ndarray  # (Q,) number of groups
    unique: np.ndarray  # (Q,) bool: at most one group right


def build_layout(bins: list[np.ndarray], groups: list[np.ndarray], unique: list[bool]) -> Layout:
    """``groups[q]``: group id per candidate (-1: no answer, its own group)."""
    rows, order_parts, group_of, group_size, group_query, query_groups = [], [], [], [], [], []
    offset = 0
    n_groups = 0
    for q, (b, g) in enumerate(zip(bins, groups, strict=True)):
        g = np.asarray(g, dtype=np.int64).copy()
        loners = g < 0
        g[loners] = g.max(initial=-1) + 1 + np.arange(int(loners.sum()))
        _, local = np.unique(g, return_inverse=True)
        perm = np.argsort(local, kind="stable")
        sizes = np.bincount(local)
        rows.append(b[perm])
        order_parts.append(offset + perm)
        group_of.append(n_groups + local[perm])
        group_size.append(sizes)
        group_query.append(np.full(sizes.size, q))
        query_groups.append(sizes.size)
        offset += len(g)
        n_groups += sizes.size
    m = bins[0].shape[1] if bins else 0
    size = np.concatenate(group_size) if group_size else np.empty(0, dtype=np.int64)
    counts = np.array(query_groups, dtype=np.int64)
    return Layout(
        bins=np.vstack(rows) if rows else np.empty((0, m), dtype=np.int16),
        order=np.concatenate(order_parts) if order_parts else np.empty(0, dtype=np.int64),
        group_of=np.concatenate(group_of) if group_of else np.empty(0, dtype=np.int64),
        group_starts=np.concatenate([[0], np.cumsum(size)[:-1]]).astype(np.int64) if size.size else size,
        group_size=size,
        group_query=np.concatenate(group_query) if group_query else np.empty(0, dtype=np.int64),
        query_starts=np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if counts.size else counts,
        query_groups=counts,
        unique=np.array(unique, dtype=bool),
    )


@dataclass(frozen=True)
class Structure:
    weight: np.ndarray  # (m,) cross-verifier discount, 1 = independent
    icc: np.ndarray  # (m,) intra-group correlation of members' evidence
    rho: np.ndarray  # (m, m) shrunk positive class-conditional correlations


@dataclass(frozen=True)
class FitV2:
    log_p1: np.ndarray  # (m, K) log P(bin | right)
    log_p0: np.ndarray  # (m, K) log P(bin | wrong)
    rho0: float  # P(no group right) on single-answer queries
    pi: float  # P(group right) on multi-answer queries
    structure: Structure
    posterior: np.ndarray  # (N,) per candidate, original order
    iterations: int
    converged: bool
    last_change: float

    @property
    def llr_table(self) -> np.ndarray:
        return self.log_p1 - self.log_p0


def independent_structure(m: int) -> Structure:
    return Structure(np.ones(m), np.zeros(m), np.zeros((m, m)))


def candidate_llr(bins: np.ndarray, table: np.ndarray) -> np.ndarray:
    """(N, m) per-verifier log-likelihood ratios; 0 where the verifier abstained."""
    m, width = table.shape
    flat = np.where(bins >= 0, np.arange(m)[None, :] * width + bins, 0)
    out: np.ndarray = np.where(bins >= 0, table.ravel()[flat], 0.0)
    return out


def group_evidence(llr: np.ndarray, layout: Layout, structure: Structure) -> tuple[np.ndarray, np.ndarray]:
    """(G,) pooled log-likelihood ratio per group and the (G, m) member discounts used."""
    sums = np.add.reduceat(llr, layout.group_starts, axis=0) if llr.shape[0] else np.zeros((0, llr.shape[1]))
    discount = 1.0 / (1.0 + (layout.group_size[:, None] - 1) * structure.icc[None, :])
    return (sums * discount) @ structure.weight, discount


def group_posteriors(evidence: np.ndarray, layout: Layout, rho0: float, pi: float) -> tuple[np.ndarray, np.ndarray]:
    """(G,) P(group right) and (Q,) P(no group right) (NaN on multi-answer queries)."""
    unique_g = layout.unique[layout.group_query]
    post = np.empty_like(evidence)
    logit = np.log(pi / (1 - pi)) + evidence[~unique_g]
    post[~unique_g] = 1.0 / (1.0 + np.exp(-np.clip(logit, -500, 500)))
    none = np.full(layout.query_groups.size, np.nan)
    if unique_g.any():
        log_w = np.log((1 - rho0) / layout.query_groups[layout.group_query]) + evidence
        top = np.maximum.reduceat(log_w, layout.query_starts)
        top = np.maximum(top, np.log(rho0))
        exp_w = np.exp(log_w - top[layout.group_query])
        exp_none = rho0 * np.exp(-top)  # exp(log rho0 - top)
        total = np.add.reduceat(exp_w, layout.query_starts) + exp_none
        post[unique_g] = (exp_w / total[layout.group_query])[unique_g]
        none[layout.unique] = (exp_none / total)[layout.unique]
    return post, none


def estimate_structure(llr: np.ndarray, observed: np.ndarray, q: np.ndarray, layout: Layout) -> Structure:
    """Intra-group and cross-verifier class-conditional correlations of the evidence, from posteriors."""
    n, m = llr.shape
    w1 = q[:, None] * observed
    w0 = (1 - q)[:, None] * observed
    mu1 = (w1 * llr).sum(0) / np.maximum(w1.sum(0), 1e-12)
    mu0 = (w0 * llr).sum(0) / np.maximum(w0.sum(0), 1e-12)
    resid = np.where(observed, llr - (q[:, None] * mu1 + (1 - q)[:, None] * mu0), 0.0)
    # intra-group: sum over groups of (sum r)^2 - sum r^2 over the member pairs' share of the variance
    multi = layout.group_size >= 2
    sums = np.add.reduceat(resid, layout.group_starts, axis=0)
    squares = np.add.reduceat(resid ** 2, layout.group_starts, axis=0)
    num = (sums[multi] ** 2 - squares[multi]).sum(0)
    den = ((layout.group_size[multi, None] - 1) * squares[multi]).sum(0)
    icc = np.clip(np.where(den > 1e-12, num / np.maximum(den, 1e-12), 0.0), 0.0, 1.0)
    # cross-verifier, on candidates; two standard errors of a correlation on n_obs pairs shrink it
    cov = resid.T @ resid
    sd = np.sqrt(np.maximum(np.diag(cov), 1e-12))
    corr = cov / np.outer(sd, sd)
    pairs = observed.T.astype(float) @ observed.astype(float)
    rho = np.clip(corr - 2.0 / np.sqrt(np.maximum(pairs, 1.0)), 0.0, 1.0)
    np.fill_diagonal(rho, 0.0)
    return Structure(1.0 / (1.0 + rho.sum(1)), icc, rho)


def initial_posterior(bins: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Soft start: per candidate, the mean over verifiers of its bin's position (0 low .. 1 high)."""
    pos = np.where(bins >= 0, bins / np.maximum(width[None, :] - 1, 1), np.nan)
    count = (~np.isnan(pos)).sum(1)
    out: np.ndarray = np.where(count > 0, np.nansum(pos, axis=1) / np.maximum(count, 1), 0.5)
    return np.clip(out, 0.02, 0.98)


def fit_v2(
    layout: Layout,
    n_bins: np.ndarray,
    *,
    learn_structure: bool = True,
    rounds: int = 2,
    smoothing: float = 0.5,
    tol: float = 1e-4,
    max_iter: int = 300,
) -> FitV2:
    """EM for the grouped, binned model on a layout; ``n_bins[j]`` bins in use for verifier j."""
    bins = layout.bins
    n, m = bins.shape
    width = int(n_bins.max(initial=1))
    valid = np.arange(width)[None, :] < n_bins[:, None]
    observed = bins >= 0
    flat = np.where(observed, np.arange(m)[None, :] * width + bins, 0)
    q = initial_posterior(bins, n_bins)
    structure = independent_structure(m)
    rho0, pi = 0.5, 0.5
    log_p1 = log_p0 = np.zeros((m, width))
    total_iter, converged, change = 0, False, np.inf
    none = np.full(layout.query_groups.size, np.nan)
    for round_ in range(rounds + 1 if learn_structure else 1):
        discount = 1.0 / (1.0 + (layout.group_size[:, None] - 1) * structure.icc[None, :])
        member_weight = discount[layout.group_of] * observed  # (N, m) M-step weight of each entry
        converged = False
        for _ in range(max_iter):
            total_iter += 1
            # M-step: class-conditional histograms, each group's members counted as its effective size
            c1 = np.bincount(flat.ravel(), (q[:, None] * member_weight).ravel(), m * width).reshape(m, width)
            c0 = np.bincount(flat.ravel(), ((1 - q)[:, None] * member_weight).ravel(), m * width).reshape(m, width)
            c1 = np.where(valid, c1 + smoothing, 0.0)
            c0 = np.where(valid, c0 + smoothing, 0.0)
            with np.errstate(divide="ignore"):
                new_p1 = np.where(valid, np.log(c1 / c1.sum(1, keepdims=True)), 0.0)
                new_p0 = np.where(valid, np.log(c0 / c0.sum(1, keepdims=True)), 0.0)
            log_p1, log_p0 = new_p1, new_p0
            g_post = np.add.reduceat(q, layout.group_starts) / layout.group_size if n else np.zeros(0)
            if (~layout.unique).any():
                multi = ~layout.unique[layout.group_query]
                pi = float(np.clip((g_post[multi].sum() + 1) / (multi.sum() + 2), 1e-4, 1 - 1e-4))
            if layout.unique.any():
                if np.isnan(none[layout.unique]).any():  # first M-step: no "none" posterior yet
                    top = np.maximum.reduceat(g_post, layout.query_starts)
                    none = np.where(layout.unique, 1 - top, np.nan)
                rho0 = float(np.clip((np.nansum(none[layout.unique]) + 1) / (layout.unique.sum() + 2), 1e-4, 1 - 1e-4))
            # E-step
            llr = candidate_llr(bins, log_p1 - log_p0)
            evidence, _ = group_evidence(llr, layout, structure)
            post, none = group_posteriors(evidence, layout, rho0, pi)
            new_q = post[layout.group_of]
            change = float(np.max(np.abs(new_q - q))) if n else 0.0
            q = new_q
            if change < tol:
                converged = True
                break
        if learn_structure and round_ < rounds:
            structure = estimate_structure(candidate_llr(bins, log_p1 - log_p0), observed, q, layout)
    posterior = np.empty(n)
    posterior[layout.order] = q
    return FitV2(log_p1, log_p0, rho0, pi, structure, posterior, total_iter, converged, change)
