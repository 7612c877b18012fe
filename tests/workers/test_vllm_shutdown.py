"""``shutdown_async_llm`` cancels the engine's output-handler task before it shuts the engine down: the order that
keeps vLLM from logging a dead engine on a clean shutdown. With vLLM's own order that log is a race (seen once in
a ``bench/vllm_reward.py`` run, not reproducible on demand), so the order is checked here on a stand-in with the
two attributes the helper touches; tests/workers/generation/test_vllm_backend.py closes a real engine and checks
that nothing is logged at ERROR."""

from __future__ import annotations

import asyncio
import threading

from workers.vllm_shutdown import shutdown_async_llm


class _Engine:
    """The two attributes of ``AsyncLLM`` the helper touches: its handler task and a blocking ``shutdown``."""

    def __init__(self) -> None:
        self.dead = asyncio.Event()
        self.handler_saw_dead_engine = False
        self.output_handler = asyncio.get_running_loop().create_task(self._handle())
        self.shutdown_thread: threading.Thread | None = None
        self.handler_done_at_shutdown: bool | None = None

    async def _handle(self) -> None:
        await self.dead.wait()
        self.handler_saw_dead_engine = True  # in vLLM: EngineDeadError, logged at ERROR

    def shutdown(self) -> None:
        self.shutdown_thread = threading.current_thread()
        self.handler_done_at_shutdown = self.output_handler.done()
        self.output_handler.get_loop().call_soon_threadsafe(self.dead.set)


async def test_the_handler_is_cancelled_before_the_engine_shuts_down() -> None:
    engine = _Engine()
    await asyncio.sleep(0)  # the handler is waiting on the engine
    await shutdown_async_llm(engine)
    assert engine.handler_done_at_shutdown and engine.output_handler.cancelled()
    assert not engine.handler_saw_dead_engine
    assert engine.shutdown_thread is not threading.main_thread()  # blocking shutdown ran off the loop


async def test_an_engine_without_a_running_handler_is_just_shut_down() -> None:
    engine = _Engine()
    engine.output_handler.cancel()
    await asyncio.sleep(0)
    await shutdown_async_llm(engine)
    assert engine.shutdown_thread is not None
