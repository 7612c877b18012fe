"""The score log: one record per verified request (its score matrix, never a label) and a bounded ring."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
