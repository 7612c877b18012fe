"""Label-free binarization thresholds, one per verifier.

Weaver's reference binarizes with one hand-tuned constant per dataset (0.01 to 0.95) or with
quantiles that need the true class balance. We pick each verifier's threshold with Otsu's rule:
the cut of its normalized scores that maximizes the between-class variance (equivalently, 1-D
two-means). It reads no labels, is deterministic, puts binary verdicts at 0.5, and lands in the gap
between the two modes of a verifier that separates correct from incorrect answers.
"""

from __future__ import annotations

import numpy as np


def otsu_threshold(values: np.ndarray) -> float:
    """Cut maximizing between-class variance; NaN ignored. Returns NaN if fewer than 2 distinct values.

    The vote is ``value >= threshold``; the threshold is the midpoint between the two neighbouring
    distinct values around the best cut.
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan")
    unique, counts = np.unique(finite, return_counts=True)
    return otsu_from_counts(unique, counts)


def otsu_from_counts(unique: np.ndarray, counts: np.ndarray) -> float:
    """Otsu's cut from sorted distinct values and their counts (NaN with fewer than 2 values)."""
    if unique.size < 2:
        return float("nan")
    weights = counts / counts.sum()
    w0 = np.cumsum(weights)[:-1]
    w1 = 1.0 - w0
    cum_mean = np.cumsum(weights * unique)[:-1]
    total_mean = float(np.sum(weights * unique))
    mean0 = cum_mean / w0
    mean1 = (total_mean - cum_mean) / w1
    between = w0 * w1 * (mean0 - mean1) ** 2
    best = int(np.argmax(between))
    return float((unique[best] + unique[best + 1]) / 2.0)


def fit_thresholds(normalized: np.ndarray) -> np.ndarray:
    """One Otsu threshold per column of an (n, m) normalized matrix; 0.5 where undefined."""
    thresholds = np.array([otsu_threshold(normalized[:, j]) for j in range(normalized.shape[1])])
    return np.where(np.isnan(thresholds), 0.5, thresholds)
