"""Candidate-set context for the student: what a candidate's siblings say, computed without a model.

Weaver's posterior is a *group* quantity whenever its ensemble holds group verifiers (answer
agreement, embedding centrality): the same solution text is likely right next to three siblings
with the same answer and likely wrong next to three that disagree. A pairwise (prompt, candidate)
student cannot see that, so it cannot imitate such a teacher however long it trains (on the GSM8K
dev set its held-out golden AUROC stays near 0.5). These features hand it the sibling context for
the price of answer extraction (microseconds): the student's logit is the encoder's logit plus a
learned linear function of them (``CrossEncoderStudent``, ``context_features``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from models.answers import agreement_shares, extract_answer


def _sibling_agreement(candidates: Sequence[str]) -> np.ndarray:
    """Share of the other candidates whose final answer is equivalent (0 without an answer or siblings)."""
    shares = np.asarray(agreement_shares([extract_answer(c) for c in candidates]), dtype=float)
    return np.nan_to_num(shares, nan=0.0)


def _no_answer(candidates: Sequence[str]) -> np.ndarray:
    """1 where no final answer can be extracted (such candidates are almost never right)."""
    return np.array([float(extract_answer(c) is None) for c in candidates])


CONTEXT_FEATURES: dict[str, Callable[[Sequence[str]], np.ndarray]] = {
    "sibling_agreement": _sibling_agreement,
    "no_answer": _no_answer,
}
DEFAULT_CONTEXT_FEATURES: tuple[str, ...] = ("sibling_agreement", "no_answer")


def check_feature_names(names: Sequence[str]) -> tuple[str, ...]:
    unknown = [n for n in names if n not in CONTEXT_FEATURES]
    if unknown:
        raise ValueError(f"unknown context feature(s) {unknown}; known: {sorted(CONTEXT_FEATURES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate context features in {list(names)}")
    return tuple(names)


def context_matrix(candidates: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """(n_candidates, len(names)) feature matrix for one candidate set, columns in ``names`` order."""
    if not names:
        return np.zeros((len(candidates), 0))
    return np.stack([CONTEXT_FEATURES[name](candidates) for name in names], axis=1).astype(float)
