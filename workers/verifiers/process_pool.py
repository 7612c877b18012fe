"""Pure-Python verifiers scored in child processes, so CPU-heavy checks never hold the serving interpreter.

A thread cannot be stopped and holds the GIL while it computes: one adversarial document used to stall
``/healthz`` and every other request, and the verifier's timeout fired only when the work ended. Here the
batch runs in a pebble process pool (spawned, not forked: the worker is multi-threaded); awaiting it costs
the event loop nothing, and a timeout or a cancellation terminates the child running it, so the timeout
holds to the pool's scheduling precision and the next batch starts on a fresh process.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

from pebble import ProcessPool

from workers.verifiers.base import Item, Score, Scored, Verifier


def _score_in_child(verifier: Verifier, items: list[Item]) -> list[Score | Scored]:
    return verifier.score_sync(items)


class ProcessPoolVerifier(Verifier):
    """A verifier whose ``score_sync`` runs in a child process (``processes`` of them, default 1)."""

    def __init__(self, name: str, processes: int = 1, **batching: Any) -> None:
        super().__init__(name, **batching)
        self.processes = processes
        self._pool: ProcessPool | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_pool"] = None  # the child gets the configuration, never the pool
        return state

    def load(self) -> None:
        """Start the pool and import the verifier in it once, so the first request does not pay for that."""
        self._pool = ProcessPool(max_workers=self.processes, context=multiprocessing.get_context("spawn"))
        self._pool.schedule(_score_in_child, args=(self, [])).result(timeout=120)

    async def score(self, items: Sequence[Item], executor: Executor | None = None) -> list[Score | Scored]:
        if self._pool is None:  # not loaded (direct use in scripts): start the pool now
            await asyncio.to_thread(self.load)
        assert self._pool is not None
        # the pool's own timeout is a backstop; the batcher's asyncio timeout cancels first and that kills too
        future = self._pool.schedule(_score_in_child, args=(self, list(items)), timeout=self.timeout_s * 1.5)
        return await asyncio.wrap_future(future)

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            await asyncio.to_thread(self._pool.join, 10)
            self._pool = None
