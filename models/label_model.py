"""A binary label model fitted without labels: Dawid-Skene EM on verifier votes.

Model: each candidate has a latent correctness Y in {0, 1} with P(Y=1) = pi; verifier i votes
independently given Y with true-positive rate ``tpr[i] = P(vote=1 | Y=1)`` and false-positive rate
``fpr[i] = P(vote=1 | Y=0)``; an abstention (vote -1) carries no information and is skipped.

Why EM (and not Weaver's moment matching with SGD): the likelihood is exact for this model, each
iteration provably does not decrease it, abstentions drop out of the sums naturally, and the fit is
deterministic from a deterministic start (the soft majority vote of the verifiers, Dawid and Skene's
classic initialisation, which also fixes the label-swap symmetry on the side "verifiers are better
than chance on average"). A weak Beta(1+a, 1+a) prior keeps rates away from 0 and 1 on tiny fits.
We iterate to a tolerance and report whether it was reached, instead of a fixed small step budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ABSTAIN = -1


@dataclass(frozen=True)
class LabelModelFit:
    class_balance: float
    tpr: np.ndarray
    fpr: np.ndarray
    iterations: int
    converged: bool
    log_likelihood: float
    last_change: float
    identifiable: bool
    swapped: bool

    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        """Log-likelihood-ratio contributions of a positive and of a negative vote."""
        tpr = np.clip(self.tpr, 1e-6, 1 - 1e-6)
        fpr = np.clip(self.fpr, 1e-6, 1 - 1e-6)
        return np.log(tpr / fpr), np.log((1 - tpr) / (1 - fpr))


def _validate(votes: np.ndarray) -> np.ndarray:
    votes = np.asarray(votes)
    if votes.ndim != 2:
        raise ValueError(f"votes must be a 2-D (n_candidates, n_verifiers) array, got shape {votes.shape}")
    bad = ~np.isin(votes, (ABSTAIN, 0, 1))
    if bad.any():
        raise ValueError("votes must contain only -1 (abstain), 0 and 1")
    return votes.astype(np.int8, copy=False)


def _log_likelihood(pos: np.ndarray, neg: np.ndarray, weight: np.ndarray, pi: float,
                    tpr: np.ndarray, fpr: np.ndarray) -> float:
    tpr = np.clip(tpr, 1e-12, 1 - 1e-12)
    fpr = np.clip(fpr, 1e-12, 1 - 1e-12)
    ll1 = np.log(pi) + pos @ np.log(tpr) + neg @ np.log(1 - tpr)
    ll0 = np.log(1 - pi) + pos @ np.log(fpr) + neg @ np.log(1 - fpr)
    return float(weight @ np.logaddexp(ll1, ll0))


def fit_label_model(
    votes: np.ndarray,
    *,
    prior_strength: float = 1.0,
    tol: float = 1e-7,
    max_iter: int = 5000,
) -> LabelModelFit:
    """Fit (pi, tpr, fpr) by EM on an (n_candidates, n_verifiers) matrix of votes in {-1, 0, 1}.

    Rows with identical vote patterns are collapsed into one weighted row first, so the cost is in
    the number of distinct patterns. Converged means the largest parameter change of the last
    iteration fell below ``tol``.
    """
    votes = _validate(votes)
    n, m = votes.shape
    if n == 0 or m == 0:
        return LabelModelFit(0.5, np.full(m, 0.5), np.full(m, 0.5), 0, True, 0.0, 0.0, False, False)
    patterns, counts = np.unique(votes, axis=0, return_counts=True)
    weight = counts.astype(float)
    pos = (patterns == 1).astype(float)
    neg = (patterns == 0).astype(float)
    obs = pos + neg
    a = prior_strength

    # Dawid-Skene start: the share of positive votes among the verifiers that voted.
    n_obs = obs.sum(axis=1)
    q = np.where(n_obs > 0, pos.sum(axis=1) / np.maximum(n_obs, 1), 0.5)

    pi, tpr, fpr = 0.5, np.full(m, 0.5), np.full(m, 0.5)
    if m < 3:
        # Fewer than three verifiers: agreement cannot identify the rates (the likelihood has a
        # ridge and EM drifts along it). Take the soft majority vote as the label estimate: one
        # M-step, monotone in every vote, reported as not identifiable.
        max_iter = 1
    converged = False
    change = np.inf
    iteration = 0
    while iteration < max_iter:
        iteration += 1
        wq = weight * q
        wr = weight * (1.0 - q)
        new_pi = (wq.sum() + a) / (weight.sum() + 2 * a)
        new_tpr = (wq @ pos + a) / (wq @ obs + 2 * a)
        new_fpr = (wr @ pos + a) / (wr @ obs + 2 * a)
        change = max(abs(new_pi - pi), float(np.max(np.abs(new_tpr - tpr))), float(np.max(np.abs(new_fpr - fpr))))
        pi, tpr, fpr = float(new_pi), new_tpr, new_fpr
        w_pos = np.log(tpr / fpr)
        w_neg = np.log((1 - tpr) / (1 - fpr))
        logit = np.log(pi / (1 - pi)) + pos @ w_pos + neg @ w_neg
        q = 1.0 / (1.0 + np.exp(-np.clip(logit, -500, 500)))
        if change < tol or m < 3:
            converged = True
            break

    swapped = False
    if float(np.mean(tpr - fpr)) < 0:  # keep the side where verifiers beat chance on average
        pi, tpr, fpr = 1.0 - pi, fpr.copy(), tpr.copy()
        swapped = True
    return LabelModelFit(
        class_balance=pi,
        tpr=tpr,
        fpr=fpr,
        iterations=iteration,
        converged=converged,
        log_likelihood=_log_likelihood(pos, neg, weight, pi, tpr, fpr),
        last_change=float(change),
        identifiable=m >= 3,
        swapped=swapped,
    )


def posterior_log_odds(votes: np.ndarray, fit: LabelModelFit) -> np.ndarray:
    """log P(Y=1 | votes) / P(Y=0 | votes) for each row; abstentions contribute nothing."""
    w_pos, w_neg = fit.weights()
    pi = min(max(fit.class_balance, 1e-6), 1 - 1e-6)
    pos = (votes == 1).astype(float)
    neg = (votes == 0).astype(float)
    return np.log(pi / (1 - pi)) + pos @ w_pos + neg @ w_neg
