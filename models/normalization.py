"""Per-verifier score normalization, fitted once and persisted with the model.

Weaver's reference code re-normalizes every batch on that batch's own min/max, so one query's
scores are stretched over [0, 1] whatever they are. Here the statistics are fitted on the fit data,
stored in the artifact and applied unchanged at serving time:

* ``identity``: scores already in [0, 1] (judge verdicts, probabilities, agreement shares).
* ``robust_sigmoid``: unbounded scores (reward-model logits) go through
  ``sigmoid((x - median) / scale)`` with ``scale = IQR / 1.349`` (the standard deviation of a
  normal with that IQR). Monotone, bounded, robust to outliers, defined for unseen extremes.
* ``constant``: a verifier that never varied carries no information; it maps to 0.5.
* ``empty``: never produced a score; everything maps to NaN (abstain).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

NormKind = Literal["identity", "robust_sigmoid", "constant", "empty"]
_KINDS: tuple[NormKind, ...] = ("identity", "robust_sigmoid", "constant", "empty")


@dataclass(frozen=True)
class Normalizer:
    """Column-wise normalization of an (n_candidates, n_verifiers) score matrix."""

    kinds: tuple[NormKind, ...]
    center: np.ndarray
    scale: np.ndarray
    _sigmoid: np.ndarray = field(init=False, repr=False, compare=False)
    _constant: np.ndarray = field(init=False, repr=False, compare=False)
    _empty: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        codes = np.array([_KINDS.index(k) for k in self.kinds], dtype=np.int8)
        object.__setattr__(self, "_sigmoid", np.flatnonzero(codes == 1))
        object.__setattr__(self, "_constant", np.flatnonzero(codes == 2))
        object.__setattr__(self, "_empty", np.flatnonzero(codes == 3))

    @classmethod
    def fit(cls, scores: np.ndarray) -> Normalizer:
        """Fit on pooled scores, shape (n_candidates, n_verifiers); NaN entries are ignored."""
        scores = np.asarray(scores, dtype=float)
        n_verifiers = scores.shape[1]
        kinds: list[NormKind] = []
        center = np.zeros(n_verifiers)
        scale = np.ones(n_verifiers)
        for j in range(n_verifiers):
            column = scores[:, j]
            finite = column[np.isfinite(column)]
            if finite.size == 0:
                kinds.append("empty")
                continue
            low, high = float(finite.min()), float(finite.max())
            if high - low <= 1e-12:
                kinds.append("constant")
                center[j] = low
                continue
            if low >= 0.0 and high <= 1.0:
                kinds.append("identity")
                continue
            q25, median, q75 = np.quantile(finite, [0.25, 0.5, 0.75])
            spread = (q75 - q25) / 1.349
            if spread <= 1e-12:  # heavily tied scores: fall back to the standard deviation
                spread = float(finite.std()) or (high - low) / 4.0
            kinds.append("robust_sigmoid")
            center[j] = median
            scale[j] = spread
        return cls(kinds=tuple(kinds), center=center, scale=scale)

    def transform(self, scores: np.ndarray) -> np.ndarray:
        """Normalize into [0, 1]; NaN stays NaN (abstention). Each kind touches only its own columns: this
        runs on every request, once per verifier score."""
        x = np.asarray(scores, dtype=float)
        out: np.ndarray = np.minimum(np.maximum(x, 0.0), 1.0)  # identity; both propagate NaN
        if self._sigmoid.size:
            with np.errstate(over="ignore"):  # exp overflows to inf for far-below-median scores: sigmoid 0
                z = np.exp((self.center[self._sigmoid] - x[..., self._sigmoid]) / self.scale[self._sigmoid])
            z += 1.0
            out[..., self._sigmoid] = np.reciprocal(z, out=z)
        if self._constant.size:
            out[..., self._constant] = np.where(np.isnan(x[..., self._constant]), np.nan, 0.5)
        if self._empty.size:
            out[..., self._empty] = np.nan
        return out

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {"kind": k, "center": float(c), "scale": float(s)}
            for k, c, s in zip(self.kinds, self.center, self.scale, strict=True)
        ]

    @classmethod
    def from_json(cls, items: list[dict[str, Any]]) -> Normalizer:
        kinds: list[NormKind] = []
        for item in items:
            kind = item["kind"]
            if kind not in _KINDS:
                raise ValueError(f"unknown normalization kind {kind!r}")
            kinds.append(kind)
        return cls(
            kinds=tuple(kinds),
            center=np.array([float(i["center"]) for i in items]),
            scale=np.array([float(i["scale"]) for i in items]),
        )


def observed_mean(normalized: np.ndarray, empty: float = float("nan")) -> np.ndarray:
    """Per row, the mean of the non-NaN normalized scores; ``empty`` where a row has none."""
    observed = ~np.isnan(normalized)
    count = observed.sum(axis=1)
    total = np.where(observed, normalized, 0.0).sum(axis=1)
    out: np.ndarray = np.where(count > 0, total / np.maximum(count, 1), empty)
    return out
