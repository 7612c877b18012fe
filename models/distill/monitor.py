"""Held-out metrics for a student: proxy (agreement with the teacher) and golden (against labels).

Proxy metrics need no labels, so they are available in every regime; golden metrics appear only
where held-out queries carry labels. Teacher hacking is the two moving apart (Tiapkin et al. 2025).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from models.distill.dataset import DistillQuery
from models.metrics import auroc, brier_score, expected_calibration_error

_EPS = 1e-6


@dataclass(frozen=True)
class EvalPoint:
    step: int
    pairs_seen: int
    epoch: float
    train_loss: float  # mean soft BCE over the steps since the previous evaluation
    proxy_bce: float  # soft BCE of the student against the teacher (forward KL up to a constant)
    proxy_kl: float  # Bernoulli KL(teacher || student), 0 when they agree exactly
    proxy_mse: float
    proxy_top1: float  # share of queries where student and teacher pick the same candidate
    golden_bce: float | None = None
    golden_auroc: float | None = None
    golden_selection: float | None = None
    golden_brier: float | None = None
    golden_ece: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in asdict(self).items()}


def soft_bce(student: np.ndarray, target: np.ndarray) -> float:
    p = np.clip(student, _EPS, 1 - _EPS)
    return float(np.mean(-(target * np.log(p) + (1 - target) * np.log(1 - p))))


def bernoulli_kl(teacher: np.ndarray, student: np.ndarray) -> float:
    t = np.clip(teacher, _EPS, 1 - _EPS)
    s = np.clip(student, _EPS, 1 - _EPS)
    return float(np.mean(t * np.log(t / s) + (1 - t) * np.log((1 - t) / (1 - s))))


def held_out_metrics(queries: Sequence[DistillQuery], student: Sequence[np.ndarray]) -> dict[str, float | None]:
    """Proxy metrics always; golden metrics when any held-out candidate is labelled."""
    teacher = np.concatenate([q.teacher for q in queries])
    probs = np.concatenate(student)
    # the student's pick agrees when it is one of the teacher's top candidates (Weaver's posteriors tie often)
    top1 = [
        float(q.teacher[int(np.argmax(s))] >= q.teacher.max() - 1e-9)
        for q, s in zip(queries, student, strict=True) if len(s) > 1
    ]
    out: dict[str, float | None] = {
        "proxy_bce": soft_bce(probs, teacher),
        "proxy_kl": bernoulli_kl(teacher, probs),
        "proxy_mse": float(np.mean((probs - teacher) ** 2)),
        "proxy_top1": float(np.mean(top1)) if top1 else float("nan"),
    }
    labelled = [(q, s) for q, s in zip(queries, student, strict=True) if q.labels is not None]
    if labelled:
        labels = np.concatenate([q.labels for q, _ in labelled if q.labels is not None])
        scores = np.concatenate([s for _, s in labelled])
        known = ~np.isnan(labels)
        selection = [float(q.labels[int(np.argmax(s))] == 1) for q, s in labelled if q.labels is not None]
        out.update(
            golden_bce=soft_bce(scores[known], labels[known]) if known.any() else None,
            golden_auroc=auroc(scores, labels),
            golden_selection=float(np.mean(selection)),
            golden_brier=brier_score(scores, labels),
            golden_ece=expected_calibration_error(scores, labels),
        )
    return out
