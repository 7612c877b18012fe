"""The model ids the service answers to, shared by chat, rerank and ``/v1/models`` so all three agree."""

from __future__ import annotations

from service.errors import APIError
from service.state import GatewayState


async def served_models(state: GatewayState) -> list[str]:
    """The ensemble name first (what ``model`` should say), then the generator model(s) behind it."""
    names = [state.settings.served_model_name]
    names += [m for m in (await state.queue.catalog()).models if m not in names]
    return names


def model_not_found(model: str, served: list[str]) -> APIError:
    return APIError(
        404,
        f"model {model!r} not found; available: {', '.join(served)}",
        type="not_found_error",
        param="model",
        code="model_not_found",
    )


async def check_model(model: str | None, state: GatewayState) -> str:
    """The model id to echo: the one asked for when it is served (404 otherwise), else the ensemble name."""
    served = await served_models(state)
    if model is None:
        return served[0]
    if model not in served:
        raise model_not_found(model, served)
    return model
