"""The generation-backend interface: a chat prompt in, exactly N candidates out (or a reason why not)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from workers.contract import ChatMessage, SamplingParams


@dataclass(frozen=True)
class GeneratedCandidate:
    text: str
    finish_reason: str | None = None  # "stop" | "length" | ...
    completion_tokens: int = 0


@dataclass(frozen=True)
class GenerationOutput:
    candidates: list[GeneratedCandidate]
    requested: int
    prompt_tokens: int = 0
    reason: str | None = None  # set whenever len(candidates) != requested
    extras: dict[str, object] = field(default_factory=dict)

    @property
    def returned(self) -> int:
        return len(self.candidates)


class GenerationBackend(ABC):
    """One loaded generator. ``generate`` samples n candidates for one chat prompt."""

    name: str = "base"
    model: str = ""

    async def start(self) -> None:
        """Load weights / connect. Called once before the first ``generate``."""

    async def close(self) -> None:
        """Release resources."""

    def ready(self) -> bool:
        return True

    @abstractmethod
    async def generate(self, messages: list[ChatMessage], n: int, sampling: SamplingParams) -> GenerationOutput: ...


def replicate_greedy(single: GenerationOutput, n: int) -> GenerationOutput:
    """N greedy samples are one sample N times: backends decode once and copy (vLLM rejects n > 1 greedy)."""
    return GenerationOutput(candidates=list(single.candidates) * n, requested=n, prompt_tokens=single.prompt_tokens,
                            reason=single.reason, extras={**single.extras, "greedy_copies": n})
