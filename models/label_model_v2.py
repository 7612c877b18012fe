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

from models.within_query import ContrastFit, Contrasts, contrast_evidence, fit_contrasts


@dataclass(frozen=True)
class Layout:
    """Flattened candidates (original order) with their answer groups; each query's groups are contiguous."""

    bins: np.ndarray  # (N, m) int16, -1 abstain
    group_of: np.ndarray  # (N,) group index per candidate
    group_size: np.ndarray  # (G,)
    group_query: np.ndarray  # (G,) query index
    query_starts: np.ndarray  # (Q,) first group of each query
    query_groups: np.ndarray  # (Q,) number of groups
    unique: np.ndarray  # (Q,) bool: at most one group right

    @property
    def all_singletons(self) -> bool:
        return bool(self.group_size.size == self.bins.shape[0])


def build_layout(bins: list[np.ndarray], groups: list[np.ndarray], unique: list[bool]) -> Layout:
    """``groups[q]``: group id per candidate (-1: no answer, its own group)."""
    group_of, query_groups = [], []
    n_groups = 0
    for g in groups:
        g = np.asarray(g, dtype=np.int64).copy()
        loners = g < 0
        g[loners] = g.max(initial=-1) + 1 + np.arange(int(loners.sum()))
        _, local = np.unique(g, return_inverse=True)
        count = int(local.max(initial=-1)) + 1
        group_of.append(n_groups + local.ravel())
        query_groups.append(count)
        n_groups += count
    m = bins[0].shape[1] if bins else 0
    group_of_all = np.concatenate(group_of) if group_of else np.empty(0, dtype=np.int64)
    counts = np.array(query_groups, dtype=np.int64)
    return Layout(
        bins=np.vstack(bins) if bins else np.empty((0, m), dtype=np.int16),
        group_of=group_of_all,
        group_size=np.bincount(group_of_all, minlength=n_groups),
        group_query=np.repeat(np.arange(counts.size), counts),
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
    contrast: ContrastFit | None = None

    @property
    def llr_table(self) -> np.ndarray:
        return self.log_p1 - self.log_p0


def independent_structure(m: int) -> Structure:
    return Structure(np.ones(m), np.zeros(m), np.zeros((m, m)))


def abstain_index(bins: np.ndarray, width: int) -> np.ndarray:
    """Flat index into an (m, width + 1) table whose last column is 0: abstentions carry no evidence."""
    m = bins.shape[1]
    out: np.ndarray = np.arange(m)[None, :] * (width + 1) + np.where(bins >= 0, bins, width)
    return out


def extend(table: np.ndarray) -> np.ndarray:
    """(m, width) -> (m, width + 1) with a zero column for abstentions."""
    return np.hstack([table, np.zeros((table.shape[0], 1))])


def member_weights(layout: Layout, structure: Structure) -> np.ndarray:
    """(N, m) weight of each candidate's evidence in its group's: cross-verifier x member discount."""
    discount = 1.0 / (1.0 + (layout.group_size[layout.group_of, None] - 1) * structure.icc[None, :])
    out: np.ndarray = discount * structure.weight[None, :]
    return out


def group_evidence(llr: np.ndarray, layout: Layout, weights: np.ndarray) -> np.ndarray:
    """(G,) pooled log-likelihood ratio per group, from (N, m) evidence and its member weights."""
    per_candidate = (llr * weights).sum(1)
    if layout.all_singletons:
        return per_candidate
    out: np.ndarray = np.bincount(layout.group_of, per_candidate, minlength=layout.group_size.size)
    return out


def group_posteriors(evidence: np.ndarray, layout: Layout, rho0: float | np.ndarray,
                     pi: float) -> tuple[np.ndarray, np.ndarray]:
    """(G,) P(group right) and (Q,) P(no group right) (NaN on multi-answer queries); ``rho0``, the prior
    P(no group right), is one number or one per query."""
    unique_g = layout.unique[layout.group_query]
    post = np.empty_like(evidence)
    logit = np.log(pi / (1 - pi)) + evidence[~unique_g]
    post[~unique_g] = 1.0 / (1.0 + np.exp(-np.clip(logit, -500, 500)))
    none = np.full(layout.query_groups.size, np.nan)
    if unique_g.any():
        rho = np.broadcast_to(np.asarray(rho0, dtype=float), layout.query_groups.shape)
        log_w = np.log((1 - rho[layout.group_query]) / layout.query_groups[layout.group_query]) + evidence
        top = np.maximum(np.maximum.reduceat(log_w, layout.query_starts), np.log(rho))
        exp_w = np.exp(log_w - top[layout.group_query])
        exp_none = np.exp(np.log(rho) - top)
        total = np.add.reduceat(exp_w, layout.query_starts) + exp_none
        post[unique_g] = (exp_w / total[layout.group_query])[unique_g]
        none[layout.unique] = (exp_none / total)[layout.unique]
    return post, none


def group_posterior_of(q: np.ndarray, layout: Layout) -> np.ndarray:
    """(G,) each group's P(right) from its members' per-candidate posteriors (equal within a group)."""
    if layout.all_singletons:
        return q
    out: np.ndarray = np.bincount(layout.group_of, q, minlength=layout.group_size.size) / layout.group_size
    return out


def _at_least(per_size: np.ndarray) -> np.ndarray:
    """For k = 1 .. len(per_size) - 1, the sum of ``per_size[n]`` over n >= k (a suffix sum)."""
    out: np.ndarray = np.cumsum(per_size[::-1])[::-1][1:]
    return out


def none_right_by_size(posterior: np.ndarray, layout: Layout) -> np.ndarray:
    """P(no candidate right) in a set of k candidates, for k = 1 .. the largest single-answer query, read
    off the fitted per-candidate posterior (no labels): the chance that k of a query's n candidates drawn
    at random miss the right group, averaged over the queries with at least k candidates and smoothed as
    the M-step smooths ``rho0`` (so the value at the fitted size is ``rho0``).

    Why: one P(no group right) fitted on 32-candidate sets is far too low for a 4-candidate prefix (a
    query's right answer is often absent from 4 samples and rarely from 32): adaptive N's early rounds and
    any set smaller than the fitted ones were over-confident. Candidates of a query are exchangeable
    samples, so random subsets stand for prefixes. Empty when no query has unique answers."""
    queries = np.flatnonzero(layout.unique)
    if queries.size == 0:
        return np.empty(0)
    g_post = group_posterior_of(posterior, layout)
    size = np.add.reduceat(layout.group_size, layout.query_starts)  # candidates per query
    none = np.clip(1.0 - np.add.reduceat(g_post, layout.query_starts), 0.0, 1.0)
    largest = int(size[queries].max())
    # queries with n candidates add their P(none right) to every k <= n
    total = _at_least(np.bincount(size[queries], none[queries], minlength=largest + 1))
    # a right group of s members among n misses a random k-subset with C(n - s, k) / C(n, k)
    # = prod_{i < k} (n - s - i) / (n - i): one product per distinct (n, s), weighted by its groups' mass
    in_unique = layout.unique[layout.group_query]
    pairs = np.stack([size[layout.group_query][in_unique], layout.group_size[in_unique]], axis=1)
    distinct, inverse = np.unique(pairs, axis=0, return_inverse=True)
    mass = np.bincount(inverse.ravel(), g_post[in_unique], minlength=len(distinct))
    for (n, s), weight in zip(distinct, mass, strict=True):
        steps = np.arange(n)
        total[:n] += weight * np.cumprod(np.clip((n - s - steps) / (n - steps), 0.0, None))
    counted = _at_least(np.bincount(size[queries], minlength=largest + 1))
    return np.clip((total + 1) / (counted + 2), 1e-4, 1 - 1e-4)


STRUCTURE_ROWS = 20_000  # correlations are estimated on at most about this many candidates (whole queries)


def structure_rows(layout: Layout, limit: int = STRUCTURE_ROWS) -> np.ndarray:
    """Candidates of every k-th query, k chosen so that about ``limit`` candidates remain (all when fewer)."""
    n = layout.bins.shape[0]
    if n <= limit:
        return np.arange(n)
    step = int(np.ceil(n / limit))
    query_of = layout.group_query[layout.group_of]
    return np.flatnonzero(query_of % step == 0)


def estimate_structure(llr: np.ndarray, observed: np.ndarray, q: np.ndarray, layout: Layout,
                       rows: np.ndarray | None = None) -> Structure:
    """Intra-group and cross-verifier class-conditional correlations of the evidence, from posteriors.

    ``rows`` (whole queries) bound the cost on large fits; a correlation from 20,000 candidates has
    a standard error near 0.007, far below the shrinkage applied to it.
    """
    if rows is not None:
        llr, observed, q = llr[rows], observed[rows], q[rows]
        group_of = layout.group_of[rows]
    else:
        group_of = layout.group_of
    w1 = q[:, None] * observed
    w0 = (1 - q)[:, None] * observed
    mu1 = (w1 * llr).sum(0) / np.maximum(w1.sum(0), 1e-12)
    mu0 = (w0 * llr).sum(0) / np.maximum(w0.sum(0), 1e-12)
    resid = np.where(observed, llr - (q[:, None] * mu1 + (1 - q)[:, None] * mu0), 0.0)
    m = llr.shape[1]
    icc = np.zeros(m)
    in_multi = layout.group_size[group_of] >= 2
    if in_multi.any():
        # pairs of members: ((sum r)^2 - sum r^2) over (n - 1) sum r^2, summed over groups
        from scipy.sparse import csr_matrix

        members = group_of[in_multi]
        member = csr_matrix((np.ones(members.size), (members, np.flatnonzero(in_multi))),
                            shape=(layout.group_size.size, llr.shape[0]))
        sums = member @ resid
        squares = member @ (resid ** 2)
        num = (sums ** 2 - squares).sum(0)
        den = ((layout.group_size[:, None] - 1) * squares).sum(0)
        icc = np.clip(np.where(den > 1e-12, num / np.maximum(den, 1e-12), 0.0), 0.0, 1.0)
    # cross-verifier, on candidates; two standard errors of a correlation on n_obs pairs shrink it
    cov = resid.T @ resid
    sd = np.sqrt(np.maximum(np.diag(cov), 1e-12))
    corr = cov / np.outer(sd, sd)
    pairs = observed.T @ observed
    rho = np.clip(corr - 2.0 / np.sqrt(np.maximum(pairs, 1.0)), 0.0, 1.0)
    np.fill_diagonal(rho, 0.0)
    return Structure(1.0 / (1.0 + rho.sum(1)), icc, rho)


def initial_posterior(bins: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Soft start: per candidate, the mean over verifiers of its bin's position (0 low .. 1 high)."""
    observed = bins >= 0
    pos = np.where(observed, bins / np.maximum(width[None, :] - 1, 1), 0.0)
    count = observed.sum(1)
    out: np.ndarray = np.where(count > 0, pos.sum(1) / np.maximum(count, 1), 0.5)
    return np.clip(out, 0.02, 0.98)


@dataclass(frozen=True)
class Within:
    """Verifiers scored by within-query contrasts (``models.within_query``) instead of histograms."""

    terms: Contrasts
    columns: np.ndarray  # (m,) bool
    query_of: np.ndarray  # (N,) query of each candidate
    start: np.ndarray  # (N,) initial candidate posteriors (from the histogram-only fit)


def fit_v2(
    layout: Layout,
    n_bins: np.ndarray,
    *,
    within: Within | None = None,
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
    observed = (bins >= 0).astype(float)
    flat = abstain_index(bins, width).ravel()
    size = m * (width + 1)
    q = initial_posterior(bins, n_bins) if within is None else within.start.copy()
    contrast: ContrastFit | None = None
    structure = independent_structure(m)
    rho0, pi = 0.5, 0.5
    log_p1 = log_p0 = np.zeros((m, width))
    total_iter, converged, change = 0, False, np.inf
    none = np.full(layout.query_groups.size, np.nan)
    multi_g = ~layout.unique[layout.group_query]
    subset = structure_rows(layout)
    for round_ in range(rounds + 1 if learn_structure else 1):
        weights = member_weights(layout, structure)
        counted = (weights / structure.weight[None, :] * observed).ravel()  # M-step: members' effective count
        converged = False
        for _ in range(max_iter):
            total_iter += 1
            # M-step: class-conditional histograms; pi and rho0 from group posteriors
            c1 = np.bincount(flat, np.repeat(q, m) * counted, size).reshape(m, width + 1)[:, :width]
            c0 = np.bincount(flat, np.repeat(1 - q, m) * counted, size).reshape(m, width + 1)[:, :width]
            c1 = np.where(valid, c1 + smoothing, 0.0)
            c0 = np.where(valid, c0 + smoothing, 0.0)
            with np.errstate(divide="ignore"):
                log_p1 = np.where(valid, np.log(c1 / c1.sum(1, keepdims=True)), 0.0)
                log_p0 = np.where(valid, np.log(c0 / c0.sum(1, keepdims=True)), 0.0)
            g_post = group_posterior_of(q, layout)
            if multi_g.any():
                pi = float(np.clip((g_post[multi_g].sum() + 1) / (multi_g.sum() + 2), 1e-4, 1 - 1e-4))
            if layout.unique.any():
                if np.isnan(none[layout.unique]).any():  # first M-step: no "none" posterior yet
                    none = np.where(layout.unique, 1 - np.maximum.reduceat(g_post, layout.query_starts), np.nan)
                rho0 = float(np.clip((np.nansum(none[layout.unique]) + 1) / (layout.unique.sum() + 2),
                                     1e-4, 1 - 1e-4))
            if within is not None:
                contrast = fit_contrasts(within.terms, q, within.query_of, layout.query_groups.size, within.columns)
            # E-step
            llr = _evidence(log_p1 - log_p0, flat, n, m, within, contrast)
            post, none = group_posteriors(group_evidence(llr, layout, weights), layout, rho0, pi)
            new_q = post if layout.all_singletons else post[layout.group_of]
            change = float(np.max(np.abs(new_q - q))) if n else 0.0
            q = new_q
            if change < tol:
                converged = True
                break
        if learn_structure and round_ < rounds:
            llr = _evidence(log_p1 - log_p0, flat, n, m, within, contrast)
            structure = estimate_structure(llr, observed, q, layout, subset)
    return FitV2(log_p1, log_p0, rho0, pi, structure, q, total_iter, converged, change, contrast)


def fitted_evidence(fit: FitV2, layout: Layout, within: Within | None = None) -> np.ndarray:
    """(N, m) evidence of each candidate on ``layout`` under a fitted model (the E-step's, before pooling)."""
    n, m = layout.bins.shape
    flat = abstain_index(layout.bins, fit.log_p1.shape[1]).ravel()
    return _evidence(fit.llr_table, flat, n, m, within, fit.contrast)


def _evidence(table: np.ndarray, flat: np.ndarray, n: int, m: int, within: Within | None,
              contrast: ContrastFit | None) -> np.ndarray:
    """(N, m) evidence: histogram log-ratios, with contrast evidence in the within-query columns."""
    llr: np.ndarray = extend(table).ravel()[flat].reshape(n, m)
    if within is not None and contrast is not None:
        llr = np.where(within.columns[None, :], contrast_evidence(within.terms, contrast, within.columns), llr)
    return llr
