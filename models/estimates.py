"""Label-free estimates with their uncertainty: class balance and per-verifier accuracy.

A point estimate from one EM fit says nothing about how far off it may be. Refitting on bootstrap
resamples of the queries (queries, not candidates: candidates of one query are dependent) gives a
percentile interval for each estimate. The bootstrap refits the same model, so it measures sampling spread,
not the model's bias; refitting without each verifier in turn shows when an estimate rests on one of them
(it moves past a limit, or the others cannot identify anything on their own), which a model that is wrong
about that verifier would make confidently wrong. A wide interval, a fit with too few effectively
independent verifiers, or an estimate resting on one verifier is reported as "not identified by these
data" rather than as a number to trust.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.metrics import Interval
from models.weaver_v2 import WeaverV2Config, WeaverV2Model, expected_rates

# An interval wider than this (on a probability) is reported as not identified: the data leave the
# estimate free to move over a range that would change which verifiers look useful.
MAX_IDENTIFIED_WIDTH = 0.10
# An estimate that moves by more than half that width when one verifier is left out of the fit rests on it.
MAX_LEAVE_ONE_OUT_SHIFT = MAX_IDENTIFIED_WIDTH / 2


@dataclass(frozen=True)
class Estimate:
    name: str
    value: float
    interval: Interval
    identified: bool
    rests_on: str | None = None  # the verifier without which it moves past the limit (or nothing is identified)
    without: float = float("nan")  # the estimate refitted without ``rests_on`` (NaN: nothing identified then)


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
    leave_one_out: bool = True,
) -> LabelFreeEstimates:
    """Point estimates from ``model`` (fitted here when absent), bootstrap intervals over queries and, with
    ``leave_one_out``, one refit without each kept verifier to find estimates that rest on one of them."""
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
    without = _without_each(matrices, verifier_names, answers, tasks, model) if leave_one_out else {}

    def estimate(name: str, value: float, samples: np.ndarray, column: int | None) -> Estimate:
        interval = _interval(value, samples, level)
        width = interval.high - interval.low
        narrow = overall and bool(np.isfinite(width) and width <= MAX_IDENTIFIED_WIDTH)
        moved = {k: None if refit is None else refit.balance if column is None else float(refit.accuracy[column])
                 for k, refit in without.items()}
        rests_on, alone = _rests_on(value, moved)
        return Estimate(name, value, interval, narrow and rests_on is None, rests_on, alone)

    cb = estimate("class_balance", model.report.class_balance, balance, None)
    accs = tuple(estimate(v.name, v.accuracy, accuracy[:, j], j) for j, v in enumerate(model.report.verifiers)
                 if v.kept)
    loose = [e.name for e in (cb, *accs) if not e.identified]
    if loose:
        warnings.append(f"not identified by these data (interval wider than {MAX_IDENTIFIED_WIDTH}, too few "
                        f"independent verifiers, or resting on one verifier): {', '.join(loose)}")
    resting = [e for e in (cb, *accs) if e.rests_on is not None]
    if resting:
        warnings.append(f"resting on one verifier (refitted without it, the estimate moves by more than "
                        f"{MAX_LEAVE_ONE_OUT_SHIFT:.2f}, or the others identify nothing): " + ", ".join(
                            f"{e.name} on {'itself' if e.rests_on == e.name else e.rests_on} ({e.value:.3f} -> "
                            f"{'unidentified' if np.isnan(e.without) else f'{e.without:.3f}'})" for e in resting))
    return LabelFreeEstimates(cb, accs, n_resamples, tuple(warnings))


@dataclass(frozen=True)
class _Refit:
    """The label-free estimates of a fit without one verifier."""

    balance: float
    accuracy: np.ndarray  # (m,) in the full model's verifier order, the left-out verifier's own included


def _without_each(matrices: Sequence[np.ndarray], verifier_names: Sequence[str],
                  answers: Sequence[Sequence[str | None] | None], tasks: Sequence[str | None],
                  model: WeaverV2Model) -> dict[str, _Refit | None]:
    """Per kept verifier, the estimates refitted with it abstaining everywhere (None where the others identify
    nothing on their own: the fit says so, ``FitReportV2.identifiable``). Every verifier's accuracy,
    the left-out one's too, is read against that fit's posterior (the others' consensus), on the full
    model's normalization and cuts."""
    names = tuple(verifier_names)
    normalized = model.normalizer.transform(model.align(np.vstack(matrices), names))
    thresholds = np.array([v.threshold for v in model.report.verifiers])
    out: dict[str, _Refit | None] = {}
    for name in (n for n, kept in zip(model.verifier_names, model.kept, strict=True) if kept and n in names):
        k = names.index(name)
        masked = [np.where(np.arange(len(names))[None, :] == k, np.nan, mx) for mx in matrices]
        fit = WeaverV2Model.fit(masked, names, answers, tasks, model.config)
        if not fit.report.identifiable:
            out[name] = None
            continue
        posterior = np.concatenate([fit.score(mx, a, t)[0] for mx, a, t in zip(masked, answers, tasks, strict=True)])
        out[name] = _Refit(float(posterior.mean()), expected_rates(normalized, thresholds, posterior)[0])
    return out


def _rests_on(value: float, moved: dict[str, float | None]) -> tuple[str | None, float]:
    """The verifier an estimate rests on, and the estimate without it: the first whose absence leaves nothing
    identified, else the one whose absence moves it most, when that move is past the limit."""
    for name, alone in moved.items():
        if alone is None:
            return name, float("nan")
    finite = {name: alone for name, alone in moved.items() if alone is not None and np.isfinite(alone)}
    if finite:
        name = max(finite, key=lambda n: abs(finite[n] - value))
        if abs(finite[name] - value) > MAX_LEAVE_ONE_OUT_SHIFT:
            return name, finite[name]
    return None, float("nan")
