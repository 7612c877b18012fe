"""Centrality of a candidate among its siblings in embedding space (sentence-transformers).

Score = mean cosine similarity to the other N-1 candidates: answers that many siblings resemble
are more often right (semantic self-consistency). A lone candidate abstains (NaN). All candidates
of all groups in a batch are embedded in one forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from workers.model_paths import MINILM_DIR, resolve_model_path
from workers.verifiers.base import GroupItem, Item, Score, Scored, Verifier


def centrality(embeddings: np.ndarray) -> list[float]:
    """Mean cosine similarity of each row to the others (rows need not be normalized)."""
    n = embeddings.shape[0]
    if n < 2:
        return [math.nan] * n
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    sims = unit @ unit.T
    return [float(v) for v in (sims.sum(axis=1) - np.diag(sims)) / (n - 1)]


class EmbeddingConsistencyVerifier(Verifier):
    kind = "embedding_consistency"
    expected_cost_s = 0.05
    granularity = "group"
    default_max_batch_size = 16
    default_max_wait_ms = 5.0
    default_timeout_s = 120.0

    def __init__(self, name: str, model: str = MINILM_DIR, device: str = "cpu", encode_batch_size: int = 64,
                 max_seq_length: int | None = 256, **batching: Any) -> None:
        super().__init__(name, **batching)
        self.model_path = model
        self.device = device
        self.encode_batch_size = encode_batch_size
        self.max_seq_length = max_seq_length
        self._model: Any = None

    def version_params(self) -> dict[str, object]:
        return {"model": self.model_path, "max_seq_length": self.max_seq_length}

    def load(self) -> None:
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(resolve_model_path(self.model_path), device=self.device)
        if self.max_seq_length:
            self._model.max_seq_length = self.max_seq_length

    def score_sync(self, items: Sequence[Item]) -> list[Score | Scored]:
        if self._model is None:
            self.load()
        groups = [item for item in items if isinstance(item, GroupItem)]
        texts = [c for g in groups for c in g.candidates]
        embeddings = self._model.encode(texts, batch_size=self.encode_batch_size, convert_to_numpy=True,
                                        show_progress_bar=False)
        out: list[Score | Scored] = []
        offset = 0
        for group in groups:
            n = len(group.candidates)
            out.append(centrality(embeddings[offset: offset + n]))
            offset += n
        return out
