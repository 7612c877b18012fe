"""The distilled cross-encoder as a verifier: (prompt, candidate) -> P(correct), one forward per batch.

Being a verifier, it gets the worker's dynamic batching, score cache and timeouts for free; the
``cross_encoder`` and ``cascade`` aggregators (``workers.distilled``) read its column.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from workers.model_paths import resolve_model_path
from workers.verifiers.base import Item, PairItem, Score, Scored, Verifier


class CrossEncoderVerifier(Verifier):
    kind = "cross_encoder"
    granularity = "pair"
    default_max_batch_size = 32
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
                "max_length": getattr(meta, "max_length", None)}

    def load(self) -> None:
        import torch

        from models.distill.student import CrossEncoderStudent

        if self.threads:
            torch.set_num_threads(self.threads)
        student = CrossEncoderStudent.load(resolve_model_path(self.model_path))
        student.model.to(self.device)
        self._student = student

    def score_sync(self, items: Sequence[Item]) -> list[Score | Scored]:
        if self._student is None:
            self.load()
        pairs = [item for item in items if isinstance(item, PairItem)]
        probs = self._student.predict([p.prompt for p in pairs], [p.candidate for p in pairs],
                                      batch_size=max(len(pairs), 1))
        return [float(p) for p in probs]
