"""Online weak supervision: keep refitting the label model on the score matrices the service computes.

The Weaver label model reads no labels, so every verified request is training data for it. This
module is the pure part (no Redis, no web server): the score-log record and a bounded in-memory
ring, the refit policy, fitting on a rolling window, the guardrails that refuse a degenerate fit,
drift between consecutive fits, and a version store with rollback. ``workers.online`` runs it
embedded (a thread) or distributed (Redis Streams, a lease lock, pub/sub publication).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from models.weaver import WeaverConfig, WeaverModel

# -- the score log ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreRecord:
    """One verified query as the refit loop sees it: scores only, no labels, no text by default."""

    matrix: np.ndarray  # (n_candidates, n_verifiers) raw scores, NaN = abstained or failed
    verifier_names: tuple[str, ...]
    verifier_versions: tuple[str, ...] = ()  # same order as verifier_names ("" when unknown)
    task: str | None = None
    request_id: str = ""
    timestamp: float = field(default_factory=time.time)
    prompt: str | None = None  # only when the operator opted in (log_prompts)

    def __post_init__(self) -> None:
        matrix = np.asarray(self.matrix, dtype=float)
        if matrix.ndim != 2 or matrix.shape[1] != len(self.verifier_names):
            raise ValueError(f"score matrix shape {matrix.shape} does not match {len(self.verifier_names)} verifiers")
        if self.verifier_versions and len(self.verifier_versions) != len(self.verifier_names):
            raise ValueError("verifier_versions must name one version per verifier")
        object.__setattr__(self, "matrix", matrix)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "matrix": [[None if np.isnan(v) else float(v) for v in row] for row in self.matrix],
            "verifier_names": list(self.verifier_names),
            "verifier_versions": list(self.verifier_versions),
            "task": self.task,
            "request_id": self.request_id,
            "timestamp": self.timestamp,
        }
        if self.prompt is not None:
            out["prompt"] = self.prompt
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScoreRecord:
        names = tuple(data["verifier_names"])
        rows = data["matrix"]
        matrix = np.array([[np.nan if v is None else float(v) for v in row] for row in rows], dtype=float)
        if matrix.size == 0:
            matrix = matrix.reshape(len(rows), len(names))
        return cls(
            matrix=matrix,
            verifier_names=names,
            verifier_versions=tuple(data.get("verifier_versions") or ()),
            task=data.get("task"),
            request_id=str(data.get("request_id", "")),
            timestamp=float(data.get("timestamp", 0.0)),
            prompt=data.get("prompt"),
        )


class ScoreRing:
    """A bounded, thread-safe in-memory score log (embedded mode); the oldest records fall off."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("ring capacity must be at least 1")
        self._items: deque[ScoreRecord] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._total = 0

    @property
    def capacity(self) -> int:
        return self._items.maxlen or 0

    @property
    def total(self) -> int:
        """Records ever appended (not only those still held)."""
        return self._total

    def __len__(self) -> int:
        return len(self._items)

    def append(self, record: ScoreRecord) -> int:
        with self._lock:
            self._items.append(record)
            self._total += 1
            return self._total

    def window(self, size: int | None = None) -> list[ScoreRecord]:
        """The newest ``size`` records (all held when None), oldest first."""
        with self._lock:
            items = list(self._items)
        return items if size is None or size >= len(items) else items[len(items) - size:]


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
    names, matrices, tasks = window_matrices(records)
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
    with_tasks = by_task and any(task is not None for task in tasks)
    model = WeaverModel.fit(matrices, names, config, tasks=tasks if with_tasks else None)
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


# -- cold start --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColdStart:
    """What serves before the first accepted fit: a shipped model file, or a label-free baseline."""

    prior: Literal["model", "mean", "majority"] = "mean"
    model_path: str | None = None

    def load(self) -> WeaverModel | None:
        if self.prior != "model":
            return None
        if not self.model_path:
            raise ValueError("cold start prior 'model' needs model_path")
        return WeaverModel.load(self.model_path)

    def describe(self) -> str:
        if self.prior == "model":
            return f"cold start: shipped model {self.model_path} (no online fit yet)"
        return f"cold start: {self.prior} aggregation (no online fit yet)"


# -- versions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionInfo:
    """Metadata of one published version (the artifact itself is stored beside it)."""

    sequence: int
    version: str  # WeaverModel.version (content hash)
    created_at: float
    source: str  # "refit", "seed"
    n_queries: int
    drift: float | None  # against the version it replaced when it was fitted (None: nothing to compare)
    tasks: tuple[str, ...] = ()
    note: str = ""
    task_drift: dict[str, float] = field(default_factory=dict)  # per task model, like ``drift``

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["tasks"] = list(self.tasks)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VersionInfo:
        return cls(
            sequence=int(data["sequence"]), version=str(data["version"]), created_at=float(data["created_at"]),
            source=str(data["source"]), n_queries=int(data["n_queries"]),
            drift=None if data.get("drift") is None else float(data["drift"]),
            tasks=tuple(data.get("tasks") or ()), note=str(data.get("note", "")),
            task_drift={str(k): float(v) for k, v in (data.get("task_drift") or {}).items()},
        )


def version_info(model: WeaverModel, sequence: int, source: str, n_queries: int,
                 drift_distance: float | None = None, note: str = "",
                 task_drift: dict[str, Drift] | None = None) -> VersionInfo:
    distance = None if drift_distance is None or np.isnan(drift_distance) else float(drift_distance)
    per_task = {k: float(d.distance) for k, d in (task_drift or {}).items() if not np.isnan(d.distance)}
    return VersionInfo(sequence=sequence, version=model.version, created_at=time.time(), source=source,
                       n_queries=n_queries, drift=distance, tasks=tuple(sorted(model.by_task)), note=note,
                       task_drift=per_task)


PinPolicy = Literal["hold", "fresh_window"]


@dataclass(frozen=True)
class Pointer:
    """Which version every replica serves, how it got there, and whether a rollback pinned it.

    ``source`` is "refit" (a refit published it), "rollback" (an operator pointed back at it) or "seed"
    (set directly, e.g. a shipped model). A pinned pointer is not moved by refits unless the pin policy
    allows it (``pin_allows``); only an operator's unpin, another rollback or such a refit moves it.
    """

    version: str
    sequence: int
    source: str
    published_at: float
    pinned: bool = False
    pinned_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Pointer:
        pinned_at = data.get("pinned_at")
        return cls(version=str(data["version"]), sequence=int(data.get("sequence") or 0),
                   source=str(data.get("source") or "refit"), published_at=float(data.get("published_at") or 0.0),
                   pinned=bool(data.get("pinned", False)), pinned_at=None if pinned_at is None else float(pinned_at))


def pin_allows(pointer: Pointer | None, policy: PinPolicy, window_start: float | None) -> bool:
    """May a refit that passed its guardrails replace the served version?

    Unpinned: always. Pinned under ``hold``: never (an operator unpins). Pinned under ``fresh_window``:
    only a fit whose whole window was logged after the pin, so none of the traffic the operator rolled
    back from is in it.
    """
    if pointer is None or not pointer.pinned:
        return True
    if policy == "fresh_window":
        return window_start is not None and pointer.pinned_at is not None and window_start > pointer.pinned_at
    return False


class ModelStore(Protocol):
    """Where versions live: a directory (embedded), memory, or Redis (distributed, ``workers.online``)."""

    def put(self, model: WeaverModel, info: VersionInfo) -> None: ...
    def get(self, version: str) -> WeaverModel: ...
    def versions(self) -> list[VersionInfo]: ...
    def info(self, version: str) -> VersionInfo | None: ...
    def pointer(self) -> Pointer | None: ...
    def current(self) -> str | None: ...
    def set_current(self, version: str) -> None: ...
    def publish(self, model: WeaverModel, info: VersionInfo, pin_policy: PinPolicy = "hold",
                window_start: float | None = None) -> VersionInfo | None: ...
    def rollback(self, version: str) -> Pointer: ...
    def unpin(self) -> Pointer | None: ...


class VersionNotFound(KeyError):
    pass


class _PointerRules:
    """The pointer transitions shared by the memory and directory stores (Redis: ``workers.online.store``).

    Subclasses provide ``_locked`` (mutual exclusion over the pointer and the index), ``_read_pointer``,
    ``_write_pointer``, ``_store`` (artifact + index, no pointer move) and ``_has``.
    """

    def _locked(self) -> Any:
        raise NotImplementedError

    def _read_pointer(self) -> Pointer | None:
        raise NotImplementedError

    def _write_pointer(self, pointer: Pointer) -> None:
        raise NotImplementedError

    def _store(self, model: WeaverModel, info: VersionInfo) -> None:
        raise NotImplementedError

    def _has(self, version: str) -> bool:
        raise NotImplementedError

    def versions(self) -> list[VersionInfo]:
        raise NotImplementedError

    def info(self, version: str) -> VersionInfo | None:
        match = [i for i in self.versions() if i.version == version]
        return match[-1] if match else None

    def pointer(self) -> Pointer | None:
        return self._read_pointer()

    def current(self) -> str | None:
        pointer = self._read_pointer()
        return pointer.version if pointer is not None else None

    def set_current(self, version: str) -> None:
        """Serve a kept version, unpinned (seeding a store; a rollback is ``rollback``)."""
        with self._locked():
            if not self._has(version):
                raise VersionNotFound(version)
            info = self.info(version)
            self._write_pointer(Pointer(version, info.sequence if info else 0, info.source if info else "seed",
                                        time.time()))

    def publish(self, model: WeaverModel, info: VersionInfo, pin_policy: PinPolicy = "hold",
                window_start: float | None = None) -> VersionInfo | None:
        """Store a refit and make it current, unless a pin holds (then nothing is stored: None)."""
        with self._locked():
            if not pin_allows(self._read_pointer(), pin_policy, window_start):
                return None
            sequence = max((i.sequence for i in self.versions()), default=0) + 1
            published = replace(info, sequence=sequence)
            self._store(model, published)
            self._write_pointer(Pointer(model.version, sequence, published.source, time.time()))
            return published

    def rollback(self, version: str) -> Pointer:
        """Serve a kept version again and pin it, so the refit loop does not replace it."""
        with self._locked():
            if not self._has(version):
                raise VersionNotFound(version)
            info = self.info(version)
            now = time.time()
            pointer = Pointer(version, info.sequence if info else 0, "rollback", now, pinned=True, pinned_at=now)
            self._write_pointer(pointer)
            return pointer

    def unpin(self) -> Pointer | None:
        """Let refits replace the served version again (it keeps serving until one passes)."""
        with self._locked():
            pointer = self._read_pointer()
            if pointer is None or not pointer.pinned:
                return pointer
            unpinned = replace(pointer, pinned=False)
            self._write_pointer(unpinned)
            return unpinned


class MemoryModelStore(_PointerRules):
    """Versions in a dict (tests, and embedded mode without a model directory)."""

    def __init__(self, keep: int = 20) -> None:
        self.keep = keep
        self._models: dict[str, WeaverModel] = {}
        self._infos: list[VersionInfo] = []
        self._pointer: Pointer | None = None
        self._lock = threading.RLock()

    def _locked(self) -> threading.RLock:
        return self._lock

    def _read_pointer(self) -> Pointer | None:
        return self._pointer

    def _write_pointer(self, pointer: Pointer) -> None:
        self._pointer = pointer

    def _has(self, version: str) -> bool:
        return version in self._models

    def _store(self, model: WeaverModel, info: VersionInfo) -> None:
        self.put(model, info)

    def put(self, model: WeaverModel, info: VersionInfo) -> None:
        with self._lock:
            self._models[info.version] = model
            self._infos = [i for i in self._infos if i.version != info.version] + [info]
            self._prune()

    def _prune(self) -> None:
        current = self.current()
        while len(self._infos) > self.keep:
            oldest = next((i for i in self._infos if i.version != current), None)
            if oldest is None:
                return
            self._infos.remove(oldest)
            self._models.pop(oldest.version, None)

    def get(self, version: str) -> WeaverModel:
        try:
            return self._models[version]
        except KeyError:
            raise VersionNotFound(version) from None

    def versions(self) -> list[VersionInfo]:
        with self._lock:
            return list(self._infos)


class DirectoryModelStore(_PointerRules):
    """Versions as ``<dir>/<version>.json`` artifacts, ``index.jsonl`` metadata and a ``CURRENT`` pointer.

    Files are replaced atomically (write then rename), so a reader never sees half a pointer; writers
    (the serving process's refits, ``weaver models rollback|unpin``) take an exclusive ``flock`` on
    ``.lock``, so a rollback and a refit can never interleave. ``CURRENT`` holds the pointer as JSON (a
    bare version, written by older releases, still reads).
    """

    def __init__(self, root: str | Path, keep: int = 50) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self._lock = threading.RLock()
        self._depth = 0

    @contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

        with self._lock:  # reentrant within this process; the flock is taken by the outermost holder only
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            with open(self.root / ".lock", "a+") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                self._depth = 1
                try:
                    yield
                finally:
                    self._depth = 0
                    fcntl.flock(handle, fcntl.LOCK_UN)

    def _index_path(self) -> Path:
        return self.root / "index.jsonl"

    def _has(self, version: str) -> bool:
        return (self.root / f"{version}.json").exists()

    def _store(self, model: WeaverModel, info: VersionInfo) -> None:
        self.put(model, info)

    def put(self, model: WeaverModel, info: VersionInfo) -> None:
        with self._locked():
            tmp = self.root / f".{info.version}.json.tmp"
            model.save(tmp)
            tmp.replace(self.root / f"{info.version}.json")
            infos = [i for i in self.versions() if i.version != info.version] + [info]
            current = self.current()
            while len(infos) > self.keep:
                oldest = next((i for i in infos if i.version != current), None)
                if oldest is None:
                    break
                infos.remove(oldest)
                (self.root / f"{oldest.version}.json").unlink(missing_ok=True)
            _atomic_write(self._index_path(), "".join(json.dumps(i.to_json()) + "\n" for i in infos))

    def get(self, version: str) -> WeaverModel:
        path = self.root / f"{version}.json"
        if not path.exists():
            raise VersionNotFound(version)
        return WeaverModel.load(path)

    def versions(self) -> list[VersionInfo]:
        path = self._index_path()
        if not path.exists():
            return []
        return [VersionInfo.from_json(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]

    def _read_pointer(self) -> Pointer | None:
        path = self.root / "CURRENT"
        text = path.read_text().strip() if path.exists() else ""
        if not text:
            return None
        if text.startswith("{"):
            return Pointer.from_json(json.loads(text))
        info = self.info(text)  # a bare version (older releases)
        return Pointer(text, info.sequence if info else 0, info.source if info else "refit",
                       path.stat().st_mtime)

    def _write_pointer(self, pointer: Pointer) -> None:
        _atomic_write(self.root / "CURRENT", json.dumps(pointer.to_json()) + "\n")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def next_sequence(store: ModelStore) -> int:
    infos = store.versions()
    return max((i.sequence for i in infos), default=0) + 1


def rollback(store: ModelStore, version: str) -> Pointer:
    """Point the store back at a kept version and pin it there; returns the new pointer."""
    return store.rollback(version)


def resolve_version(store: ModelStore, ref: str) -> str:
    """A version from a full hash, a unique hash prefix, or a sequence number (``3`` or ``v3``)."""
    infos = store.versions()
    seq = ref[1:] if ref.startswith("v") and ref[1:].isdigit() else ref
    if seq.isdigit():
        for info in infos:
            if info.sequence == int(seq):
                return info.version
    matches = sorted({i.version for i in infos if i.version.startswith(ref)})
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise VersionNotFound(ref)
    raise ValueError(f"version prefix {ref!r} is ambiguous: {', '.join(matches)}")


# -- the learner: ring + policy + guardrails + store --------------------------------------------


@dataclass
class OnlineConfig:
    policy: RefitPolicy = field(default_factory=RefitPolicy)
    guardrails: GuardrailConfig = field(default_factory=GuardrailConfig)
    weaver: WeaverConfig = field(default_factory=WeaverConfig)
    cold_start: ColdStart = field(default_factory=ColdStart)
    ring_capacity: int = 10000
    log_prompts: bool = False
    drift_alarm: float = 0.25  # a drift distance above this raises weaver_model_drift_alarm
    pin_policy: PinPolicy = "hold"  # what a rollback's pin lets through (``pin_allows``)


class OnlineLearner:
    """The embedded refit state machine. Thread-safe; the caller decides which thread runs ``refit``.

    ``observe`` is cheap (append to the ring); ``maybe_refit`` fits when the policy says so and, when
    the guardrails pass and no pin holds, stores the new version and makes it current. The store's
    pointer is the truth: ``sync`` follows it when another process (``weaver models rollback``) moved it.
    """

    def __init__(self, config: OnlineConfig | None = None, store: ModelStore | None = None) -> None:
        self.config = config or OnlineConfig()
        self.ring = ScoreRing(self.config.ring_capacity)
        self.store: ModelStore = store or MemoryModelStore()
        self._lock = threading.Lock()
        self._fit_lock = threading.Lock()
        self._seen_at_last_fit = 0
        self._last_fit_time = time.time()
        self.current: WeaverModel | None = None
        self.pointer: Pointer | None = None
        if self.sync() is None and (prior := self.config.cold_start.load()) is not None:
            self.current = prior
        self.history: list[RefitOutcome] = []

    def sync(self) -> Pointer | None:
        """Read the store's pointer and load its version if it is not the one held; returns the pointer."""
        pointer = self.store.pointer()
        if pointer is None:
            return None
        with self._lock:
            held = self.current.version if self.current is not None else None
        model = self.store.get(pointer.version) if pointer.version != held else None
        with self._lock:
            if model is not None:
                self.current = model
            self.pointer = pointer
        return pointer

    def observe(self, record: ScoreRecord) -> None:
        if record.prompt is not None and not self.config.log_prompts:
            record = ScoreRecord(record.matrix, record.verifier_names, record.verifier_versions, record.task,
                                 record.request_id, record.timestamp, None)
        self.ring.append(record)

    def due(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self.config.policy.due(self.ring.total - self._seen_at_last_fit, now - self._last_fit_time)

    def refit_now(self) -> RefitOutcome | None:
        """Fit on the window now (None when the window is empty or another refit is running)."""
        if not self._fit_lock.acquire(blocking=False):
            return None
        try:
            seen = self.ring.total
            records = self.ring.window(self.config.policy.window)
            if not records:
                return None
            self.sync()  # judge against what is served now (an operator may have rolled back)
            outcome = refit(records, self.current, self.config.weaver, self.config.guardrails,
                            self.config.policy.by_task)
            if outcome.published:
                info = version_info(outcome.model, 0, "refit", outcome.n_queries, outcome.drift.distance,
                                    task_drift=outcome.task_drift)
                window_start = min(r.timestamp for r in records)
                if self.store.publish(outcome.model, info, self.config.pin_policy, window_start) is None:
                    pointer = self.store.pointer()
                    outcome = outcome.held(f"v{pointer.sequence if pointer else 0} pinned by a rollback "
                                           f"(pin_policy {self.config.pin_policy})")
                else:
                    with self._lock:
                        self.current = outcome.model
            with self._lock:
                self._seen_at_last_fit = seen
                self._last_fit_time = time.time()
                self.history.append(outcome)
            self.sync()
            return outcome
        finally:
            self._fit_lock.release()

    def maybe_refit(self, now: float | None = None) -> RefitOutcome | None:
        return self.refit_now() if self.due(now) else None

    def rollback(self, version: str) -> WeaverModel:
        rollback(self.store, version)
        self.sync()
        return self.store.get(version)


def records_from_matrices(
    matrices: Iterable[np.ndarray], names: Sequence[str], tasks: Iterable[str | None] | None = None
) -> list[ScoreRecord]:
    """Records for offline replays and tests (one per query)."""
    task_list = list(tasks) if tasks is not None else None
    out = []
    for q, matrix in enumerate(matrices):
        task = task_list[q] if task_list is not None else None
        out.append(ScoreRecord(matrix=matrix, verifier_names=tuple(names), task=task, request_id=str(q)))
    return out
