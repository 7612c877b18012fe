"""The yes/no LM judge on an in-process vLLM engine: P(yes)/(P(yes)+P(no)) from one decoded token.

Same prompt, same yes/no spellings and same score as ``lm_judge`` (whose rendering it inherits), but the
forward passes run on vLLM: one request per candidate, ``max_tokens=1``, with the log-probabilities of
exactly the yes/no token ids requested (``logprob_token_ids``: taken from the full next-token
distribution, so the score does not depend on whether "Yes" made a top-k list). Prefix caching is on: the
system prompt and the problem come before the candidate, so a query's candidates reuse the KV blocks of
their shared prefix, the role the transformers judge's explicit KV-cache sharing plays. The engine has its
own memory share (``gpu_memory_utilization``), checked against the worker's budget like ``vllm_reward``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import math
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

from workers.model_paths import pretrained_dir
from workers.verifiers.base import Item, PairItem, Score, Scored
from workers.verifiers.lm_judge import LMJudgeVerifier

log = logging.getLogger(__name__)


class VLLMJudgeVerifier(LMJudgeVerifier):
    kind = "vllm_judge"
    default_max_batch_size = 256
    default_max_wait_ms = 1.0
    default_timeout_s = 120.0
    default_max_concurrency = 8

    def __init__(self, name: str, model: str, dtype: str = "auto", max_length: int = 4096,
                 gpu_memory_utilization: float | None = None, max_model_len: int | None = None,
                 enforce_eager: bool = False, max_num_seqs: int | None = None, kv_cache_memory_mb: int | None = None,
                 enable_prefix_caching: bool = True, engine_args: dict[str, Any] | None = None,
                 **judge: Any) -> None:
        super().__init__(name, model=model, dtype=dtype, max_length=max_length, **judge)
        if gpu_memory_utilization is not None and not 0.0 < gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        self.gpu_memory_utilization = gpu_memory_utilization
        kv_bytes = None if kv_cache_memory_mb is None else kv_cache_memory_mb * 2**20
        self._options: dict[str, Any] = {"dtype": dtype, "enforce_eager": enforce_eager,
                                         "enable_prefix_caching": enable_prefix_caching}
        for key, value in (("max_model_len", max_model_len), ("gpu_memory_utilization", gpu_memory_utilization),
                           ("max_num_seqs", max_num_seqs), ("kv_cache_memory_bytes", kv_bytes)):
            if value is not None:
                self._options[key] = value
        self._options.update(engine_args or {})
        self._engine: Any = None
        self._loading = asyncio.Lock()
        self.start_seconds: float | None = None

    def version_params(self) -> dict[str, object]:
        return {**super().version_params(), "backend": "vllm"}

    def load(self) -> None:
        if importlib.util.find_spec("vllm") is None:
            raise RuntimeError("the vllm_judge verifier needs the vllm extra: pip install '.[vllm]'")
        from transformers import AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        started = time.perf_counter()
        directory = pretrained_dir(self.model_path)
        self._tokenizer = AutoTokenizer.from_pretrained(directory)
        self._tokenizer.truncation_side = "left"  # keep the question at the end of the prompt
        self._yes_ids = self._first_token_ids(self.yes_tokens)
        self._no_ids = self._first_token_ids(self.no_tokens)
        if not self._yes_ids or not self._no_ids or set(self._yes_ids) & set(self._no_ids):
            raise ValueError(f"yes/no tokens are ambiguous for this tokenizer: {self._yes_ids} vs {self._no_ids}")
        options = {"model": str(directory), "runner": "generate", "disable_log_stats": True, **self._options}
        self._engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**options))
        self.max_length = min(self.max_length, int(self._engine.model_config.max_model_len) - 1)
        self.start_seconds = time.perf_counter() - started
        log.info("vllm_judge %s: %s ready in %.1f s", self.name, directory, self.start_seconds)

    def ready(self) -> bool:
        return self._engine is not None and not self._engine.errored

    def token_ids(self, item: PairItem) -> list[int]:
        """The judge prompt for one pair, cut from the left to ``max_length`` (the question stays)."""
        return list(self._tokenizer(self._render(item), add_special_tokens=False, truncation=True,
                                    max_length=self.max_length)["input_ids"])

    def _encode_all(self, pairs: Sequence[PairItem]) -> list[list[int]]:
        return [self.token_ids(pair) for pair in pairs]

    async def score(self, items: Sequence[Item], executor: Executor | None = None) -> list[Score | Scored]:
        if self._engine is None:  # offline scoring loads lazily, on the first cache miss
            async with self._loading:
                if self._engine is None:
                    await asyncio.to_thread(self.load)
        pairs = [item for item in items if isinstance(item, PairItem)]
        inputs = await asyncio.get_running_loop().run_in_executor(executor, self._encode_all, pairs)
        async with asyncio.TaskGroup() as group:  # cancelling the batch aborts every request in the engine
            tasks = [group.create_task(self._judge(ids)) for ids in inputs]
        return [task.result() for task in tasks]

    async def _judge(self, ids: list[int]) -> float:
        from vllm.sampling_params import RequestOutputKind, SamplingParams

        params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=self._yes_ids + self._no_ids,
                                output_kind=RequestOutputKind.FINAL_ONLY)
        final = None
        async for output in self._engine.generate({"prompt_token_ids": ids}, params, uuid.uuid4().hex):
            final = output
        if final is None or not final.outputs or not final.outputs[0].logprobs:
            raise RuntimeError("vLLM returned no logprobs for the judge token")
        logprobs = final.outputs[0].logprobs[0]  # token id -> Logprob, for the requested ids (+ the sampled one)
        p_yes = sum(math.exp(logprobs[t].logprob) for t in self._yes_ids if t in logprobs)
        p_no = sum(math.exp(logprobs[t].logprob) for t in self._no_ids if t in logprobs)
        if p_yes + p_no <= 0:
            return math.nan
        return p_yes / (p_yes + p_no)

    def pending_requests(self) -> int:
        return 0 if self._engine is None else int(self._engine.get_num_unfinished_requests())

    async def aclose(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await asyncio.to_thread(engine.shutdown)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "gpu_memory_utilization": self.gpu_memory_utilization,
                "engine_start_s": self.start_seconds}
