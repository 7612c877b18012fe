"""Catalogue (/v1/models, /v1/verifiers) and operations (/healthz, /readyz, /metrics) endpoints."""

from __future__ import annotations

import contextlib
import time

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse

from service.api.system import service
from service.api.system.protocol import Health, ModelCard, ModelList, Readiness, VerifierList
from service.deps import StateDep, require_api_key, require_ops_key
from service.errors import ERROR_RESPONSES, NOT_FOUND
from service.metrics import observe_capacity, observe_queue, observe_workers, render_metrics
from workers.queue.errors import QueueUnavailable

catalog_router = APIRouter(prefix="/v1", tags=["catalog"], dependencies=[Depends(require_api_key)])
ops_router = APIRouter(tags=["operations"], dependencies=[Depends(require_ops_key)])
STARTED = int(time.time())


@catalog_router.get("/models", response_model=ModelList, responses=ERROR_RESPONSES)
async def list_models(state: StateDep) -> ModelList:
    """The served ensemble name (use it as ``model``) and the generator model(s) behind it."""
    return await service.models(state, STARTED)


@catalog_router.get(
    "/models/{model_id:path}", response_model=ModelCard, responses={**ERROR_RESPONSES, 404: NOT_FOUND}
)
async def retrieve_model(model_id: str, state: StateDep) -> ModelCard:
    """One model by id (``openai`` client's ``models.retrieve``); 404 ``model_not_found`` when not served."""
    return await service.model(state, model_id, STARTED)


@catalog_router.get("/verifiers", response_model=VerifierList, responses=ERROR_RESPONSES)
async def list_verifiers(state: StateDep) -> VerifierList:
    """Loaded verifiers with their configuration and counters, and the named profiles."""
    return await service.verifiers(state)


@ops_router.get("/healthz", response_model=Health)
async def healthz(state: StateDep) -> Health:
    """Liveness: the process answers."""
    return Health(mode=state.settings.mode)


@ops_router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(state: StateDep) -> Response:
    """Readiness: models loaded and queue reachable; ``not_ready`` names what is missing (503)."""
    body = await service.readiness(state)
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@ops_router.get("/metrics", response_class=Response)
async def metrics(state: StateDep) -> Response:
    """Prometheus exposition (queue gauges are refreshed on every scrape)."""
    with contextlib.suppress(QueueUnavailable):
        stats = await state.queue.stats()
        observe_queue(stats)
        observe_capacity(stats, state.settings.queue.concurrency)
    observe_workers(await state.queue.catalog())
    payload, content_type = render_metrics()
    return Response(payload, media_type=content_type)
