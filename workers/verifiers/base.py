"""The verifier interface.

A verifier scores items in batches. ``granularity`` says what an item is:
- ``"pair"``: one (prompt, candidate) pair -> one float;
- ``"group"``: a whole candidate group (prompt, all N candidates) -> one float per candidate, for
  verifiers that need the siblings (self-consistency, embedding centrality).
Scores are raw (higher = more likely correct); NaN means "abstain". Heavy work runs in
``score_sync`` on a worker thread so the event loop never blocks; I/O-bound verifiers override the
async ``score`` instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from abc import ABC
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

Granularity = Literal["pair", "group"]
Score = float | list[float]  # a pair's score, or one score per candidate of a group


@dataclass(frozen=True)
class Scored:
    """A pair's score with a short note saying why (e.g. "killed: wall-clock timeout" from code_tests)."""

    value: float
    note: str | None = None


def stable_hash(value: Any) -> str:
    """A short content hash of JSON-serialisable data (stable across processes)."""
    payload = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:24]


@dataclass(frozen=True)
class PairItem:
    prompt: str
    candidate: str
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GroupItem:
    prompt: str
    candidates: tuple[str, ...]
    context: Mapping[str, Any] = field(default_factory=dict)


Item = PairItem | GroupItem


class Verifier(ABC):  # noqa: B024 - subclasses override score_sync or score
    """One configured verifier. Subclasses set the class attributes and implement one scoring method."""

    kind: ClassVar[str] = "verifier"  # the registered type name
    granularity: ClassVar[Granularity] = "pair"
    uses_context: ClassVar[bool] = False  # whether job.context changes the score (enters the cache key)
    default_max_batch_size: ClassVar[int] = 32
    default_max_wait_ms: ClassVar[float] = 2.0
    default_timeout_s: ClassVar[float] = 60.0
    default_max_concurrency: ClassVar[int] = 1  # batches in flight when the spec does not say
    # seconds per candidate before this worker has measured any (the verifier cascade orders stages by cost);
    # a rough figure for a CPU worker, replaced by the batcher's moving average after the first batch
    expected_cost_s: ClassVar[float] = 0.1

    def __init__(self, name: str, max_batch_size: int | None = None, max_wait_ms: float | None = None,
                 timeout_s: float | None = None) -> None:
        self.name = name
        self.max_batch_size = max_batch_size or self.default_max_batch_size
        self.max_wait_ms = self.default_max_wait_ms if max_wait_ms is None else max_wait_ms
        self.timeout_s = timeout_s or self.default_timeout_s

    @property
    def version(self) -> str:
        """Changes whenever scores could change (type, model, parameters): part of the cache key."""
        return f"{self.kind}-{stable_hash(self.version_params())[:10]}"

    def version_params(self) -> dict[str, Any]:
        return {}

    def load(self) -> None:
        """Load weights / connect (called once, on a worker thread, before scoring)."""

    async def aclose(self) -> None:
        """Release resources."""

    def context_key(self, context: Mapping[str, Any]) -> str:
        return stable_hash(dict(context)) if self.uses_context else ""

    def score_sync(self, items: Sequence[Item]) -> list[Score | Scored]:
        raise NotImplementedError(f"{type(self).__name__} implements neither score_sync nor score")

    async def score(self, items: Sequence[Item], executor: Executor | None = None) -> list[Score | Scored]:
        """Score a batch; the default runs ``score_sync`` on ``executor`` (off the event loop)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, self.score_sync, list(items))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "version": self.version, "granularity": self.granularity,
            "max_batch_size": self.max_batch_size, "max_wait_ms": self.max_wait_ms, "timeout_s": self.timeout_s,
        }
