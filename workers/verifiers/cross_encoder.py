"""The distilled cross-encoder as a verifier: (prompt, candidate) -> P(correct), one forward per batch.

It is a *group* verifier: a student trained with sibling features (``context_features`` in its
``distill.json``) needs the whole candidate set to score one candidate, and a pairwise student simply
ignores the siblings. Groups from concurrent requests are flattened into one encoder batch. Being a
verifier, it gets the worker's dynamic batching, score cache and timeouts for free; the
``cross_encoder`` and ``cascade`` aggregators (``workers.distilled``) read its column.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from workers.model_paths import resolve_model_path
from workers.verifiers.base import GroupItem, Item, Score, Scored, Verifier


class CrossEncoderVerifier(Verifier):
    kind = "cross_encoder"
    expected_cost_s = 0.05
    granularity = "group"
    default_max_batch_size = 8  # groups: 8 requests of N candidates make one encoder batch
    default_max_wait_ms = 2.0
    default_timeout_s = 60.0

    def __init__(self, name: str, model: str, device: str = "cpu", threads: int | None = None,
                 **batching: Any) -> None:
        super().__init__(name, **batching)
        self.model_path = model
        self.device = device
        self.threads = threads
        self._student: Any = None

    def version_params(self) -> dict[str, object]:
        meta = self._student.meta if self._student is not None else None
        return {"model": self.model_path, "teacher": getattr(meta, "teacher_version", None),
                "max_length": getattr(meta, "max_length", None),
                "context": getattr(meta, "context_features", None)}

    def load(self) -> None:
        import torch

        from models.distill.student import CrossEncoderStudent

        if self.threads:
            torch.set_num_threads(self.threads)
        student = CrossEncoderStudent.load(resolve_model_path(self.model_path))
        student.to(self.device)
        self._student = student

    def score_sync(self, items: Sequence[Item]) -> list[Score | Scored]:
        if self._student is None:
            self.load()
        import numpy as np

        from models.distill.features import context_matrix

        groups = [item for item in items if isinstance(item, GroupItem)]
        names = self._student.context_features
        prompts = [g.prompt for g in groups for _ in g.candidates]
        texts = [c for g in groups for c in g.candidates]
        context = np.concatenate([context_matrix(g.candidates, names) for g in groups]) if names and groups else None
        probs = self._student.predict(prompts, texts, batch_size=max(len(texts), 1), context=context)
        out: list[Score | Scored] = []
        start = 0
        for group in groups:
            out.append([float(p) for p in probs[start:start + len(group.candidates)]])
            start += len(group.candidates)
        return out
