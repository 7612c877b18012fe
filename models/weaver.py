"""The Weaver aggregator: normalize -> binarize -> filter -> label model -> P(correct | votes).

Everything is fitted without labels on a pool of score matrices and persisted as a versioned JSON
artifact, so scoring a single new query needs neither the fit data nor a refit (the reference
implementation re-normalizes and refits on the test batch).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.label_model import LabelModelFit, fit_label_model
from models.normalization import Normalizer, observed_mean
from models.thresholds import fit_thresholds

ARTIFACT_FORMAT = "weaver-label-model/1"


@dataclass(frozen=True)
class WeaverConfig:
    """Fit options. Defaults are label-free rules, not constants tuned on any dataset."""

    min_positive_rate: float = 0.05  # marginal filter: a verifier voting "yes" on <5% or >95% ...
    max_positive_rate: float = 0.95  # ... of candidates tells almost nothing and is dropped
    min_coverage: float = 0.05  # share of candidates a verifier must have scored
    prior_strength: float = 1.0
    tol: float = 1e-7
    max_iter: int = 5000
    min_task_queries: int = 20  # per-task models need at least this many queries


@dataclass(frozen=True)
class VerifierReport:
    name: str
    kept: bool
    reason: str
    normalization: str
    threshold: float
    coverage: float
    positive_rate: float
    tpr: float
    fpr: float
    accuracy: float


@dataclass(frozen=True)
class FitReport:
    n_queries: int
    n_candidates: int
    n_verifiers: int
    n_kept: int
    class_balance: float
    iterations: int
    converged: bool
    last_change: float
    log_likelihood: float
    identifiable: bool
    fit_seconds: float
    warnings: tuple[str, ...]
    verifiers: tuple[VerifierReport, ...]


@dataclass(frozen=True)
class Explanation:
    """Per-candidate, per-verifier view of one scoring, for diagnostics."""

    normalized: np.ndarray  # (n, m) in [0, 1], NaN = abstain
    votes: np.ndarray  # (n, m) in {-1, 0, 1}
    log_odds: np.ndarray  # (n,)
    posterior: np.ndarray  # (n,)


@dataclass
class WeaverModel:
    verifier_names: tuple[str, ...]
    normalizer: Normalizer
    thresholds: np.ndarray
    kept: np.ndarray  # bool (m,)
    class_balance: float
    tpr: np.ndarray
    fpr: np.ndarray
    report: FitReport
    config: WeaverConfig = field(default_factory=WeaverConfig)
    task: str | None = None
    by_task: dict[str, WeaverModel] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self._index = {name: j for j, name in enumerate(self.verifier_names)}
        self._version: str | None = None
        self._prepare()

    def _prepare(self) -> None:
        tpr = np.clip(self.tpr, 1e-6, 1 - 1e-6)
        fpr = np.clip(self.fpr, 1e-6, 1 - 1e-6)
        w_pos = np.where(self.kept, np.log(tpr / fpr), 0.0)
        w_neg = np.where(self.kept, np.log((1 - tpr) / (1 - fpr)), 0.0)
        pi = min(max(self.class_balance, 1e-6), 1 - 1e-6)
        self._prior_logit = float(np.log(pi / (1 - pi)))
        self._w_delta = w_pos - w_neg  # contribution of "yes" relative to "no"
        self._w_neg = w_neg
        self._kept_idx = np.flatnonzero(self.kept)
        idx = self._kept_idx
        self._kept_normalizer = Normalizer(
            kinds=tuple(self.normalizer.kinds[j] for j in idx),
            center=self.normalizer.center[idx], scale=self.normalizer.scale[idx],
        )
        self._kept_thresholds = self.thresholds[idx]
        self._kept_w_neg = w_neg[idx]
        self._kept_w_delta = (w_pos - w_neg)[idx]

    # -- identity ---------------------------------------------------------------------------
    @property
    def version(self) -> str:
        """A short content hash: equal parameters give equal versions."""
        if self._version is None:
            payload = json.dumps(self._params_json(), sort_keys=True).encode()
            self._version = hashlib.sha256(payload).hexdigest()[:12]
        return self._version

    def accuracy(self) -> np.ndarray:
        """Estimated per-verifier accuracy P(vote == Y) under the fitted class balance."""
        pi = self.class_balance
        return pi * self.tpr + (1 - pi) * (1 - self.fpr)

    def for_task(self, task: str | None) -> WeaverModel:
        if task is not None and task in self.by_task:
            return self.by_task[task]
        return self

    # -- fitting ----------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        matrices: Sequence[np.ndarray],
        verifier_names: Sequence[str],
        config: WeaverConfig | None = None,
        tasks: Sequence[str | None] | None = None,
    ) -> WeaverModel:
        """Fit on one (n_candidates, n_verifiers) score matrix per query. Reads no labels.

        ``tasks`` (one key per query) additionally fits one model per task with enough queries;
        scoring a query of such a task then uses its own model (the paper's per-cluster models).
        """
        config = config or WeaverConfig()
        model = cls._fit_one(matrices, tuple(verifier_names), config, task=None)
        if tasks is not None:
            if len(tasks) != len(matrices):
                raise ValueError(f"{len(tasks)} task keys for {len(matrices)} queries")
            groups: dict[str, list[np.ndarray]] = {}
            for key, matrix in zip(tasks, matrices, strict=True):
                if key is not None:
                    groups.setdefault(key, []).append(matrix)
            for key, group in sorted(groups.items()):
                if len(group) >= config.min_task_queries:
                    model.by_task[key] = cls._fit_one(group, tuple(verifier_names), config, task=key)
        return model

    @classmethod
    def _fit_one(
        cls, matrices: Sequence[np.ndarray], names: tuple[str, ...], config: WeaverConfig, task: str | None
    ) -> WeaverModel:
        """Normalize, threshold, filter, fit the label model, report: the steps of one (global or task) fit."""
        start = time.perf_counter()
        m = len(names)
        for q, matrix in enumerate(matrices):
            if matrix.ndim != 2 or matrix.shape[1] != m:
                raise ValueError(f"query {q}: score matrix shape {matrix.shape} does not match {m} verifiers")
        pooled = np.vstack(matrices) if matrices else np.empty((0, m))
        normalizer = Normalizer.fit(pooled)
        normalized = normalizer.transform(pooled)
        thresholds = fit_thresholds(normalized)
        votes = _binarize(normalized, thresholds)
        observed = votes >= 0
        coverage = observed.mean(axis=0) if len(pooled) else np.zeros(m)
        with np.errstate(invalid="ignore", divide="ignore"):
            positive_rate = np.where(observed.sum(0) > 0, (votes == 1).sum(0) / np.maximum(observed.sum(0), 1), 0.0)
        kept, reasons = _marginal_filter(normalizer.kinds, coverage, positive_rate, config)
        warnings = _keep_at_least_one(kept, reasons, normalizer.kinds, coverage, positive_rate, names)

        fit: LabelModelFit = fit_label_model(
            votes[:, kept], prior_strength=config.prior_strength, tol=config.tol, max_iter=config.max_iter
        )
        tpr = np.full(m, np.nan)
        fpr = np.full(m, np.nan)
        tpr[kept], fpr[kept] = fit.tpr, fit.fpr
        warnings += _fit_warnings(fit, kept)
        pi = fit.class_balance if kept.any() else 0.5
        accuracy = pi * tpr + (1 - pi) * (1 - fpr)
        verifier_reports = tuple(
            VerifierReport(
                name=names[j], kept=bool(kept[j]), reason=reasons[j], normalization=normalizer.kinds[j],
                threshold=float(thresholds[j]), coverage=float(coverage[j]), positive_rate=float(positive_rate[j]),
                tpr=float(tpr[j]), fpr=float(fpr[j]), accuracy=float(accuracy[j]),
            )
            for j in range(m)
        )
        report = FitReport(
            n_queries=len(matrices), n_candidates=int(pooled.shape[0]), n_verifiers=m, n_kept=int(kept.sum()),
            class_balance=float(pi), iterations=fit.iterations, converged=fit.converged,
            last_change=fit.last_change, log_likelihood=fit.log_likelihood, identifiable=fit.identifiable,
            fit_seconds=time.perf_counter() - start, warnings=tuple(warnings), verifiers=verifier_reports,
        )
        return cls(
            verifier_names=names, normalizer=normalizer, thresholds=thresholds, kept=kept,
            class_balance=float(pi), tpr=tpr, fpr=fpr, report=report, config=config, task=task,
        )

    # -- scoring ----------------------------------------------------------------------------
    def align(self, matrix: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """Reorder columns into this model's verifier order; verifiers the request lacks abstain."""
        return align_columns(matrix, names, self.verifier_names, self._index)

    def score(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(P(correct | votes), tie-break key) per candidate, for a matrix in this model's column order.

        The tie-break key is the mean normalized score over the kept verifiers that scored the
        candidate (0.5 when none did), so equal vote patterns are ordered by the continuous scores.
        """
        if not self._kept_idx.size:
            prior = 1.0 / (1.0 + np.exp(-self._prior_logit))
            return np.full(matrix.shape[0], prior), self.tie_break_scores(matrix)
        normalized = self._kept_normalizer.transform(matrix[:, self._kept_idx])
        observed = ~np.isnan(normalized)
        yes = normalized >= self._kept_thresholds
        logit = self._prior_logit + observed @ self._kept_w_neg + yes @ self._kept_w_delta
        return 1.0 / (1.0 + np.exp(-logit)), observed_mean(normalized, empty=0.5)

    def explain(self, matrix: np.ndarray) -> Explanation:
        """Normalized scores, votes and posterior for every candidate (all verifiers, kept or not)."""
        normalized = self.normalizer.transform(matrix)
        votes = _binarize(normalized, self.thresholds)
        yes = (votes == 1)[:, self.kept].astype(float)
        observed = (votes >= 0)[:, self.kept].astype(float)
        logit = self._prior_logit + observed @ self._w_neg[self.kept] + yes @ self._w_delta[self.kept]
        return Explanation(normalized, votes, logit, 1.0 / (1.0 + np.exp(-logit)))

    def tie_break_scores(self, matrix: np.ndarray) -> np.ndarray:
        """Mean normalized score over the kept verifiers (over all if none kept), 0.5 if all abstain."""
        cols = self._kept_idx if self._kept_idx.size else np.arange(len(self.verifier_names))
        return observed_mean(self.normalizer.transform(matrix)[:, cols], empty=0.5)

    # -- artifact ---------------------------------------------------------------------------
    def _params_json(self) -> dict[str, Any]:
        return {
            "verifier_names": list(self.verifier_names),
            "normalization": self.normalizer.to_json(),
            "thresholds": [float(t) for t in self.thresholds],
            "kept": [bool(k) for k in self.kept],
            "class_balance": self.class_balance,
            "tpr": [None if np.isnan(v) else float(v) for v in self.tpr],
            "fpr": [None if np.isnan(v) else float(v) for v in self.fpr],
            "task": self.task,
            "by_task": {k: v._params_json() for k, v in sorted(self.by_task.items())},
        }

    def to_json(self) -> dict[str, Any]:
        out = {"format": ARTIFACT_FORMAT, "version": self.version, "created_at": self.created_at,
               "config": asdict(self.config)}
        out.update(self._params_json())
        out["fit_report"] = _report_json(self.report)
        out["by_task"] = {k: v.to_json() for k, v in sorted(self.by_task.items())}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WeaverModel:
        if data.get("format") != ARTIFACT_FORMAT:
            raise ValueError(f"not a {ARTIFACT_FORMAT} artifact (format={data.get('format')!r})")
        names = tuple(data["verifier_names"])
        m = len(names)
        for key in ("normalization", "thresholds", "kept", "tpr", "fpr"):
            if len(data[key]) != m:
                raise ValueError(f"artifact field {key!r} has {len(data[key])} entries for {m} verifiers")
        report_data = data["fit_report"]
        report = FitReport(
            **{k: (np.nan if v is None else v) for k, v in report_data.items()  # type: ignore[arg-type]
               if k not in ("verifiers", "warnings")},
            warnings=tuple(report_data["warnings"]),
            verifiers=tuple(
                VerifierReport(**{k: (np.nan if v is None else v) for k, v in item.items()})  # type: ignore[arg-type]
                for item in report_data["verifiers"]
            ),
        )
        model = cls(
            verifier_names=names,
            normalizer=Normalizer.from_json(data["normalization"]),
            thresholds=np.array(data["thresholds"], dtype=float),
            kept=np.array(data["kept"], dtype=bool),
            class_balance=float(data["class_balance"]),
            tpr=np.array([np.nan if v is None else v for v in data["tpr"]], dtype=float),
            fpr=np.array([np.nan if v is None else v for v in data["fpr"]], dtype=float),
            report=report,
            config=WeaverConfig(**data.get("config", {})),
            task=data.get("task"),
            by_task={k: cls.from_json(v) for k, v in data.get("by_task", {}).items()},
            created_at=float(data.get("created_at", 0.0)),
        )
        if data.get("version") not in (None, model.version):
            raise ValueError("artifact version does not match its parameters (file edited or corrupted)")
        return model

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2, default=_json_default) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> WeaverModel:
        return cls.from_json(json.loads(Path(path).read_text()))


def _binarize(normalized: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    votes = (normalized >= thresholds).astype(np.int8)
    votes[np.isnan(normalized)] = -1
    return votes


def _json_default(value: Any) -> Any:
    if isinstance(value, np.floating | np.integer):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _report_json(report: FitReport) -> dict[str, Any]:
    out = asdict(report)
    out["warnings"] = list(report.warnings)
    out["verifiers"] = [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in asdict(r).items()}
        for r in report.verifiers
    ]
    for key, value in list(out.items()):
        if isinstance(value, float) and np.isnan(value):
            out[key] = None
    return out


def _marginal_filter(kinds: Sequence[str], coverage: np.ndarray, positive_rate: np.ndarray,
                     config: WeaverConfig) -> tuple[np.ndarray, list[str]]:
    """Which verifiers the label model keeps, and why each other one is left out ("" when kept)."""
    kept = np.zeros(len(kinds), dtype=bool)
    reasons: list[str] = []
    for j, kind in enumerate(kinds):
        if kind == "empty":
            reasons.append("no scores")
        elif kind == "constant":
            reasons.append("constant")
        elif coverage[j] < config.min_coverage:
            reasons.append(f"coverage {coverage[j]:.3f} < {config.min_coverage}")
        elif not config.min_positive_rate <= positive_rate[j] <= config.max_positive_rate:
            reasons.append(f"positive rate {positive_rate[j]:.3f} outside "
                           f"[{config.min_positive_rate}, {config.max_positive_rate}]")
        else:
            reasons.append("")
            kept[j] = True
    return kept, reasons


def _keep_at_least_one(kept: np.ndarray, reasons: list[str], kinds: Sequence[str], coverage: np.ndarray,
                       positive_rate: np.ndarray, names: Sequence[str]) -> list[str]:
    """Never leave zero verifiers: keep the informative ones closest to a balanced vote (in place); warnings."""
    if kept.any():
        return []
    informative = np.array([k in ("identity", "robust_sigmoid") for k in kinds]) & (coverage > 0)
    if not informative.any():
        return ["no usable verifier (all empty or constant): the posterior is the prior 0.5"]
    distance = np.where(informative, np.abs(positive_rate - 0.5), np.inf)
    best = np.flatnonzero(distance == distance.min())
    kept[best] = True
    for index in best.tolist():
        reasons[index] = "kept by fallback (marginal filter removed every verifier)"
    return ["marginal filter removed every verifier; kept the most balanced: "
            + ", ".join(names[index] for index in best.tolist())]


def _fit_warnings(fit: LabelModelFit, kept: np.ndarray) -> list[str]:
    """What a reader of the fit report should know about the EM fit itself."""
    warnings = []
    if not fit.converged:
        warnings.append(f"label model did not converge in {fit.iterations} iterations "
                        f"(last change {fit.last_change:.2e})")
    if kept.sum() < 3 and kept.any():
        warnings.append(f"only {int(kept.sum())} verifier(s) kept: rates are not identifiable "
                        "from agreement; the prior shapes them")
    if fit.swapped:
        warnings.append("label model converged to the swapped solution; classes were flipped so that "
                        "verifiers beat chance on average")
    return warnings


def align_columns(matrix: np.ndarray, names: Sequence[str], order: tuple[str, ...],
                  index: Mapping[str, int]) -> np.ndarray:
    """``matrix``'s columns (named ``names``) in ``order``; a verifier the matrix lacks abstains (NaN), one the
    order does not know is dropped. ``index`` maps each name of ``order`` to its position."""
    if tuple(names) == order:
        return np.asarray(matrix, dtype=float)
    out = np.full((matrix.shape[0], len(order)), np.nan)
    for j, name in enumerate(names):
        target = index.get(name)
        if target is not None:
            out[:, target] = matrix[:, j]
    return out
