"""Readiness and catalogue logic behind the system endpoints."""

from __future__ import annotations

from service.api.model_names import model_not_found, served_models
from service.api.system.protocol import ModelCard, ModelList, Readiness, VerifierList
from service.state import GatewayState
from workers.queue.errors import QueueUnavailable


async def readiness(state: GatewayState) -> Readiness:
    """Ready = queue reachable and a worker with its models loaded; ``not_ready`` names what is missing."""
    not_ready: dict[str, str] = {}
    depth = None
    workers = 0
    try:
        await state.queue.ping()
        stats = await state.queue.stats()
        depth, workers = stats.depth, stats.workers
    except QueueUnavailable as exc:
        not_ready["queue"] = str(exc)
    if not not_ready:
        catalog = await state.queue.catalog()
        if not catalog.ready:
            not_ready.update(catalog.errors or {"worker": "not ready"})
    return Readiness(
        ready=not not_ready, mode=state.settings.mode, not_ready=not_ready, workers=workers, queue_depth=depth
    )


async def models(state: GatewayState, created: int) -> ModelList:
    return ModelList(data=[ModelCard(id=name, created=created) for name in await served_models(state)])


async def model(state: GatewayState, model_id: str, created: int) -> ModelCard:
    """One served model, or 404 ``model_not_found`` in the OpenAI error shape."""
    served = await served_models(state)
    if model_id not in served:
        raise model_not_found(model_id, served)
    return ModelCard(id=model_id, created=created)


async def verifiers(state: GatewayState) -> VerifierList:
    catalog = await state.queue.catalog()
    return VerifierList(data=catalog.verifiers, profiles=catalog.profiles)
