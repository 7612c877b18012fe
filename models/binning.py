"""Label-free discretization of normalized verifier scores into a few ordered bins.

The second-generation label model keeps a class-conditional histogram per verifier instead of one
yes/no vote: a reward model's margin and answer agreement's levels stay distinct. A verifier with
few distinct values (a verdict, agreement over 4 candidates) gets one bin per value; a continuous
one gets equal-mass bins of its pooled scores (quantiles read no labels), plus its Otsu cut so the
accuracy of the classic yes/no vote can still be read off the histogram.
"""

from __future__ import annotations

import numpy as np

from models.thresholds import otsu_from_counts


def bin_edges(values: np.ndarray, max_bins: int) -> tuple[np.ndarray, float]:
    """Interior cut points (ascending) for one verifier's normalized scores, and its Otsu cut; NaN ignored.

    A value ``v`` falls in bin ``sum(v >= edges)``; ``len(edges) + 1`` bins in all. With
    ``max_bins <= 2`` the only cut is Otsu's (version 1's binarization).
    """
    finite = values[np.isfinite(values)]
    unique, counts = np.unique(finite, return_counts=True)
    otsu = otsu_from_counts(unique, counts)
    if unique.size < 2:
        return np.empty(0), otsu
    if max_bins <= 2:
        return np.array([otsu]), otsu
    if unique.size <= max_bins:
        return (unique[:-1] + unique[1:]) / 2.0, otsu
    cdf = np.cumsum(counts) / counts.sum()
    cuts = unique[np.minimum(np.searchsorted(cdf, np.arange(1, max_bins) / max_bins, side="right"), unique.size - 1)]
    cuts = np.unique(np.append(cuts, otsu))
    # a cut at or below the minimum would leave its lower bin empty forever
    return cuts[cuts > unique[0]], otsu


def digitize(normalized: np.ndarray, edges: list[np.ndarray]) -> np.ndarray:
    """Bin index per entry of an (n, m) matrix of scores in [0, 1]; -1 where NaN (abstain)."""
    return Digitizer(edges)(normalized)


class Digitizer:
    """All verifiers binned by one ``searchsorted``: verifier j's edges are shifted to [2j, 2j + 1].

    Normalized scores lie in [0, 1], so the shifted ranges never overlap; the bin is the number of
    shifted edges at or below the shifted score, minus the edges of the verifiers before j.
    """

    def __init__(self, edges: list[np.ndarray]) -> None:
        self.shift = 2.0 * np.arange(len(edges))
        self.flat = np.concatenate([e + s for e, s in zip(edges, self.shift, strict=True)]) if edges else np.empty(0)
        self.before = np.concatenate([[0], np.cumsum([len(e) for e in edges])[:-1]]).astype(np.int64)
        self.index = np.arange(len(edges))

    def __call__(self, normalized: np.ndarray) -> np.ndarray:
        missing = np.isnan(normalized)
        bins = (self.global_bins(normalized, missing) - self.before - self.index).astype(np.int16)
        bins[missing] = -1
        return bins

    def global_bins(self, normalized: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """Index of each entry's bin among all verifiers' bins laid end to end (junk where missing)."""
        shifted = np.where(missing, 0.0, normalized)
        shifted += self.shift
        out: np.ndarray = np.searchsorted(self.flat, shifted, side="right")
        out += self.index
        return out


def n_bins(edges: list[np.ndarray]) -> np.ndarray:
    return np.array([len(e) + 1 for e in edges], dtype=np.int64)
