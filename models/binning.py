"""Label-free discretization of normalized verifier scores into a few ordered bins.

The second-generation label model keeps a class-conditional histogram per verifier instead of one
yes/no vote: a reward model's margin and answer agreement's levels stay distinct. A verifier with
few distinct values (a verdict, agreement over 4 candidates) gets one bin per value; a continuous
one gets equal-mass bins of its pooled scores (quantiles read no labels), plus its Otsu cut so the
accuracy of the classic yes/no vote can still be read off the histogram.
"""

from __future__ import annotations

import numpy as np

from models.thresholds import otsu_threshold


def bin_edges(values: np.ndarray, max_bins: int) -> np.ndarray:
    """Interior cut points (ascending) for one verifier's normalized scores; NaN ignored.

    A value ``v`` falls in bin ``sum(v >= edges)``; ``len(edges) + 1`` bins in all.
    """
    finite = values[np.isfinite(values)]
    unique = np.unique(finite)
    if unique.size < 2:
        return np.empty(0)
    if unique.size <= max_bins:
        return (unique[:-1] + unique[1:]) / 2.0
    cuts = np.quantile(finite, np.arange(1, max_bins) / max_bins)
    otsu = otsu_threshold(finite)
    if np.isfinite(otsu):
        cuts = np.append(cuts, otsu)
    cuts = np.unique(cuts)
    # a cut equal to the minimum would leave its lower bin empty forever
    return cuts[(cuts > unique[0]) & (cuts <= unique[-1])]


def digitize(normalized: np.ndarray, edges: np.ndarray, width: int) -> np.ndarray:
    """Bin index per entry of an (n, m) matrix; -1 where NaN (abstain).

    ``edges`` is (m, width - 1) padded with +inf, so every verifier is binned in one vectorized pass.
    """
    x = np.where(np.isnan(normalized), -np.inf, normalized)
    bins = (x[:, :, None] >= edges[None, :, :]).sum(axis=2).astype(np.int16)
    bins[np.isnan(normalized)] = -1
    return bins


def padded_edges(edges: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """Stack per-verifier edges into an (m, width - 1) array padded with +inf; returns (array, width)."""
    width = max((len(e) for e in edges), default=0) + 1
    out = np.full((len(edges), max(width - 1, 0)), np.inf)
    for j, e in enumerate(edges):
        out[j, : len(e)] = e
    return out, width
