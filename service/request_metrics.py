"""Count and time every API request by endpoint, status and aggregator (pure ASGI, no body buffering)."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import observe_request

ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/v1/rerank": "rerank",
    "/v1/models": "models",
    "/v1/verifiers": "verifiers",
}


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = ENDPOINTS.get(scope.get("path", "")) if scope["type"] == "http" else None
        if endpoint is None:  # ops endpoints and unknown paths are not counted (bounded label values)
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            aggregator = str(scope.get("state", {}).get("aggregator", ""))
            observe_request(endpoint, status, aggregator, time.perf_counter() - started)
