"""Generation backends: vLLM (GPU default, optional extra), transformers (CPU default), OpenAI-compatible.

``build_backend(config)`` turns the worker config's ``generation:`` block into a backend; each backend
module is imported only when chosen, so the vllm extra stays optional.
"""

from __future__ import annotations

from typing import Any

from workers.generation.base import GeneratedCandidate, GenerationBackend, GenerationOutput
from workers.generation.errors import BackendUnavailableError, GenerationError, PromptTooLongError

BACKENDS = ("transformers", "vllm", "openai")

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "GeneratedCandidate",
    "GenerationBackend",
    "GenerationError",
    "GenerationOutput",
    "PromptTooLongError",
    "build_backend",
]


def build_backend(config: dict[str, Any]) -> GenerationBackend:
    """Build (not start) the backend named by ``config["backend"]`` (default ``transformers``).

    The rest of the dict is that backend's settings (a pydantic model; unknown keys are rejected).
    """
    config = dict(config or {})
    kind = config.setdefault("backend", "transformers")
    if kind == "transformers":
        from workers.generation.transformers_backend import TransformersBackend, TransformersSettings

        return TransformersBackend(TransformersSettings.model_validate(config))
    if kind == "vllm":
        from workers.generation.vllm_backend import VLLMBackend, VLLMSettings

        return VLLMBackend(VLLMSettings.model_validate(config))
    if kind == "openai":
        from workers.generation.openai_backend import OpenAIBackend, OpenAISettings

        return OpenAIBackend(OpenAISettings.model_validate(config))
    raise ValueError(f"unknown generation backend {kind!r}; expected one of {', '.join(BACKENDS)}")
