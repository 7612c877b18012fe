"""App factory and lifespan: builds the queue (and in embedded mode the worker) once, owns their shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from service.api.chat.router import router as chat_router
from service.api.feedback.router import router as feedback_router
from service.api.feedback.wiring import build_online, observed
from service.api.rerank.router import router as rerank_router
from service.api.system.router import catalog_router, ops_router
from service.body_limit import BodySizeLimit
from service.docs_gate import DocsGate
from service.errors import install_error_handlers
from service.request_metrics import RequestMetrics
from service.security import KeyChecker, MemoryRateLimiter, RateLimiter, RedisRateLimiter
from service.settings import Settings, load_settings
from service.state import GatewayState
from service.unicode_guard import UnicodeGuard
from workers.queue.base import JobQueue
from workers.queue.memory import InProcessQueue
from workers.queue.redis_queue import RedisJobQueue

log = logging.getLogger(__name__)


async def build_state(
    settings: Settings, *, worker: Any = None, queue: JobQueue | None = None, background_load: bool = False
) -> GatewayState:
    """Embedded: a Worker behind an in-process queue. Distributed: a Redis Streams client.

    With ``background_load`` (``weaver serve``) an owned worker loads its models in the background, so the
    server binds its port at once: /healthz answers 200, /readyz 503 naming what is still loading, and chat
    requests get 503 until it is done. Without it the lifespan returns once the models are loaded.
    """
    owned_worker = None
    loading = None
    if queue is None:
        q = settings.queue
        if settings.redis_url:
            queue = RedisJobQueue(
                settings.redis_url, prefix=q.prefix, max_depth=q.max_depth, retry_after_s=q.retry_after_s
            )
        else:
            if worker is None:
                from workers.serve import build_worker

                worker = owned_worker = build_worker(settings.worker_config)
                loading = asyncio.create_task(worker.start(), name="weaver-load-models")
                if not background_load:
                    await loading
            queue = InProcessQueue(
                worker,
                max_depth=q.max_depth,
                concurrency=q.concurrency,
                retry_after_s=q.retry_after_s,
                shutdown_grace_s=q.shutdown_grace_s,
            )
    online = build_online(settings.online, settings.redis_url, settings.queue.prefix, worker)
    queue = observed(queue, online)
    await queue.start()
    limiter: RateLimiter | None = None
    if settings.rate_limit_per_minute:
        if settings.redis_url:
            limiter = RedisRateLimiter(settings.rate_limit_per_minute, settings.redis_url, settings.queue.prefix)
        else:
            limiter = MemoryRateLimiter(settings.rate_limit_per_minute)
    return GatewayState(
        settings=settings,
        queue=queue,
        keys=KeyChecker(settings.resolved_api_keys()),
        rate_limiter=limiter,
        worker=owned_worker,
        online=online,
        loading=loading,
    )


async def close_state(state: GatewayState) -> None:
    """Stop taking jobs, let in-flight ones finish (grace period), then release the worker and connections."""
    if state.loading is not None and not state.loading.done():
        state.loading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await state.loading
    await state.queue.close()
    if state.rate_limiter is not None:
        await state.rate_limiter.close()
    if state.worker is not None:
        await state.worker.close()
    if state.online is not None:
        state.online.close()


def create_app(
    settings: Settings | None = None,
    *,
    worker: Any = None,
    queue: JobQueue | None = None,
    background_load: bool = False,
) -> FastAPI:
    """The ASGI app. ``worker``/``queue`` let tests and benchmarks inject their own; by default the
    lifespan builds them from ``settings`` (embedded unless ``redis_url`` is set). ``background_load``:
    see ``build_state``."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.gateway = await build_state(settings, worker=worker, queue=queue, background_load=background_load)
        log.info("weaver gateway ready (%s mode)", settings.mode)
        try:
            yield
        finally:
            await close_state(app.state.gateway)

    app = FastAPI(
        title="weaver-rerank",
        version="0.1.0",
        summary="Verified completions: sample N candidates, score them with weak verifiers, return the best.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    for router in (chat_router, rerank_router, catalog_router, ops_router, feedback_router):
        app.include_router(router)
    app.add_middleware(RequestMetrics)
    app.add_middleware(UnicodeGuard)  # inside BodySizeLimit: it only ever buffers an accepted body
    app.add_middleware(DocsGate)
    app.add_middleware(BodySizeLimit, max_bytes=settings.limits.max_body_bytes)
    return app
