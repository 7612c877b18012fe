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

import math
import uuid
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

from workers.model_paths import pretrained_dir
from workers.verifiers.base import Item, PairItem, Score, Scored
from workers.verifiers.lm_judge import LMJudgeVerifier
from workers.verifiers.vllm_engine import EngineHandle, engine_options, score_pairs


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
        self.gpu_memory_utilization = gpu_memory_utilization
        options = engine_options(dtype, enforce_eager, max_model_len, gpu_memory_utilization, max_num_seqs,
                                 kv_cache_memory_mb, engine_args)
        self.handle = EngineHandle(self.kind, name, "generate", {"enable_prefix_caching": enable_prefix_caching,
                                                                  **options})

    def version_params(self) -> dict[str, object]:
        return {**super().version_params(), "backend": "vllm"}

    def load(self) -> None:
        from transformers import AutoTokenizer

        directory = pretrained_dir(self.model_path)
        self._tokenizer = AutoTokenizer.from_pretrained(directory)
        self._tokenizer.truncation_side = "left"  # keep the question at the end of the prompt
        self._yes_ids = self._first_token_ids(self.yes_tokens)
        self._no_ids = self._first_token_ids(self.no_tokens)
        if not self._yes_ids or not self._no_ids or set(self._yes_ids) & set(self._no_ids):
            raise ValueError(f"yes/no tokens are ambiguous for this tokenizer: {self._yes_ids} vs {self._no_ids}")
        engine = self.handle.start(str(directory))
        self.max_length = min(self.max_length, int(engine.model_config.max_model_len) - 1)

    def ready(self) -> bool:
        return self.handle.ready()

    def token_ids(self, item: PairItem) -> list[int]:
        """The judge prompt for one pair, cut from the left to ``max_length`` (the question stays)."""
        return list(self._tokenizer(self._render(item), add_special_tokens=False, truncation=True,
                                    max_length=self.max_length)["input_ids"])

    async def score(self, items: Sequence[Item], executor: Executor | None = None) -> list[Score | Scored]:
        return list(await score_pairs(self.handle, self.load, items, executor, self.token_ids, self._judge))

    async def _judge(self, ids: list[int]) -> float:
        from vllm.sampling_params import RequestOutputKind, SamplingParams

        params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=self._yes_ids + self._no_ids,
                                output_kind=RequestOutputKind.FINAL_ONLY)
        final = None
        async for output in self.handle.engine.generate({"prompt_token_ids": ids}, params, uuid.uuid4().hex):
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
        return self.handle.pending_requests()

    async def aclose(self) -> None:
        await self.handle.close()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "gpu_memory_utilization": self.gpu_memory_utilization,
                "engine_start_s": self.handle.start_seconds}
