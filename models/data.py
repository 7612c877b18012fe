"""Candidate sets: the canonical JSON Lines format, and Weaver's published score files.

One query per line::

    {"id": "q1", "prompt": "...", "task": "gsm8k",
     "candidates": [{"text": "...", "correct": true, "scores": {"rm": 1.3}}, ...],
     "reference": "18"}

``correct`` (labels), ``reference``, ``task`` and per-candidate ``scores`` (precomputed verifier
outputs, ``null`` for an abstention) are optional. Weaver's score files (one row per query with
``samples``, ``answer_correct`` and ``<name>_scores`` / ``<name>_verdicts`` columns) are read into
the same objects so that users can bring precomputed verifier scores.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class DataError(ValueError):
    """A candidate-set file (or body) that cannot be read; the message names the line and field."""


@dataclass(frozen=True)
class Candidate:
    text: str
    correct: bool | None = None
    scores: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CandidateSet:
    """One query and its N candidate answers."""

    id: str
    prompt: str
    candidates: tuple[Candidate, ...]
    reference: str | None = None
    task: str | None = None

    @property
    def labels(self) -> np.ndarray | None:
        """Correctness labels as floats (NaN where unknown), or None when no candidate is labelled."""
        values = [c.correct for c in self.candidates]
        if all(v is None for v in values):
            return None
        return np.array([np.nan if v is None else float(v) for v in values])

    def score_names(self) -> list[str]:
        names: dict[str, None] = {}
        for candidate in self.candidates:
            for name in candidate.scores:
                names.setdefault(name, None)
        return list(names)

    def score_matrix(self, names: Sequence[str]) -> np.ndarray:
        """Precomputed scores as a candidates x verifiers float matrix, NaN where absent."""
        matrix = np.full((len(self.candidates), len(names)), np.nan)
        for i, candidate in enumerate(self.candidates):
            for j, name in enumerate(names):
                value = candidate.scores.get(name)
                if value is not None:
                    matrix[i, j] = value
        return matrix


class _CandidateIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    text: str
    correct: bool | None = None
    scores: dict[str, float | None] = Field(default_factory=dict)

    @field_validator("scores")
    @classmethod
    def _finite_or_null(cls, value: dict[str, float | None]) -> dict[str, float | None]:
        for name, score in value.items():
            if score is not None and math.isinf(score):
                raise ValueError(f"score {name!r} is infinite; use null for a missing score")
        return value


class CandidateSetIn(BaseModel):
    """Validation schema of one line (and of the rerank body's candidate set)."""

    model_config = ConfigDict(extra="ignore")
    id: str | int
    prompt: str
    candidates: list[_CandidateIn] = Field(min_length=1)
    reference: str | int | float | None = None
    task: str | None = None

    def to_candidate_set(self) -> CandidateSet:
        return CandidateSet(
            id=str(self.id),
            prompt=self.prompt,
            candidates=tuple(
                Candidate(
                    text=c.text,
                    correct=c.correct,
                    scores={k: (math.nan if v is None else float(v)) for k, v in c.scores.items()},
                )
                for c in self.candidates
            ),
            reference=None if self.reference is None else str(self.reference),
            task=self.task,
        )


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(line)"
        parts.append(f"field '{where}': {item['msg']}")
    return "; ".join(parts)


# --- Weaver score files ------------------------------------------------------------------------

_SCORE_SUFFIXES = ("_scores", "_verdicts")
# Columns that look like verifiers but are not: outputs of Weaver itself (label leakage) and
# per-step PRM lists (nested per step, not one number per sample).
_EXCLUDED_COLUMNS = ("weaver_scores", "weaver_sample_scores")


def _is_weaver_row(row: dict[str, Any]) -> bool:
    return "samples" in row and "candidates" not in row


def _flatten_score(value: Any) -> float:
    """Judge verdicts are nested ``[[1.0], [0.0]]``; None means the judge gave no verdict."""
    while isinstance(value, list | tuple):
        if not value:
            return math.nan
        value = value[0]
    if value is None:
        return math.nan
    number = float(value)
    return math.nan if math.isinf(number) else number


def weaver_row_to_set(row: dict[str, Any], index: int) -> CandidateSet:
    """Convert one row of a Weaver score file (HF dataset layout) into a CandidateSet."""
    samples = row.get("samples")
    if not isinstance(samples, list) or not samples:
        raise DataError("field 'samples': expected a non-empty list of strings")
    labels = row.get("answer_correct")
    if labels is not None and len(labels) != len(samples):
        raise DataError(f"field 'answer_correct': {len(labels)} labels for {len(samples)} samples")
    columns = [
        key
        for key in row
        if key.endswith(_SCORE_SUFFIXES) and "_step" not in key and key not in _EXCLUDED_COLUMNS
    ]
    per_candidate: list[dict[str, float]] = [{} for _ in samples]
    for column in columns:
        values = row[column]
        if values is None:
            continue
        if not isinstance(values, list) or len(values) != len(samples):
            raise DataError(f"field '{column}': expected a list of {len(samples)} scores")
        for i, value in enumerate(values):
            try:
                per_candidate[i][column] = _flatten_score(value)
            except (TypeError, ValueError) as exc:
                raise DataError(f"field '{column}.{i}': not a number ({value!r})") from exc
    candidates = tuple(
        Candidate(
            text=str(text),
            correct=None if labels is None or labels[i] is None else bool(labels[i]),
            scores=per_candidate[i],
        )
        for i, text in enumerate(samples)
    )
    answer = row.get("answer")
    return CandidateSet(
        id=str(row.get("id", row.get("unique_id", index))),
        prompt=str(row.get("instruction", row.get("prompt", row.get("problem", "")))),
        candidates=candidates,
        reference=None if answer is None else str(answer),
        task=row.get("task"),
    )


def parse_candidate_set(obj: Any, index: int = 0) -> CandidateSet:
    """Validate one decoded JSON object (our format or a Weaver score-file row; ``index`` names the latter)."""
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}")
    if _is_weaver_row(obj):
        return weaver_row_to_set(obj, index)
    try:
        return CandidateSetIn.model_validate(obj).to_candidate_set()
    except ValidationError as exc:
        raise DataError(_describe(exc)) from None


def iter_candidate_sets(path: str | Path) -> Iterator[CandidateSet]:
    """Yield candidate sets from a JSON Lines file (ours or Weaver's) or a Weaver parquet file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".parquet":
        yield from _iter_parquet(path)
        return
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: malformed JSON ({exc.msg} at column {exc.colno})") from None
            try:
                yield parse_candidate_set(obj, number - 1)
            except DataError as exc:
                raise DataError(f"{path}:{number}: {exc}") from None


def _iter_parquet(path: Path) -> Iterator[CandidateSet]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise DataError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from exc
    table = pq.read_table(path)
    for index, row in enumerate(table.to_pylist()):
        try:
            yield weaver_row_to_set(row, index)
        except DataError as exc:
            raise DataError(f"{path}: row {index}: {exc}") from None


def load_candidate_sets(path: str | Path) -> list[CandidateSet]:
    sets = list(iter_candidate_sets(path))
    if not sets:
        raise DataError(f"{Path(path)}: no candidate sets in the file")
    return sets


def candidate_set_to_json(cs: CandidateSet, with_scores: bool = True) -> dict[str, Any]:
    """The canonical JSON object of a candidate set (NaN scores written as null)."""
    candidates = []
    for c in cs.candidates:
        item: dict[str, Any] = {"text": c.text}
        if c.correct is not None:
            item["correct"] = c.correct
        if with_scores and c.scores:
            item["scores"] = {k: (None if math.isnan(v) else v) for k, v in c.scores.items()}
        candidates.append(item)
    out: dict[str, Any] = {"id": cs.id, "prompt": cs.prompt, "candidates": candidates}
    if cs.reference is not None:
        out["reference"] = cs.reference
    if cs.task is not None:
        out["task"] = cs.task
    return out


def write_candidate_sets(path: str | Path, sets: Sequence[CandidateSet]) -> None:
    with Path(path).open("w", encoding="utf-8") as handle:
        for cs in sets:
            handle.write(json.dumps(candidate_set_to_json(cs)) + "\n")
