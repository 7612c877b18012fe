"""A sequence-classification reward model served by an in-process vLLM engine (``AsyncLLM``, pooling runner).

Why not transformers: vLLM batches by itself (continuous batching over packed, unpadded sequences, paged
KV memory), so the worker's dynamic batcher only hands items over, several batches in flight at once,
and the engine takes a stated share of the accelerator's memory beside the generator (``gpu_memory_utilization``,
checked against the worker's ``gpu_memory_budget`` at start). Pairs are tokenized here exactly as the
transformers ``reward_model`` verifier does (chat template when the tokenizer has one, else a text pair),
so both give the same raw head output for the same checkpoint. Needs the optional extra ``.[vllm]``.
The engine core runs in a child process: scripts that start it must sit under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

from workers.model_paths import pretrained_dir
from workers.verifiers.base import Item, PairItem, Score, Scored, Verifier
from workers.verifiers.vllm_engine import EngineHandle, engine_options, score_pairs


class VLLMRewardVerifier(Verifier):
    kind = "vllm_reward"
    default_max_batch_size = 256  # the engine batches; ours only hands over what is queued
    default_max_wait_ms = 1.0
    default_timeout_s = 120.0
    default_max_concurrency = 8  # batches in flight: the engine interleaves them (continuous batching)

    def __init__(self, name: str, model: str, dtype: str = "auto", max_length: int = 1024, label_index: int = 0,
                 use_chat_template: bool = True, activation: bool = False,
                 gpu_memory_utilization: float | None = None, max_model_len: int | None = None,
                 enforce_eager: bool = False, max_num_seqs: int | None = None, kv_cache_memory_mb: int | None = None,
                 engine_args: dict[str, Any] | None = None, **batching: Any) -> None:
        super().__init__(name, **batching)
        self.model_path, self.dtype, self.max_length, self.label_index = model, dtype, max_length, label_index
        self.use_chat_template, self.activation = use_chat_template, activation
        self.gpu_memory_utilization = gpu_memory_utilization
        self.handle = EngineHandle(self.kind, name, "pooling", engine_options(
            dtype, enforce_eager, max_model_len, gpu_memory_utilization, max_num_seqs, kv_cache_memory_mb,
            engine_args))
        self._tokenizer: Any = None

    def version_params(self) -> dict[str, object]:
        return {"model": self.model_path, "dtype": self.dtype, "max_length": self.max_length,
                "label_index": self.label_index, "chat": self.use_chat_template, "activation": self.activation}

    def load(self) -> None:
        from transformers import AutoTokenizer

        directory = pretrained_dir(self.model_path)
        self._tokenizer = AutoTokenizer.from_pretrained(directory)
        engine = self.handle.start(str(directory))
        supported = set(getattr(engine.model_config, "supported_tasks", None) or ("classify",))
        if "classify" not in supported:
            self.handle.shutdown()
            raise ValueError(f"{self.model_path} has no classification head vLLM can pool (tasks: {sorted(supported)})")
        self.max_length = min(self.max_length, int(engine.model_config.max_model_len))

    def ready(self) -> bool:
        return self.handle.ready()

    def token_ids(self, item: PairItem) -> list[int]:
        """The model input for one pair, truncated to ``max_length`` (same rules as ``reward_model``)."""
        tokenizer = self._tokenizer
        if self.use_chat_template and getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": item.prompt}, {"role": "assistant", "content": item.candidate}],
                tokenize=False)
            return list(tokenizer(text, truncation=True, max_length=self.max_length,
                                  add_special_tokens=False)["input_ids"])
        return list(tokenizer(item.prompt, item.candidate, truncation="longest_first",
                              max_length=self.max_length)["input_ids"])

    async def score(self, items: Sequence[Item], executor: Executor | None = None) -> list[Score | Scored]:
        return list(await score_pairs(self.handle, self.load, items, executor, self.token_ids, self._classify))

    async def _classify(self, ids: list[int]) -> float:
        from vllm.pooling_params import PoolingParams

        params = PoolingParams(task="classify", use_activation=self.activation)
        final = None
        async for output in self.handle.engine.encode({"prompt_token_ids": ids}, params, uuid.uuid4().hex):
            final = output
        if final is None:
            raise RuntimeError("vLLM finished the request without an output")
        values = final.outputs.data.flatten().tolist()
        return float(values[self.label_index])

    def pending_requests(self) -> int:
        return self.handle.pending_requests()

    async def aclose(self) -> None:
        await self.handle.close()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "gpu_memory_utilization": self.gpu_memory_utilization,
                "engine_start_s": self.handle.start_seconds}
