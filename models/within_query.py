"""Within-query contrasts: the part of a verifier's score that compares candidates of the same prompt.

A verifier's score moves with the prompt as well as with the candidate: a reward model rates every answer to
a hard prompt low, a judge is lenient on some topics. Selection only compares candidates of one prompt, and
with few candidates per prompt that per-prompt shift is what a pooled, label-free fit learns instead of the
verifier's skill (docs/label-model.md, "Small candidate sets"). The fixed-effects remedy of one-way ANOVA:
score each verifier by its *contrast*, the candidate's score minus the prompt's mean, which no per-prompt
shift survives.

Model, per verifier j, for the candidates of one query observed by j (at least two):

    c_ij = delta_j * (y_i - mean y) + gamma_j * x_ij + noise,   noise ~ N(0, var_j)

``y`` is the hypothesis "this answer group is right" (at most one group right), ``x_ij`` the candidate's
centred answer-group share (how many of the observed candidates give its answer). ``gamma`` absorbs what a
verifier says about group size alone: embedding consistency rises with the number of similar siblings
whether or not the answer is right, and answer agreement already counts that, so only the rest is
evidence. Under this model the log-likelihood ratio of "group g right" against "no group right" is a sum
over g's members of

    delta_j / var_j * (c_ij - gamma_j * x_ij)  -  delta_j**2 / (2 var_j) * (1 - f_ij)

with ``f_ij`` the share of observed candidates in i's group: one per-candidate evidence column per
verifier, which the v2 label model pools over answer groups with its dependency guard like any other.

Which verifiers are scored this way is decided from the data (``models.weaver_v2`` applies it): verifiers
that are constant inside every answer group (answer agreement: a function of the answers alone) carry no
within-group contrast, and verifiers whose scores sit on a few values (a verdict, a check that passes most
candidates: fewer bins than ``max_bins`` after quantile binning) fit a Gaussian contrast badly, its small
variance turning one rare low score into strong evidence; both keep their class-conditional histograms.
With ``WeaverV2Config.within_association`` (the default), a few-valued verifier keeps its histogram in this stage
only where its scores are associated with the other verifiers' verdict *within* queries
(``within_association`` below): a pooled histogram also learns how the
verifier's pass rate moves with the prompt's difficulty, which says nothing about which candidate of one
prompt is right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Contrasts:
    """Per-candidate terms of the contrast model for a flat block of queries (each query's rows contiguous)."""

    c: np.ndarray  # (N, m) score minus its query's mean over observed candidates; 0 where unusable
    x: np.ndarray  # (N, m) centred answer-group share
    f: np.ndarray  # (N, m) share of the query's observed candidates in the candidate's group
    usable: np.ndarray  # (N, m) bool: observed, and the query has at least two observed candidates


@dataclass(frozen=True)
class ContrastFit:
    delta: np.ndarray  # (m,) class effect on the contrast (0 for level verifiers)
    gamma: np.ndarray  # (m,) effect of the answer-group share
    var: np.ndarray  # (m,) residual variance


def level_verifiers(normalized: np.ndarray, group_of: np.ndarray, group_size: np.ndarray) -> np.ndarray:
    """(m,) bool: constant inside every answer group with two or more observed members (and there is one).

    A verifier that cannot tell members of one group apart scores the group, not the candidate.
    """
    m = normalized.shape[1]
    in_multi = group_size[group_of] >= 2
    if not in_multi.any():
        return np.zeros(m, dtype=bool)
    observed = ~np.isnan(normalized[in_multi])
    z = np.where(observed, normalized[in_multi], 0.0)
    g, size = group_of[in_multi], group_size.size
    count = _sum_by(observed.astype(float), g, size)
    mean = _sum_by(z, g, size) / np.maximum(count, 1)
    spread = _sum_by(np.where(observed, (z - mean[g]) ** 2, 0.0), g, size)  # squared deviations per group
    checked = count >= 2
    out: np.ndarray = checked.any(0) & (np.where(checked, spread, 0.0).max(0, initial=0.0) <= 1e-12)
    return out


def contrasts(normalized: np.ndarray, group_of: np.ndarray, query_of: np.ndarray, n_queries: int) -> Contrasts:
    """Contrast terms for candidates of many queries (``query_of``: each candidate's query, 0..n_queries-1)."""
    observed = ~np.isnan(normalized)
    z = np.where(observed, normalized, 0.0)
    n_obs = _sum_by(observed.astype(float), query_of, n_queries)  # (Q, m)
    mean = _sum_by(z, query_of, n_queries) / np.maximum(n_obs, 1)
    usable = observed & (n_obs[query_of] >= 2)
    in_group = _sum_by(observed.astype(float), group_of, int(group_of.max(initial=-1)) + 1)  # (G, m)
    f = np.where(usable, in_group[group_of] / np.maximum(n_obs[query_of], 1), 0.0)
    f_mean = _sum_by(f, query_of, n_queries) / np.maximum(n_obs, 1)
    c = np.where(usable, z - mean[query_of], 0.0)
    x = np.where(usable, f - f_mean[query_of], 0.0)
    return Contrasts(c, x, f, usable)


def fit_contrasts(terms: Contrasts, q: np.ndarray, query_of: np.ndarray, n_queries: int,
                  columns: np.ndarray) -> ContrastFit:
    """M-step: per verifier in ``columns``, weighted least squares of the contrast on the expected centred
    label and the group share, under candidate posteriors ``q`` (expectations over "which group is right")."""
    m = terms.c.shape[1]
    u = terms.usable.astype(float)
    qc = q[:, None]
    a00 = (qc * (1 - terms.f) * u).sum(0)
    a01 = (qc * terms.x).sum(0)
    a11 = (terms.x ** 2).sum(0)
    b0 = (qc * terms.c).sum(0)
    b1 = (terms.c * terms.x).sum(0)
    det = a00 * a11 - a01 ** 2
    ok = columns & (a00 > 1e-9)
    with_share = ok & (a11 > 1e-9) & (det > 1e-12 * np.maximum(a00 * a11, 1e-12))
    delta = np.zeros(m)
    gamma = np.zeros(m)
    delta[with_share] = ((b0 * a11 - b1 * a01) / np.where(with_share, det, 1.0))[with_share]
    gamma[with_share] = ((b1 * a00 - b0 * a01) / np.where(with_share, det, 1.0))[with_share]
    alone = ok & ~with_share
    delta[alone] = (b0 / np.maximum(a00, 1e-12))[alone]
    resid = terms.c - gamma * terms.x
    rss = (resid ** 2).sum(0) - 2 * delta * (qc * resid).sum(0) + delta ** 2 * a00
    dof = np.maximum(_sum_by(u, query_of, n_queries) - 1, 0).sum(0)
    var = np.where(ok, np.maximum(rss / np.maximum(dof, 1), 1e-6), 1.0)
    return ContrastFit(np.where(ok, delta, 0.0), np.where(ok, gamma, 0.0), var)


def contrast_evidence(terms: Contrasts, fit: ContrastFit, columns: np.ndarray) -> np.ndarray:
    """(N, m) per-candidate log-likelihood ratio "its group right" against "no group right" in ``columns``
    (0 elsewhere and where unusable); summing it over a group's members gives the group's evidence."""
    scale = fit.delta / fit.var
    out = scale * (terms.c - fit.gamma * terms.x) - 0.5 * fit.delta * scale * (1 - terms.f)
    result: np.ndarray = np.where(terms.usable & columns[None, :], out, 0.0)
    return result


def within_association(normalized: np.ndarray, posterior: np.ndarray, query_of: np.ndarray,
                       n_queries: int) -> np.ndarray:
    """(m,) z statistic of each verifier's association with ``posterior`` inside queries (Mantel's test).

    Both are centred per query over the candidates the verifier scored, so no per-prompt shift of either
    enters. Under the null hypothesis that a verifier's scores are exchangeable among the candidates of a
    query, the statistic is approximately standard normal; the variance is the permutation variance summed
    over queries. 0 for a verifier that never varies inside a query.
    """
    observed = ~np.isnan(normalized)
    obs = observed.astype(float)
    z = np.where(observed, normalized, 0.0)
    p = posterior[:, None] * obs
    n_obs = _sum_by(obs, query_of, n_queries)  # (Q, m)
    dz = np.where(observed, z - (_sum_by(z, query_of, n_queries) / np.maximum(n_obs, 1))[query_of], 0.0)
    dp = np.where(observed, p - (_sum_by(p, query_of, n_queries) / np.maximum(n_obs, 1))[query_of], 0.0)
    stat = (dz * dp).sum(0)
    per_query = _sum_by(dz ** 2, query_of, n_queries) * _sum_by(dp ** 2, query_of, n_queries)
    var = np.where(n_obs >= 2, per_query / np.maximum(n_obs - 1, 1), 0.0).sum(0)
    out: np.ndarray = np.where(var > 0, stat / np.sqrt(np.maximum(var, 1e-300)), 0.0)
    return out


def _sum_by(values: np.ndarray, index: np.ndarray, size: int) -> np.ndarray:
    """(size, m) column sums of (N, m) ``values`` per ``index`` (one ``bincount`` over all columns)."""
    m = values.shape[1]
    flat = (index[:, None] * m + np.arange(m)[None, :]).ravel()
    out: np.ndarray = np.bincount(flat, values.ravel().astype(float), minlength=size * m).reshape(size, m)
    return out
