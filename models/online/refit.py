"""One refit: the policy that says when, the window aligned onto one verifier set, the guardrails that refuse a
degenerate fit, and drift between consecutive fits."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from models.online.records import ScoreRecord
from models.weaver import WeaverConfig, WeaverModel

# -- refit policy and window fitting ----------------------------------------------------------


@dataclass(frozen=True)
class RefitPolicy:
    """When to refit and on what: every ``every_queries`` new queries or ``every_seconds`` seconds."""

    every_queries: int = 50
    every_seconds: float = 300.0
    window: int = 5000  # newest queries a fit sees
    by_task: bool = True  # also fit one model per request `task` key with enough queries

    def due(self, new_queries: int, seconds_since_last: float) -> bool:
        if new_queries <= 0:
            return False
        return new_queries >= self.every_queries or seconds_since_last >= self.every_seconds


def window_matrices(
    records: Sequence[ScoreRecord],
) -> tuple[tuple[str, ...], list[np.ndarray], list[str | None]]:
    """Align records that may use different verifier sets onto the union of their verifiers.

    A verifier a request did not run abstains (NaN) there, which the label model already handles.
    Scores from an older version of a verifier (its newest version in the window wins) abstain too:
    an updated verifier's scores are not on the old scale.
    """
    names: dict[str, None] = {}
    latest: dict[str, str] = {}
    for record in records:
        for j, name in enumerate(record.verifier_names):
            names.setdefault(name, None)
            if record.verifier_versions and record.verifier_versions[j]:
                latest[name] = record.verifier_versions[j]
    order = tuple(names)
    index = {name: j for j, name in enumerate(order)}
    matrices: list[np.ndarray] = []
    for record in records:
        stale = [j for j, name in enumerate(record.verifier_names) if record.verifier_versions
                 and record.verifier_versions[j] and record.verifier_versions[j] != latest.get(name)]
        if record.verifier_names == order and not stale:
            matrices.append(record.matrix)
            continue
        aligned = np.full((record.matrix.shape[0], len(order)), np.nan)
        for j, name in enumerate(record.verifier_names):
            if j not in stale:
                aligned[:, index[name]] = record.matrix[:, j]
        matrices.append(aligned)
    return order, matrices, [record.task for record in records]



def fit_window(
    records: Sequence[ScoreRecord], config: WeaverConfig | None = None, by_task: bool = True
) -> WeaverModel:
    """A new WeaverModel on a window of records (labels are not part of a record)."""
    if not records:
        raise ValueError("cannot fit on an empty window")
    return fit_aligned(*window_matrices(records), config, by_task)


def fit_aligned(names: tuple[str, ...], matrices: list[np.ndarray], tasks: list[str | None],
                config: WeaverConfig | None = None, by_task: bool = True) -> WeaverModel:
    """Fit on matrices already aligned by ``window_matrices``, with per-task models when tasks are known."""
    with_tasks = by_task and any(task is not None for task in tasks)
    return WeaverModel.fit(matrices, names, config, tasks=tasks if with_tasks else None)


# -- guardrails -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuardrailConfig:
    """What makes a fit degenerate. A rejected fit is never published; the previous version stays."""

    min_queries: int = 30
    min_class_balance: float = 0.02  # a collapsed prior (all or nothing correct) ranks nothing
    max_class_balance: float = 0.98
    require_converged: bool = True
    flip_margin: float = 0.0  # a kept verifier with TPR - FPR below -margin votes against the others
    keep_verifiers: bool = True  # a verifier the previous version used must still carry signal


def guardrail_reasons(
    model: WeaverModel,
    matrices: Sequence[np.ndarray],
    previous: WeaverModel | None = None,
    config: GuardrailConfig | None = None,
) -> list[str]:
    """Why ``model`` (fitted on ``matrices``) must not be published; empty when it may be."""
    config = config or GuardrailConfig()
    report = model.report
    reasons: list[str] = []
    if report.n_queries < config.min_queries:
        reasons.append(f"too_few_queries: {report.n_queries} < {config.min_queries}")
    if config.require_converged and not report.converged:
        reasons.append(f"not_converged: {report.iterations} iterations, last change {report.last_change:.2e}")
    if not report.n_kept:
        reasons.append("no_verifiers: every verifier was dropped (all empty or constant)")
    elif not config.min_class_balance <= report.class_balance <= config.max_class_balance:
        reasons.append(f"class_balance_collapsed: {report.class_balance:.3f} outside "
                       f"[{config.min_class_balance}, {config.max_class_balance}]")
    kept = np.flatnonzero(model.kept)
    for j in kept.tolist():
        if model.tpr[j] - model.fpr[j] < -config.flip_margin:
            reasons.append(f"verifier_flipped: {model.verifier_names[j]} has TPR {model.tpr[j]:.3f} < "
                           f"FPR {model.fpr[j]:.3f}, voting against the majority of the others")
    if kept.size >= 2 and matrices:
        votes = model.explain(np.vstack(matrices)).votes[:, kept]
        observed_all = (votes >= 0).all(axis=1)
        if observed_all.any() and (votes[observed_all] == votes[observed_all][:, :1]).all():
            reasons.append("verifiers_all_agree: every kept verifier votes the same on every candidate, "
                           "so agreement cannot identify their rates")
    if previous is not None and config.keep_verifiers:
        for report_item in report.verifiers:
            was_kept = _kept_in(previous, report_item.name)
            if was_kept and report_item.normalization in ("constant", "empty"):
                reasons.append(f"verifier_lost_signal: {report_item.name} is {report_item.normalization} over "
                               "the window but the serving version uses it (a failing verifier?)")
    return reasons


def _kept_in(model: WeaverModel, name: str) -> bool:
    if name not in model.verifier_names:
        return False
    return bool(model.kept[model.verifier_names.index(name)])


# -- drift ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drift:
    """How far the per-verifier rates moved between two consecutive fits (L-infinity over TPR/FPR)."""

    distance: float  # NaN when the two fits share no kept verifier (or there is no previous fit)
    per_verifier: dict[str, float]


def drift(previous: WeaverModel | None, current: WeaverModel) -> Drift:
    if previous is None:
        return Drift(float("nan"), {})
    per: dict[str, float] = {}
    for j, name in enumerate(current.verifier_names):
        if not current.kept[j] or not _kept_in(previous, name):
            continue
        k = previous.verifier_names.index(name)
        per[name] = float(max(abs(current.tpr[j] - previous.tpr[k]), abs(current.fpr[j] - previous.fpr[k])))
    return Drift(max(per.values()) if per else float("nan"), per)


def positive_rates(model: WeaverModel) -> dict[str, float]:
    """Each verifier's share of "yes" votes over the fit window."""
    return {item.name: float(item.positive_rate) for item in model.report.verifiers}


def estimated_accuracies(model: WeaverModel) -> dict[str, float]:
    """Each kept verifier's estimated accuracy P(vote == Y) (label-free)."""
    acc = model.accuracy()
    return {name: float(acc[j]) for j, name in enumerate(model.verifier_names) if model.kept[j]}


# -- one refit ---------------------------------------------------------------------------------

Outcome = Literal["published", "rejected", "held"]  # held: passed the guardrails, but a pin keeps the served one


@dataclass(frozen=True)
class RefitOutcome:
    outcome: Outcome
    model: WeaverModel  # the candidate (published or not)
    reasons: tuple[str, ...]  # why rejected (empty when published)
    drift: Drift
    n_queries: int
    fit_seconds: float
    task_reasons: dict[str, tuple[str, ...]] = field(default_factory=dict)  # per-task models dropped
    task_drift: dict[str, Drift] = field(default_factory=dict)  # per task model, against the previous one

    @property
    def published(self) -> bool:
        return self.outcome == "published"

    @property
    def passed(self) -> bool:
        """The fit passed its guardrails (published, or held back by a pin)."""
        return self.outcome != "rejected"

    def held(self, why: str) -> RefitOutcome:
        """This outcome, not published because a pinned version holds."""
        return replace(self, outcome="held", reasons=(f"pinned: {why}",))

    @property
    def reason_codes(self) -> tuple[str, ...]:
        """Short reason labels (the part before the colon), for metrics."""
        return tuple(reason.split(":", 1)[0] for reason in self.reasons)


def refit(
    records: Sequence[ScoreRecord],
    previous: WeaverModel | None,
    config: WeaverConfig | None = None,
    guardrails: GuardrailConfig | None = None,
    by_task: bool = True,
) -> RefitOutcome:
    """Fit on the window and judge the fit. Task models that fail their own guardrails are dropped
    (the previous version's model for that task is carried over when there is one)."""
    start = time.perf_counter()
    if not records:
        raise ValueError("cannot refit on an empty window")
    names, matrices, tasks = window_matrices(records)
    model = fit_aligned(names, matrices, tasks, config, by_task)
    reasons = guardrail_reasons(model, matrices, previous, guardrails)
    task_reasons: dict[str, tuple[str, ...]] = {}
    for key in list(model.by_task):
        task_matrices = [m for m, t in zip(matrices, tasks, strict=True) if t == key]
        prior_task = previous.by_task.get(key) if previous is not None else None
        problems = guardrail_reasons(model.by_task[key], task_matrices, prior_task, guardrails)
        if problems:
            task_reasons[key] = tuple(problems)
            if prior_task is not None and prior_task.verifier_names == model.verifier_names:
                model.by_task[key] = prior_task
            else:
                del model.by_task[key]
    task_drift = {key: drift(previous.by_task.get(key) if previous is not None else None, sub)
                  for key, sub in model.by_task.items()}
    return RefitOutcome(
        outcome="rejected" if reasons else "published",
        model=model,
        reasons=tuple(reasons),
        drift=drift(previous, model),
        n_queries=len(records),
        fit_seconds=time.perf_counter() - start,
        task_reasons=task_reasons,
        task_drift={key: d for key, d in task_drift.items() if not np.isnan(d.distance)},
    )
