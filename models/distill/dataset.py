"""Distillation examples: candidate sets paired with teacher (Weaver) probabilities.

The unit of splitting is the query, never the pair: candidates of one prompt are near-duplicates
of each other, so a pair-level split leaks the answer to held-out queries (the reference Weaver
distillation does exactly that). Queries are grouped by id *and* by normalized prompt text, so a
prompt that appears twice under two ids still lands on one side.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from models.aggregators import QueryScores
from models.data import CandidateSet
from models.distill.features import CONTEXT_FEATURES, context_matrix
from models.weaver import WeaverModel


@dataclass(frozen=True)
class DistillQuery:
    """One prompt, its candidates, the teacher's P(correct) per candidate and labels if known."""

    id: str
    prompt: str
    candidates: tuple[str, ...]
    teacher: np.ndarray  # (n,) teacher probabilities in [0, 1]
    labels: np.ndarray | None = None  # (n,) 1/0, NaN where unknown; None when unlabelled

    def __post_init__(self) -> None:
        if self.teacher.shape != (len(self.candidates),):
            raise ValueError(f"query {self.id}: {self.teacher.shape[0]} teacher scores for "
                             f"{len(self.candidates)} candidates")
        if self.labels is not None and self.labels.shape != self.teacher.shape:
            raise ValueError(f"query {self.id}: labels shape {self.labels.shape} != {self.teacher.shape}")

    @property
    def group_key(self) -> str:
        return prompt_key(self.prompt)

    @cached_property
    def context(self) -> np.ndarray:
        """Every known context feature (``models.distill.features``), one row per candidate; computed once."""
        return context_matrix(self.candidates, tuple(CONTEXT_FEATURES))

    def context_for(self, names: Sequence[str]) -> np.ndarray:
        """The context features ``names`` (columns in that order) for every candidate."""
        columns = [list(CONTEXT_FEATURES).index(n) for n in names]
        return self.context[:, columns]

    def pairs(self) -> list[Pair]:
        names = tuple(CONTEXT_FEATURES)
        return [
            Pair(self.id, self.prompt, text, float(self.teacher[i]),
                 float("nan") if self.labels is None else float(self.labels[i]), i,
                 dict(zip(names, (float(v) for v in self.context[i]), strict=True)))
            for i, text in enumerate(self.candidates)
        ]


@dataclass(frozen=True)
class Pair:
    """One training example: (prompt, candidate) with its soft target."""

    query_id: str
    prompt: str
    candidate: str
    teacher: float
    label: float  # NaN when unknown
    index: int  # candidate position within its query
    context: Mapping[str, float] = field(default_factory=dict)  # sibling features, see features.py

    @property
    def key(self) -> tuple[str, int]:
        return (self.query_id, self.index)


def prompt_key(prompt: str) -> str:
    """Grouping key of a prompt: case- and whitespace-insensitive hash."""
    normalized = re.sub(r"\s+", " ", prompt.strip().lower())
    return hashlib.sha1(normalized.encode()).hexdigest()[:16]


def teacher_posteriors(model: WeaverModel, queries: Sequence[QueryScores]) -> list[np.ndarray]:
    """Weaver's P(correct) for every candidate of every query (label-free)."""
    out = []
    for query in queries:
        task_model = model.for_task(query.task)
        posterior, _ = task_model.score(task_model.align(query.matrix, query.verifier_names))
        out.append(np.asarray(posterior, dtype=float))
    return out


def build_distill_queries(sets: Sequence[CandidateSet], teacher: Sequence[np.ndarray]) -> list[DistillQuery]:
    """Pair each candidate set with its teacher probabilities (labels are kept only for evaluation)."""
    if len(sets) != len(teacher):
        raise ValueError(f"{len(teacher)} teacher score vectors for {len(sets)} candidate sets")
    return [
        DistillQuery(cs.id, cs.prompt, tuple(c.text for c in cs.candidates), np.asarray(t, dtype=float), cs.labels)
        for cs, t in zip(sets, teacher, strict=True)
    ]


@dataclass(frozen=True)
class QuerySplit:
    train: list[DistillQuery]
    val: list[DistillQuery]
    test: list[DistillQuery]

    def check_disjoint(self) -> None:
        """Raise when any query id or prompt occurs in more than one part."""
        parts = {"train": self.train, "val": self.val, "test": self.test}
        seen: dict[str, str] = {}
        for part, queries in parts.items():
            for query in queries:
                for key in (f"id:{query.id}", f"prompt:{query.group_key}"):
                    other = seen.setdefault(key, part)
                    if other != part:
                        raise ValueError(f"query {query.id} ({key}) is in both {other} and {part}")


def split_by_query(
    queries: Sequence[DistillQuery], val_fraction: float = 0.1, test_fraction: float = 0.0, seed: int = 0
) -> QuerySplit:
    """Split queries (not pairs) into train/val/test; queries sharing an id or a prompt stay together."""
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(f"bad split fractions val={val_fraction} test={test_fraction}")
    groups = _connected_groups(queries)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(groups))
    n = len(queries)
    n_test, n_val = round(test_fraction * n), round(val_fraction * n)
    test: list[DistillQuery] = []
    val: list[DistillQuery] = []
    train: list[DistillQuery] = []
    for g in order:
        members = [queries[i] for i in groups[g]]
        if len(test) < n_test:
            test.extend(members)
        elif len(val) < n_val:
            val.extend(members)
        else:
            train.extend(members)
    split = QuerySplit(train, val, test)
    split.check_disjoint()
    return split


def _connected_groups(queries: Sequence[DistillQuery]) -> list[list[int]]:
    """Union-find over 'same id' and 'same prompt' so either kind of duplicate keeps a group whole."""
    parent = list(range(len(queries)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, query in enumerate(queries):
        for key in (f"id:{query.id}", f"prompt:{query.group_key}"):
            j = first.setdefault(key, i)
            parent[find(i)] = find(j)
    grouped: dict[int, list[int]] = {}
    for i in range(len(queries)):
        grouped.setdefault(find(i), []).append(i)
    return list(grouped.values())


@dataclass(frozen=True)
class TeacherSplit:
    """The teacher and the distillation queries, split by query, carrying its posteriors as targets."""

    teacher: WeaverModel
    train: list[DistillQuery]
    val: list[DistillQuery]
    test: list[DistillQuery]


def teacher_and_split(
    sets: Sequence[CandidateSet],
    scored: Sequence[QueryScores],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    teacher: WeaverModel | None = None,
    fit_on_val: bool = True,
) -> TeacherSplit:
    """Split by query, then fit Weaver label-free on the training queries (plus val when ``fit_on_val``).

    The split depends only on ids and prompts, so it is the same whatever the scores; the teacher never
    sees a test query. A given ``teacher`` is used as is.
    """
    if len(sets) != len(scored):
        raise ValueError(f"{len(scored)} score matrices for {len(sets)} candidate sets")
    placeholder = build_distill_queries(sets, [np.zeros(len(cs.candidates)) for cs in sets])
    split = split_by_query(placeholder, val_fraction, test_fraction, seed)
    if teacher is None:
        fit_ids = {q.id for q in split.train} | ({q.id for q in split.val} if fit_on_val else set())
        teacher = WeaverModel.fit([q.matrix for q, cs in zip(scored, sets, strict=True) if cs.id in fit_ids],
                                  scored[0].verifier_names)
    by_id = {q.id: q for q in build_distill_queries(sets, teacher_posteriors(teacher, scored))}
    train, val, test = ([by_id[q.id] for q in part] for part in (split.train, split.val, split.test))
    return TeacherSplit(teacher, train, val, test)
