"""Label-free estimates with their uncertainty: class balance and per-verifier accuracy.

A point estimate from one EM fit says nothing about how far off it may be. Refitting on bootstrap
resamples of the queries (queries, not candidates: candidates of one query are dependent) gives a
percentile interval for each estimate; a wide interval, or a fit with too few effectively
independent verifiers, is reported as "not identified by these data" rather than as a number to trust.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.metrics import Interval
from models.weaver_v2 import WeaverV2Config, WeaverV2Model

# An interval wider than this (on a probability) is reported as not identified: the data leave the
# estimate free to move over a range that would change which verifiers look useful.
MAX_IDENTIFIED_WIDTH = 0.10


@dataclass(frozen=True)
class Estimate:
    name: str
    value: float
    interval: Interval
    identified: bool


@dataclass(frozen=True)
class LabelFreeEstimates:
    class_balance: Estimate
    accuracies: tuple[Estimate, ...]
    n_resamples: int
    warnings: tuple[str, ...]


def _interval(value: float, samples: np.ndarray, level: float) -> Interval:
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return Interval(value, float("nan"), float("nan"))
    alpha = (1 - level) / 2
    return Interval(value, float(np.quantile(finite, alpha)), float(np.quantile(finite, 1 - alpha)))


def label_free_estimates(
    matrices: Sequence[np.ndarray],
    verifier_names: Sequence[str],
    answers: Sequence[Sequence[str | None] | None] | None = None,
    tasks: Sequence[str | None] | None = None,
    config: WeaverV2Config | None = None,
    *,
    model: WeaverV2Model | None = None,
    n_resamples: int = 30,
    level: float = 0.95,
    seed: int = 0,
) -> LabelFreeEstimates:
    """Point estimates from ``model`` (fitted here when absent) and bootstrap intervals over queries."""
    answers = answers if answers is not None else [None] * len(matrices)
    tasks = tasks if tasks is not None else [None] * len(matrices)
    model = model or WeaverV2Model.fit(matrices, verifier_names, answers, tasks, config)
    rng = np.random.default_rng(seed)
    balance = np.full(n_resamples, np.nan)
    accuracy = np.full((n_resamples, len(verifier_names)), np.nan)
    for b in range(n_resamples):
        pick = rng.integers(0, len(matrices), len(matrices))
        fit = WeaverV2Model.fit([matrices[i] for i in pick], verifier_names, [answers[i] for i in pick],
                                [tasks[i] for i in pick], model.config)
        balance[b] = fit.report.class_balance
        accuracy[b] = fit.accuracy()
    warnings = list(model.report.warnings)
    overall = bool(model.report.identifiable)

    def estimate(name: str, value: float, samples: np.ndarray) -> Estimate:
        interval = _interval(value, samples, level)
        width = interval.high - interval.low
        return Estimate(name, value, interval, overall and bool(np.isfinite(width) and width <= MAX_IDENTIFIED_WIDTH))

    cb = estimate("class_balance", model.report.class_balance, balance)
    accs = tuple(estimate(v.name, v.accuracy, accuracy[:, j]) for j, v in enumerate(model.report.verifiers)
                 if v.kept)
    loose = [e.name for e in (cb, *accs) if not e.identified]
    if loose:
        warnings.append(f"not identified by these data (interval wider than {MAX_IDENTIFIED_WIDTH} or too few "
                        f"independent verifiers): {', '.join(loose)}")
    return LabelFreeEstimates(cb, accs, n_resamples, tuple(warnings))
