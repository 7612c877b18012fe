"""Build and run a worker process: load the Worker from its YAML, consume the Redis queue, stop on SIGTERM.

No FastAPI here: ``weaver worker`` runs this without the web stack.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

from workers.cancellation import SHUTDOWN
from workers.queue.redis_worker import RedisWorkerLoop

log = logging.getLogger(__name__)


def load_worker_config(path: Path | None) -> Any:
    """The worker config from ``path`` (default: the embedded CPU set in workers/default_config.yaml).

    A ``pkg://`` generator model path is resolved here, as the verifiers resolve theirs, because the
    generation backends take filesystem paths.
    """
    from workers.config import WorkerConfig
    from workers.model_paths import resolve_model_path

    config = WorkerConfig.default() if path is None else WorkerConfig.from_yaml(path)
    model = (config.generation or {}).get("model")
    if isinstance(model, str):
        config.generation = {**(config.generation or {}), "model": resolve_model_path(model)}
    return config


def build_worker(config_path: Path | None) -> Any:
    """A ``workers.entry.Worker`` from its YAML, not started (nothing loaded yet)."""
    from workers.entry import Worker

    return Worker.from_config(load_worker_config(config_path))


async def start_worker(config_path: Path | None) -> Any:
    """A started ``workers.entry.Worker`` (models loaded; readiness errors are reported, not raised)."""
    worker = build_worker(config_path)
    await worker.start()
    if not worker.ready():
        log.warning("worker not ready: %s", worker.readiness_errors())
    return worker


async def run_redis_worker(
    redis_url: str, config_path: Path | None = None, *, worker: Any = None, online: Any = None, **loop_options: Any
) -> int:
    """Consume jobs until SIGTERM/SIGINT; then finish or hand back in-flight jobs. Returns jobs processed."""
    owned = worker is None
    if worker is None:
        worker = await start_worker(config_path)
    from workers.online.follow import attach_worker

    follower = attach_worker(worker, redis_url, loop_options.get("prefix", "weaver"), online)
    loop = RedisWorkerLoop(worker, redis_url, **loop_options)
    running = asyncio.get_running_loop()

    def stop() -> None:
        SHUTDOWN.started = True
        loop.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(sig, stop)
    log.info("worker %s consuming %s", loop.name, loop.keys.stream)
    try:
        await loop.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            running.remove_signal_handler(sig)
        if follower is not None:
            follower.close()
        if owned:
            await worker.close()
    return loop.processed
