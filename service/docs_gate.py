"""The API documentation pages behind the API key: an ASGI gate in front of FastAPI's docs routes."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from service.deps import authenticate_headers
from service.errors import APIError, error_response

DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


class DocsGate:
    """``/docs``, ``/redoc`` and ``/openapi.json`` need an API key when keys are configured (unless
    ``public_docs``): the schema lists every endpoint and field, which is reconnaissance for free."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") in DOCS_PATHS:
            state = getattr(scope["app"].state, "gateway", None)
            if state is not None and state.keys.enabled and not state.settings.public_docs:
                try:
                    authenticate_headers(state, scope)
                except APIError as error:
                    await error_response(error)(scope, receive, send)
                    return
        await self.app(scope, receive, send)
