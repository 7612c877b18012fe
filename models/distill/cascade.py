"""The cascade rule: trust the cross-encoder when it is decisive, else fall back to the ensemble.

Shared by the serving aggregator (workers) and the benchmark so both take the same decisions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CascadeRule:
    """Fall back when the top-two margin or the top probability is below its threshold."""

    min_margin: float = 0.1
    min_confidence: float = 0.0

    def decide(self, probabilities: np.ndarray) -> tuple[bool, str]:
        """(use the ensemble?, why) for one query's cross-encoder probabilities."""
        p = np.sort(np.asarray(probabilities, dtype=float))[::-1]
        if p.size == 0 or np.isnan(p).any():
            return True, "cross-encoder gave no usable score"
        margin = float(p[0] - p[1]) if p.size > 1 else float("inf")
        if margin < self.min_margin:
            return True, f"top-two margin {margin:.3f} < {self.min_margin}"
        if p[0] < self.min_confidence:
            return True, f"top probability {p[0]:.3f} < {self.min_confidence}"
        return False, f"margin {margin:.3f}, top probability {p[0]:.3f}"
