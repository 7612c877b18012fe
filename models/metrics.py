"""Evaluation metrics: selection accuracy with bootstrap intervals, AUROC, calibration."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float


def bootstrap_mean(values: np.ndarray, n_resamples: int = 2000, seed: int = 0, level: float = 0.95) -> Interval:
    """Mean of per-query values with a percentile bootstrap interval over queries."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(n_resamples, values.size))
    means = values[idx].mean(axis=1)
    alpha = (1 - level) / 2
    return Interval(float(values.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha)))


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN scores and unknown labels are skipped."""
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels, dtype=float)
    keep = ~np.isnan(scores) & ~np.isnan(labels)
    s, y = scores[keep], labels[keep]
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(s)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass(frozen=True)
class ReliabilityBin:
    """One equal-width probability bin of a reliability diagram."""

    low: float
    high: float
    count: int
    mean_probability: float
    accuracy: float  # share of the bin's candidates that are correct


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> tuple[ReliabilityBin, ...]:
    """The non-empty equal-width bins of ``probabilities`` (values in [0, 1]) with their observed accuracy;
    NaN scores and unknown labels are skipped. The bins ECE is computed over."""
    p = np.asarray(probabilities, dtype=float)
    y = np.asarray(labels, dtype=float)
    keep = ~np.isnan(p) & ~np.isnan(y)
    p, y = np.clip(p[keep], 0.0, 1.0), y[keep]
    index = np.minimum((p * n_bins).astype(int), n_bins - 1)
    out = []
    for b in range(n_bins):
        mask = index == b
        if mask.any():
            out.append(ReliabilityBin(b / n_bins, (b + 1) / n_bins, int(mask.sum()), float(p[mask].mean()),
                                      float(y[mask].mean())))
    return tuple(out)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> float:
    """ECE with equal-width bins: sum over bins of |mean(p) - mean(y)| weighted by bin share."""
    bins = reliability_bins(probabilities, labels, n_bins)
    total = sum(b.count for b in bins)
    if total == 0:
        return float("nan")
    return float(sum(b.count / total * abs(b.mean_probability - b.accuracy) for b in bins))


def brier_score(probabilities: np.ndarray, labels: np.ndarray) -> float:
    p = np.asarray(probabilities, dtype=float)
    y = np.asarray(labels, dtype=float)
    keep = ~np.isnan(p) & ~np.isnan(y)
    return float(np.mean((p[keep] - y[keep]) ** 2)) if keep.any() else float("nan")
