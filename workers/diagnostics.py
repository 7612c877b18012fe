"""Per-verifier diagnostics of one job: raw and normalized scores, votes, estimated accuracy, kept or not.

With a label model they come from the model's own view of the scores (its normalization, thresholds and
estimates); without one (cold start, baselines) each column is normalized on the request and split at its
midrange, so a client still sees how every verifier voted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.label_models import LabelModel
from models.normalization import Normalizer
from workers.contract import VerifierDiagnostics
from workers.verifiers import Verifier


@dataclass
class Column:
    """One verifier's scores for one job's candidates (NaN where it abstained), its latency and any error."""

    name: str
    values: list[float]
    latency_s: float
    error: str | None
    notes: list[str | None] | None


def verifier_diagnostics(columns: Sequence[Column], matrix: np.ndarray, names: list[str], model: LabelModel | None,
                         aggregator: str, verifiers: Mapping[str, Verifier]) -> list[VerifierDiagnostics]:
    if model is not None:
        explanation = model.explain(model.align(matrix, names))
        accuracy = model.accuracy()
    else:
        normalized = Normalizer.fit(matrix).transform(matrix)
    out = []
    for j, column in enumerate(columns):
        verifier = verifiers.get(column.name)
        if model is not None and column.name in model.verifier_names:
            k = model.verifier_names.index(column.name)
            norm = explanation.normalized[:, k]
            votes: list[int | None] = [None if v < 0 else int(v) for v in explanation.votes[:, k]]
            est: float | None = float(accuracy[k])
            kept = bool(model.kept[k])
        else:
            norm = normalized[:, j] if model is None else np.full(matrix.shape[0], np.nan)
            votes = cold_votes(norm)
            est = None
            kept = aggregator == "mean" and model is None
        out.append(VerifierDiagnostics(
            name=column.name, kind=verifier.kind if verifier else "unavailable",
            version=verifier.version if verifier else "", raw=[finite(v) for v in column.values],
            normalized=[finite(v) for v in norm], vote=votes, estimated_accuracy=est, kept=kept,
            latency_s=column.latency_s, error=column.error, notes=column.notes))
    return out


def cold_votes(column: np.ndarray) -> list[int | None]:
    """Without a fitted model: split the request's scores at their midrange; a constant column abstains."""
    values = column[np.isfinite(column)]
    if values.size == 0 or float(values.max() - values.min()) <= 1e-12:
        return [None] * len(column)
    middle = (float(values.max()) + float(values.min())) / 2
    return [None if not math.isfinite(v) else int(v > middle) for v in column]


def finite(value: Any) -> float | None:
    """A float for JSON: NaN and infinities become None (null)."""
    value = float(value)
    return value if math.isfinite(value) else None
