"""Where each epoch's training pairs come from: offline, semi-online, or fresh-sample rounds.

- ``offline``: one fixed pool, replayed every epoch (the reference recipe; prone to teacher hacking).
- ``semi-online``: a larger pre-scored pool; each epoch draws pairs not yet seen (least-seen once the
  pool is exhausted), so no teacher error is rehearsed until the pool runs out.
- ``fresh-samples``: each round asks a callback for freshly generated and scored queries. The callback
  (generation + verifiers + Weaver) lives in the workers/CLI layer; models/ only consumes its output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from models.distill.dataset import DistillQuery, Pair


class DataSource(Protocol):
    name: str

    def epoch(self, index: int, rng: np.random.Generator) -> list[Pair]:
        """The pairs to train on in epoch (or round) ``index``; empty means the source is exhausted."""
        ...

    def stats(self) -> dict[str, float]:
        """Exposure so far: pairs served, distinct pairs, mean times a served pair had been seen."""
        ...


@dataclass
class _Exposure:
    counts: dict[tuple[str, int], int] = field(default_factory=dict)
    served: int = 0

    def record(self, pairs: Sequence[Pair]) -> None:
        for pair in pairs:
            self.counts[pair.key] = self.counts.get(pair.key, 0) + 1
        self.served += len(pairs)

    def stats(self) -> dict[str, float]:
        distinct = len(self.counts)
        return {"pairs_served": float(self.served), "distinct_pairs": float(distinct),
                "mean_passes": self.served / distinct if distinct else 0.0}


class OfflineSource:
    """The same pool every epoch, shuffled."""

    name = "offline"

    def __init__(self, pool: Sequence[DistillQuery]) -> None:
        self.pairs = [p for q in pool for p in q.pairs()]
        self._exposure = _Exposure()

    def epoch(self, index: int, rng: np.random.Generator) -> list[Pair]:
        pairs = [self.pairs[i] for i in rng.permutation(len(self.pairs))]
        self._exposure.record(pairs)
        return pairs

    def stats(self) -> dict[str, float]:
        return self._exposure.stats()


class SemiOnlineSource:
    """``pairs_per_epoch`` pairs per epoch from a larger pool, unseen pairs first, then least-seen."""

    name = "semi-online"

    def __init__(self, pool: Sequence[DistillQuery], pairs_per_epoch: int) -> None:
        if pairs_per_epoch < 1:
            raise ValueError("pairs_per_epoch must be >= 1")
        self.pairs = [p for q in pool for p in q.pairs()]
        self.pairs_per_epoch = min(pairs_per_epoch, len(self.pairs))
        self._seen = np.zeros(len(self.pairs), dtype=int)
        self._exposure = _Exposure()

    def epoch(self, index: int, rng: np.random.Generator) -> list[Pair]:
        # Random key breaks ties among equally-seen pairs; lexsort puts least-seen first.
        order = np.lexsort((rng.random(len(self.pairs)), self._seen))[: self.pairs_per_epoch]
        self._seen[order] += 1
        pairs = [self.pairs[i] for i in rng.permutation(order)]
        self._exposure.record(pairs)
        return pairs

    def stats(self) -> dict[str, float]:
        return self._exposure.stats()


class FreshSampleSource:
    """Fresh queries from ``fetch(round)`` every round (generated, verified and scored elsewhere)."""

    name = "fresh-samples"

    def __init__(self, fetch: Callable[[int], Sequence[DistillQuery]], rounds: int) -> None:
        self.fetch = fetch
        self.rounds = rounds
        self._exposure = _Exposure()
        self.queries_fetched = 0

    def epoch(self, index: int, rng: np.random.Generator) -> list[Pair]:
        if index >= self.rounds:
            return []
        queries = list(self.fetch(index))
        self.queries_fetched += len(queries)
        pairs = [p for q in queries for p in q.pairs()]
        pairs = [pairs[i] for i in rng.permutation(len(pairs))]
        self._exposure.record(pairs)
        return pairs

    def stats(self) -> dict[str, float]:
        out = self._exposure.stats()
        out["queries_fetched"] = float(self.queries_fetched)
        return out
