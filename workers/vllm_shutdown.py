"""Closing an in-process vLLM ``AsyncLLM`` quietly, for the generation backend and the engine-backed verifiers.

vLLM 0.32's ``AsyncLLM.shutdown`` stops the engine core before it cancels its output-handler task; the handler,
still awaiting the engine, may then fail on the dead engine before the cancellation reaches it, and vLLM logs
"AsyncLLM output_handler failed" with an ``EngineDeadError`` traceback at ERROR level on a clean shutdown (a race:
seen in a ``bench/vllm_reward.py`` run on 2026-11-30). Cancelling the handler first (it is a task
on the loop that served the engine) leaves nothing to fail; ``shutdown`` then runs off the loop, since it waits
for the engine core's process to exit.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def shutdown_async_llm(engine: Any) -> None:
    handler = getattr(engine, "output_handler", None)
    if isinstance(handler, asyncio.Task) and not handler.done() and handler.get_loop() is asyncio.get_running_loop():
        handler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await handler
    await asyncio.to_thread(engine.shutdown)
