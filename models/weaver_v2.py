"""Weaver label model, version 2: normalize -> bin -> answer groups -> EM with learned dependencies.

Differences from version 1 (``models.weaver``, binary Dawid-Skene), each switchable for ablation:

* ``max_bins``: several ordered bins per verifier instead of one Otsu yes/no cut (2 = v1's binarization);
* ``answer_groups``: candidates with equivalent final answers share one latent label; with
  ``unique_answers`` at most one group per query is right (tasks in ``multi_answer_tasks`` excepted);
* ``dependency_guard``: intra-group and cross-verifier correlations learned from the fit discount
  double-counted evidence (see ``models.label_model_v2``);
* ``within_query``: on single-answer queries a second EM stage scores continuous verifiers by their contrast
  within the query, which no per-prompt shift of a verifier's scores survives (see ``models.within_query``);
* ``within_association``: in that stage, few-valued verifiers without association inside queries
  (Mantel's test against the stage's posterior without them) carry no evidence.

Still label-free and inductive: fitted once on a pool of queries, persisted as a versioned JSON
artifact, and a single new query is scored without the fit data.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit

from models.answers import group_answers
from models.binning import Digitizer, bin_edges, digitize, n_bins
from models.label_model_v2 import (
    FitV2,
    Layout,
    Structure,
    Within,
    build_layout,
    fit_v2,
    fitted_evidence,
    group_evidence,
    group_posteriors,
    member_weights,
    none_right_by_size,
)
from models.normalization import Normalizer
from models.weaver import Explanation, align_columns
from models.within_query import ContrastFit, contrast_evidence, contrasts, level_verifiers, within_association

ARTIFACT_FORMAT_V2 = "weaver-label-model/2"
WITHIN_ASSOCIATION_Z = 1.96  # two-sided 5% test of a few-valued verifier's within-query association


@dataclass(frozen=True)
class WeaverV2Config:
    """Fit options; every default is a label-free rule, none is tuned on a dataset."""

    max_bins: int = 8
    answer_groups: bool = True
    unique_answers: bool = True
    dependency_guard: bool = True
    within_query: bool = True
    # few-valued verifiers keep their histograms in the within-query stage only where Mantel's test finds
    # them associated with the others inside queries
    within_association: bool = True
    multi_answer_tasks: tuple[str, ...] = ("code",)
    min_coverage: float = 0.05
    smoothing: float = 0.5
    tol: float = 1e-4
    max_iter: int = 300

    def __post_init__(self) -> None:
        bad = [f"{name} {why}" for name, ok, why in (
            ("max_bins", self.max_bins >= 2, "must be at least 2 (2 is version 1's one cut)"),
            ("min_coverage", 0.0 <= self.min_coverage <= 1.0, "must be within [0, 1]"),
            ("smoothing", self.smoothing > 0, "must be positive (an empty bin would give infinite evidence)"),
            ("tol", self.tol > 0, "must be positive"),
            ("max_iter", self.max_iter >= 1, "must be at least 1"),
        ) if not ok]
        if bad:
            raise ValueError("; ".join(bad))


@dataclass(frozen=True)
class GroupedParams:
    """The model for single-answer queries with answer groups when ``within_query`` is on (second EM stage).

    ``columns`` are scored by their within-query contrast (``delta``, ``gamma``, ``var``); the others (level
    verifiers such as answer agreement) by the histograms ``log_p1``/``log_p0`` of this stage.
    """

    columns: np.ndarray  # (m,) bool
    delta: np.ndarray
    gamma: np.ndarray
    var: np.ndarray
    log_p1: np.ndarray
    log_p0: np.ndarray
    weight: np.ndarray
    icc: np.ndarray
    rho0: float

    def to_json(self) -> dict[str, Any]:
        return {"columns": [bool(c) for c in self.columns], "delta": self.delta.tolist(),
                "gamma": self.gamma.tolist(), "var": self.var.tolist(), "log_p1": self.log_p1.tolist(),
                "log_p0": self.log_p0.tolist(), "weight": self.weight.tolist(), "icc": self.icc.tolist(),
                "rho0": self.rho0}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GroupedParams:
        arrays = {k: np.array(data[k], dtype=float) for k in ("delta", "gamma", "var", "log_p1", "log_p0",
                                                                "weight", "icc")}
        return cls(columns=np.array(data["columns"], dtype=bool), rho0=float(data["rho0"]), **arrays)


@dataclass(frozen=True)
class VerifierReportV2:
    name: str
    kept: bool
    reason: str
    normalization: str
    n_bins: int
    threshold: float  # Otsu cut, for the yes/no accuracy below
    coverage: float
    accuracy: float  # label-free estimate of P(score >= threshold agrees with correctness)
    tpr: float  # label-free P(score >= threshold | correct)
    fpr: float  # label-free P(score >= threshold | wrong)
    weight: float  # cross-verifier discount (1 = independent)
    icc: float  # intra-group correlation of the members' evidence
    max_llr: float  # strongest evidence one score can carry (|log-likelihood ratio|)


@dataclass(frozen=True)
class FitReportV2:
    n_queries: int
    n_candidates: int
    n_verifiers: int
    n_kept: int
    class_balance: float
    none_right: float  # P(no answer group right) on single-answer queries
    iterations: int
    converged: bool
    last_change: float
    effective_verifiers: float
    identifiable: bool
    fit_seconds: float
    warnings: tuple[str, ...]
    verifiers: tuple[VerifierReportV2, ...]
    within_query: tuple[str, ...] = ()  # verifiers scored by their within-query contrast on single-answer queries
    within_none_right: float = float("nan")  # the second stage's P(no answer group right)
    within_silent: tuple[str, ...] = ()  # few-valued verifiers with no within-query association: no evidence there


@dataclass
class WeaverV2Model:
    verifier_names: tuple[str, ...]
    normalizer: Normalizer
    edges: tuple[np.ndarray, ...]
    kept: np.ndarray
    log_p1: np.ndarray
    log_p0: np.ndarray
    weight: np.ndarray
    icc: np.ndarray
    rho0: float
    pi: float
    report: FitReportV2
    config: WeaverV2Config = field(default_factory=WeaverV2Config)
    created_at: float = field(default_factory=time.time)
    task: str | None = None
    by_task: dict[str, WeaverV2Model] = field(default_factory=dict)
    grouped: GroupedParams | None = None
    none_by_size: np.ndarray | None = None  # P(no group right) for 1, 2, ... candidates (``none_right``)

    def __post_init__(self) -> None:
        self._index = {name: j for j, name in enumerate(self.verifier_names)}
        self._version: str | None = None
        self._digitizer = Digitizer(list(self.edges))
        self._table = np.where(self.kept[:, None], self.log_p1 - self.log_p0, 0.0)
        counts = n_bins(list(self.edges))
        self._flat_table = np.concatenate([self._table[j, :counts[j]] for j in range(len(counts))])
        self._structure = Structure(self.weight, self.icc, np.zeros((len(self.weight), len(self.weight))))
        self._grouped_structure = self._structure
        if self.grouped is not None:
            table = np.where(self.kept[:, None], self.grouped.log_p1 - self.grouped.log_p0, 0.0)
            self._grouped_flat = np.concatenate([table[j, :counts[j]] for j in range(len(counts))])
            self._grouped_structure = Structure(self.grouped.weight, self.grouped.icc,
                                                np.zeros((len(self.weight), len(self.weight))))
        self._prior_logit = float(np.log(self.pi / (1 - self.pi)))
        self._kept_idx = np.flatnonzero(self.kept) if self.kept.any() else np.arange(len(self.kept))

    # -- identity / compatibility with version 1 ---------------------------------------------
    @property
    def version(self) -> str:
        if self._version is None:
            payload = json.dumps(self._params_json(), sort_keys=True).encode()
            self._version = hashlib.sha256(payload).hexdigest()[:12]
        return self._version

    @property
    def class_balance(self) -> float:
        return self.report.class_balance

    def accuracy(self) -> np.ndarray:
        return np.array([v.accuracy for v in self.report.verifiers])

    def for_task(self, task: str | None) -> WeaverV2Model:
        """A task's own model when one was swapped in (online refits); else this one."""
        if task is not None and task in self.by_task:
            return self.by_task[task]
        return self

    def align(self, matrix: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """Reorder columns into this model's verifier order; verifiers the request lacks abstain."""
        return align_columns(matrix, names, self.verifier_names, self._index)

    # -- fitting ------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        matrices: Sequence[np.ndarray],
        verifier_names: Sequence[str],
        answers: Sequence[Sequence[str | None] | None] | None = None,
        tasks: Sequence[str | None] | None = None,
        config: WeaverV2Config | None = None,
    ) -> WeaverV2Model:
        """Fit on one (n_candidates, n_verifiers) score matrix per query (and its final answers). No labels."""
        config = config or WeaverV2Config()
        start = time.perf_counter()
        names = tuple(verifier_names)
        m = len(names)
        for q, matrix in enumerate(matrices):
            if matrix.ndim != 2 or matrix.shape[1] != m:
                raise ValueError(f"query {q}: score matrix shape {matrix.shape} does not match {m} verifiers")
        answers = answers if answers is not None else [None] * len(matrices)
        tasks = tasks if tasks is not None else [None] * len(matrices)
        if len(answers) != len(matrices) or len(tasks) != len(matrices):
            raise ValueError("answers and tasks need one entry per query")
        pooled = np.vstack(matrices) if matrices else np.empty((0, m))
        normalizer = Normalizer.fit(pooled)
        normalized = normalizer.transform(pooled)
        coverage = (~np.isnan(normalized)).mean(0) if len(pooled) else np.zeros(m)
        kept = np.zeros(m, dtype=bool)
        reasons, edges, thresholds = [], [], np.full(m, 0.5)
        for j in range(m):
            kind = normalizer.kinds[j]
            e, otsu = bin_edges(normalized[:, j], config.max_bins)
            thresholds[j] = _or(otsu, 0.5)
            if kind in ("empty", "constant"):
                reasons.append("no scores" if kind == "empty" else "constant")
                e = np.empty(0)
            elif coverage[j] < config.min_coverage:
                reasons.append(f"coverage {coverage[j]:.3f} < {config.min_coverage}")
                e = np.empty(0)
            else:
                reasons.append("" if e.size else "one distinct value")
            edges.append(e)
            kept[j] = e.size > 0
        bins = digitize(normalized, edges)
        bins[:, ~kept] = -1
        counts = n_bins(edges)
        layout = _layout(bins, matrices, answers, tasks, config)
        fit = fit_v2(layout, counts, learn_structure=config.dependency_guard, smoothing=config.smoothing,
                     tol=config.tol, max_iter=config.max_iter)
        grouped = None
        if config.within_query and config.answer_groups and layout.unique.any():
            grouped, fit, silent = _fit_grouped(fit, layout, normalized, bins, [len(mx) for mx in matrices], counts,
                                                kept, config)
        report = _report(fit, layout, names, normalizer, kept, reasons, counts, thresholds, coverage, normalized,
                         len(matrices), time.perf_counter() - start)
        if grouped is not None:
            report = replace(report, within_query=tuple(n for n, c in zip(names, grouped.columns, strict=True) if c),
                             within_none_right=grouped.rho0,
                             within_silent=tuple(n for n, s in zip(names, silent, strict=True) if s))
        none_by_size = none_right_by_size(fit.posterior, layout) if layout.unique.any() else None
        return cls(names, normalizer, tuple(edges), kept, fit.log_p1, fit.log_p0, fit.structure.weight,
                   fit.structure.icc, fit.rho0, fit.pi, report, config, grouped=grouped, none_by_size=none_by_size)

    # -- scoring ------------------------------------------------------------------------------
    def score(self, matrix: np.ndarray, answers: Sequence[str | None] | None = None,
              task: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(P(correct), tie-break key) per candidate, for a matrix in this model's column order.

        The tie-break key is the mean normalized score over the kept verifiers (v1's key): candidates
        with equal posteriors (members of one answer group, or equal bins) are ordered by the score
        detail that binning set aside.
        """
        unique = self.answers_unique(task)
        groups = group_answers(answers or ()) if self.uses_groups(answers) else None
        layout = _query_layout(groups, unique) if groups is not None else None  # for evidence and posterior
        llr, normalized, missing = self._evidence(matrix, layout if self.scores_within(unique) else None)
        kept = self._kept_idx
        observed = ~missing[:, kept]
        count = observed.sum(1)
        tie = np.where(count > 0, np.where(observed, normalized[:, kept], 0.0).sum(1) / np.maximum(count, 1), 0.5)
        if layout is None:
            return self.independent_posterior(llr), tie
        post, _ = self._group_posteriors(llr, layout, unique, layout.group_of.size)
        return post[layout.group_of], tie

    def _evidence(self, matrix: np.ndarray,
                  within_layout: Layout | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Evidence, normalized scores and abstentions. With ``within_layout`` (a single-answer query's answer
        groups, for a model with the within-query stage): the second stage's histograms for level verifiers
        and within-query contrasts for the others; else the first stage's histograms."""
        normalized = self.normalizer.transform(matrix)
        missing = np.isnan(normalized)
        bins = self._digitizer.global_bins(normalized, missing)
        if within_layout is None or self.grouped is None:
            return np.where(missing, 0.0, self._flat_table[bins]), normalized, missing
        g = self.grouped
        llr = np.where(missing, 0.0, self._grouped_flat[bins])
        z = np.where(self.kept[None, :], normalized, np.nan)
        terms = contrasts(z, within_layout.group_of, np.zeros(within_layout.group_of.size, dtype=np.int64), 1)
        within = contrast_evidence(terms, ContrastFit(g.delta, g.gamma, g.var), g.columns)
        return np.where(g.columns[None, :], within, llr), normalized, missing

    def evidence(self, matrix: np.ndarray, groups: Sequence[int] | None = None, unique: bool = False) -> np.ndarray:
        """(n, m) log-likelihood ratio of each candidate's score per verifier (0 where it abstained), for a
        matrix in this model's column order and, on single-answer queries, its answer groups (``group_answers``
        ids; within-query contrasts then score the verifiers they apply to); ``models.lookahead`` adds
        simulated evidence to it."""
        within = _query_layout(groups, unique) if groups is not None and self.scores_within(unique) else None
        return self._evidence(matrix, within)[0]

    def scores_within(self, unique: bool) -> bool:
        """Whether a grouped query with this uniqueness is scored by the within-query (second-stage) model."""
        return self.grouped is not None and unique

    def uses_groups(self, answers: Sequence[str | None] | None) -> bool:
        """Whether candidates are scored as answer groups (some answer extracted, groups on) or independently."""
        return _has_answers(answers) and self.config.answer_groups

    def independent_posterior(self, evidence: np.ndarray) -> np.ndarray:
        """P(correct) of candidates scored independently, from their (..., n, m) evidence."""
        out: np.ndarray = expit(self._prior_logit + evidence @ self.weight)
        return out

    def bin_distributions(self, j: int, within: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Verifier ``j``'s fitted P(bin | right), P(bin | wrong) and each bin's evidence; None if not kept.
        ``within``: the second stage's histograms (single-answer queries with the within-query model)."""
        k = int(n_bins([self.edges[j]])[0]) if self.kept[j] else 0
        if k == 0:
            return None
        if within and self.grouped is not None:
            log_p1, log_p0 = self.grouped.log_p1, self.grouped.log_p0
        else:
            log_p1, log_p0 = self.log_p1, self.log_p0
        p1, p0 = np.exp(log_p1[j, :k]), np.exp(log_p0[j, :k])
        return p1 / p1.sum(), p0 / p0.sum(), log_p1[j, :k] - log_p0[j, :k]

    def group_posterior(self, evidence: np.ndarray, groups: Sequence[int], unique: bool,
                        copies: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """P(group right) per group, P(no group right) and each candidate's group column, for ``copies``
        stacked copies of one query's (copies * n, m) evidence with the same answer groups (``group_answers``
        ids; a candidate without an answer is a group of its own): shapes (copies, G), (copies,) and (n,)."""
        layout = _query_layout(groups, unique, copies)
        post, none = self._group_posteriors(evidence, layout, unique, len(groups))
        return post.reshape(copies, -1), none, layout.group_of[:len(groups)]

    def _group_posteriors(self, evidence: np.ndarray, layout: Layout, unique: bool,
                          n_candidates: int) -> tuple[np.ndarray, np.ndarray]:
        """P(group right) per group of the layout's queries and P(no group right) per query."""
        structure = self._grouped_structure if self.scores_within(unique) else self._structure
        rho0 = self.none_right(n_candidates) if unique else self.rho0
        return group_posteriors(group_evidence(evidence, layout, member_weights(layout, structure)), layout, rho0,
                                self.pi)

    def none_right(self, n_candidates: int) -> float:
        """Prior P(no answer group right) for a single-answer query of ``n_candidates``: read off the fit per
        set size (sets larger than any fitted one take the largest size's value, which errs towards doubt);
        one number for artifacts written before that, the stage's own when the within-query stage serves."""
        if self.none_by_size is not None and self.none_by_size.size:
            return float(self.none_by_size[min(max(n_candidates, 1), self.none_by_size.size) - 1])
        return self.grouped.rho0 if self.grouped is not None else self.rho0

    def answers_unique(self, task: str | None) -> bool:
        return self.config.unique_answers and task not in self.config.multi_answer_tasks

    def posterior(self, matrix: np.ndarray, answers: Sequence[str | None] | None = None,
                  task: str | None = None) -> np.ndarray:
        return self.score(matrix, answers, task)[0]

    def explain(self, matrix: np.ndarray, answers: Sequence[str | None] | None = None,
                task: str | None = None) -> Explanation:
        """Normalized scores, yes/no votes at each verifier's Otsu cut (diagnostics only) and the posterior."""
        normalized = self.normalizer.transform(matrix)
        thresholds = np.array([v.threshold for v in self.report.verifiers])
        votes = np.where(np.isnan(normalized), -1, normalized >= thresholds[None, :]).astype(np.int8)
        posterior = self.score(matrix, answers, task)[0]
        clipped = np.clip(posterior, 1e-12, 1 - 1e-12)
        return Explanation(normalized, votes, np.log(clipped / (1 - clipped)), posterior)

    # -- artifact -----------------------------------------------------------------------------
    def _params_json(self) -> dict[str, Any]:
        return {
            "verifier_names": list(self.verifier_names),
            "normalization": self.normalizer.to_json(),
            "edges": [[float(x) for x in e] for e in self.edges],
            "kept": [bool(k) for k in self.kept],
            "log_p1": self.log_p1.tolist(),
            "log_p0": self.log_p0.tolist(),
            "weight": self.weight.tolist(),
            "icc": self.icc.tolist(),
            "rho0": self.rho0,
            "pi": self.pi,
            **({"grouped": self.grouped.to_json()} if self.grouped is not None else {}),
            **({"none_by_size": self.none_by_size.tolist()} if self.none_by_size is not None else {}),
        }

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": ARTIFACT_FORMAT_V2, "version": self.version, "created_at": self.created_at,
                               "config": asdict(self.config)}
        out.update(self._params_json())
        out["fit_report"] = _finite_or_none(asdict(self.report))
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WeaverV2Model:
        if data.get("format") != ARTIFACT_FORMAT_V2:
            raise ValueError(f"not a {ARTIFACT_FORMAT_V2} artifact (format={data.get('format')!r})")
        names = tuple(data["verifier_names"])
        m = len(names)
        for key in ("normalization", "edges", "kept", "log_p1", "log_p0", "weight", "icc"):
            if len(data[key]) != m:
                raise ValueError(f"artifact field {key!r} has {len(data[key])} entries for {m} verifiers")
        rep = data["fit_report"]
        report = FitReportV2(
            **{k: (np.nan if v is None else v) for k, v in rep.items()  # type: ignore[arg-type]
               if k not in ("verifiers", "warnings", "within_query", "within_silent")},
            warnings=tuple(rep["warnings"]), within_query=tuple(rep.get("within_query", ())),
            within_silent=tuple(rep.get("within_silent", ())),
            verifiers=tuple(VerifierReportV2(**{k: (np.nan if v is None else v)  # type: ignore[arg-type]
                                                for k, v in item.items()})
                            for item in rep["verifiers"]),
        )
        config = data.get("config", {})
        config["multi_answer_tasks"] = tuple(config.get("multi_answer_tasks", ()))
        config.setdefault("within_query", False)  # artifacts from before the within-query stage
        config.setdefault("within_association", False)  # and from before its association test
        model = cls(
            verifier_names=names, normalizer=Normalizer.from_json(data["normalization"]),
            edges=tuple(np.array(e, dtype=float) for e in data["edges"]), kept=np.array(data["kept"], dtype=bool),
            log_p1=np.array(data["log_p1"], dtype=float), log_p0=np.array(data["log_p0"], dtype=float),
            weight=np.array(data["weight"], dtype=float), icc=np.array(data["icc"], dtype=float),
            rho0=float(data["rho0"]), pi=float(data["pi"]), report=report, config=WeaverV2Config(**config),
            created_at=float(data.get("created_at", 0.0)),
            grouped=GroupedParams.from_json(data["grouped"]) if data.get("grouped") else None,
            none_by_size=np.array(data["none_by_size"], dtype=float) if "none_by_size" in data else None,
        )
        if data.get("version") not in (None, model.version):
            raise ValueError("artifact version does not match its parameters (file edited or corrupted)")
        return model

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> WeaverV2Model:
        return cls.from_json(json.loads(Path(path).read_text()))


def _fit_grouped(fit: FitV2, layout: Layout, normalized: np.ndarray, bins: np.ndarray, sizes: list[int],
                 counts: np.ndarray, kept: np.ndarray,
                 config: WeaverV2Config) -> tuple[GroupedParams | None, FitV2, np.ndarray]:
    """Second EM stage on the single-answer queries: within-query contrasts for continuous verifiers (as many
    bins as ``max_bins``) that vary inside answer groups, started from the first stage's posteriors. None when
    no verifier qualifies. With ``within_association``, few-valued verifiers that vary inside groups keep their
    histograms only where they agree with the others inside queries; the (m,) mask of those silenced in this
    stage is returned too.

    The returned fit carries the second stage's posteriors for those queries, so the label-free estimates
    (class balance, verifier accuracies) describe the posterior that is served."""
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    chosen = np.flatnonzero(layout.unique)
    rows = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in chosen])
    # the first stage's answer groups, renumbered per query (grouping answers again would cost as much)
    local = [layout.group_of[offsets[i]:offsets[i + 1]] - layout.query_starts[i] for i in chosen]
    sub = build_layout([bins[offsets[i]:offsets[i + 1]] for i in chosen], local, [True] * chosen.size)
    z = normalized[rows]
    z[:, ~kept] = np.nan
    varying = kept & ~level_verifiers(z, sub.group_of, sub.group_size)
    columns = varying & (counts >= config.max_bins)
    if not columns.any():
        return None, fit, np.zeros_like(kept)
    query_of = sub.group_query[sub.group_of]
    terms = contrasts(z, sub.group_of, query_of, chosen.size)
    within = Within(terms, columns, query_of, fit.posterior[rows])

    def stage(on: Layout) -> FitV2:
        return fit_v2(on, counts, within=within, learn_structure=config.dependency_guard,
                      smoothing=config.smoothing, tol=config.tol, max_iter=config.max_iter)

    second = stage(sub)
    silent = np.zeros_like(kept)
    tested = 0  # iterations of the stage run the association test looked at, replaced when it silences any
    if config.within_association:
        silent = _without_within_association(second, sub, within, z, varying & ~columns)
    if silent.any():  # refit with them abstaining in this stage: their histograms stay flat, no evidence
        stage_bins = sub.bins.copy()
        stage_bins[:, silent] = -1
        tested = second.iterations
        second = stage(replace(sub, bins=stage_bins))
    assert second.contrast is not None
    posterior = fit.posterior.copy()
    posterior[rows] = second.posterior
    params = GroupedParams(columns, second.contrast.delta, second.contrast.gamma, second.contrast.var,
                           second.log_p1, second.log_p0, second.structure.weight, second.structure.icc,
                           second.rho0)
    return params, replace(fit, posterior=posterior, iterations=fit.iterations + tested + second.iterations,
                           converged=fit.converged and second.converged,
                           last_change=max(fit.last_change, second.last_change)), silent


def _without_within_association(stage: FitV2, layout: Layout, within: Within, z: np.ndarray,
                                candidates: np.ndarray) -> np.ndarray:
    """(m,) mask: which of the ``candidates`` verifiers show no association inside queries (two-sided 5% level)
    with the within-query stage's posterior computed without their own evidence.

    Leaving a verifier's own evidence out keeps the test from finding the verifier in a posterior it shaped.
    A few-valued check that most candidates pass can look useful pooled over queries only because it fails
    more often on hard prompts; inside a prompt, where selection happens, it may carry nothing."""
    silent = np.zeros_like(candidates)
    llr = fitted_evidence(stage, layout, within)
    weights = member_weights(layout, stage.structure)
    for j in np.flatnonzero(candidates):
        without_j = weights.copy()
        without_j[:, j] = 0.0
        post, _ = group_posteriors(group_evidence(llr, layout, without_j), layout, stage.rho0, stage.pi)
        stat = within_association(z[:, [j]], post[layout.group_of], within.query_of, layout.query_groups.size)[0]
        silent[j] = abs(stat) < WITHIN_ASSOCIATION_Z
    return silent


def _query_layout(groups: Sequence[int], unique: bool, copies: int = 1) -> Layout:
    """``copies`` stacked copies of one query's answer groups (``group_answers`` ids), at most one right when
    ``unique``; scoring needs only the group structure, so the layout holds no bins."""
    no_bins = np.empty((len(groups), 0), dtype=np.int16)
    group_ids = np.array(groups, dtype=np.int64)
    return build_layout([no_bins] * copies, [group_ids] * copies, [unique] * copies)


def _has_answers(answers: Sequence[str | None] | None) -> bool:
    """Answer groups need at least one extracted answer; with none, candidates are independent."""
    return answers is not None and any(a is not None for a in answers)


def _or(value: float, default: float) -> float:
    return default if not np.isfinite(value) else float(value)


def _layout(bins: np.ndarray, matrices: Sequence[np.ndarray], answers: Sequence[Sequence[str | None] | None],
            tasks: Sequence[str | None], config: WeaverV2Config) -> Layout:
    per_query: list[np.ndarray] = []
    groups: list[np.ndarray] = []
    unique: list[bool] = []
    start = 0
    for matrix, ans, task in zip(matrices, answers, tasks, strict=True):
        n = matrix.shape[0]
        per_query.append(bins[start:start + n])
        start += n
        if config.answer_groups and _has_answers(ans):
            groups.append(np.array(group_answers(ans or ()), dtype=np.int64))
            unique.append(config.unique_answers and task not in config.multi_answer_tasks)
        else:
            groups.append(np.arange(n))
            unique.append(False)
    return build_layout(per_query, groups, unique)


def _report(fit: FitV2, layout: Layout, names: tuple[str, ...], normalizer: Normalizer, kept: np.ndarray,
            reasons: list[str], n_bins: np.ndarray, thresholds: np.ndarray, coverage: np.ndarray,
            normalized: np.ndarray, n_queries: int, seconds: float) -> FitReportV2:
    q = fit.posterior
    accuracy, tpr, fpr = expected_rates(normalized, thresholds, q)
    table = np.where(np.arange(fit.log_p1.shape[1])[None, :] < n_bins[:, None], fit.llr_table, 0.0)
    effective = float(fit.structure.weight[kept].sum())
    warnings: list[str] = []
    if not kept.any():
        warnings.append("no usable verifier (all empty or constant): the posterior is the prior")
    if not fit.converged:
        warnings.append(f"EM did not converge in {fit.iterations} iterations (last change {fit.last_change:.2e})")
    groups_used = bool(layout.unique.any() or (layout.group_size > 1).any())
    identifiable = effective >= 3.0 or (groups_used and effective >= 2.0)
    if not identifiable:
        warnings.append(f"{effective:.1f} effective independent verifier(s): class balance and accuracies are "
                        "not identifiable from agreement alone; the smoothing prior shapes them")
    verifiers = tuple(
        VerifierReportV2(
            name=names[j], kept=bool(kept[j]), reason=reasons[j], normalization=normalizer.kinds[j],
            n_bins=int(n_bins[j]) if kept[j] else 0, threshold=float(thresholds[j]), coverage=float(coverage[j]),
            accuracy=float(accuracy[j]) if kept[j] else float("nan"),
            tpr=float(tpr[j]) if kept[j] else float("nan"), fpr=float(fpr[j]) if kept[j] else float("nan"),
            weight=float(fit.structure.weight[j]),
            icc=float(fit.structure.icc[j]), max_llr=float(np.abs(table[j]).max()) if kept[j] else 0.0,
        )
        for j in range(len(names))
    )
    unique_share = fit.rho0 if layout.unique.any() else float("nan")
    return FitReportV2(
        n_queries=n_queries, n_candidates=int(q.size), n_verifiers=len(names), n_kept=int(kept.sum()),
        class_balance=float(q.mean()) if q.size else 0.5, none_right=float(unique_share),
        iterations=fit.iterations, converged=fit.converged, last_change=fit.last_change,
        effective_verifiers=effective, identifiable=identifiable, fit_seconds=seconds,
        warnings=tuple(warnings), verifiers=verifiers,
    )


def expected_rates(normalized: np.ndarray, thresholds: np.ndarray,
                   posterior: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per verifier, posterior-expected accuracy, TPR and FPR of its yes/no vote at ``thresholds``."""
    observed = ~np.isnan(normalized)
    yes = np.where(observed, normalized >= thresholds[None, :], False)
    q = posterior[:, None] * observed
    r = (1 - posterior)[:, None] * observed
    n = np.maximum(observed.sum(0), 1)
    accuracy: np.ndarray = (np.where(yes, q, 0.0).sum(0) + np.where(yes, 0.0, r).sum(0)) / n
    tpr: np.ndarray = np.where(yes, q, 0.0).sum(0) / np.maximum(q.sum(0), 1e-12)
    fpr: np.ndarray = np.where(yes, r, 0.0).sum(0) / np.maximum(r.sum(0), 1e-12)
    return accuracy, tpr, fpr


def _finite_or_none(value: Any) -> Any:
    """JSON-safe copy: NaN becomes null, numpy scalars become Python numbers, tuples lists."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    if isinstance(value, float | np.floating):
        return None if not np.isfinite(value) else float(value)
    return value
