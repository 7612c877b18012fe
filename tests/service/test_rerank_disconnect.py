"""A rerank client that closes its connection cancels its job, on every rerank face, and is logged as 499.

Driven through the ASGI app as a server would call it: the body, then (a moment later) ``http.disconnect``.
The worker is the small fake with a long delay, so "cancelled" means its running task was cancelled.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from service.app import create_app
from service.settings import Settings
from tests.service.gateway_fakes import RecordingWorker, cancelled_count
from workers.online.settings import OnlineSettings

FACES = {
    "/v1/rerank": {"model": "weaver", "query": "q", "documents": ["a", "bb", "ccc"]},
    "/v2/rerank": {"model": "weaver", "query": "q", "documents": ["a", "bb", "ccc"]},
    "/rerank (TEI)": {"query": "q", "texts": ["a", "bb", "ccc"]},
    "/rerank (Infinity)": {"query": "q", "documents": ["a", "bb", "ccc"]},
}


async def post_then_disconnect(app: Any, path: str, body: dict[str, Any], after_s: float) -> list[dict[str, Any]]:
    """POST ``body``, close the connection ``after_s`` later; returns the messages the app sent."""
    raw = json.dumps(body).encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000), "state": {},
    }  # fmt: skip
    delivered = False
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await asyncio.sleep(after_s)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize("face", list(FACES))
async def test_a_rerank_client_that_disconnects_cancels_its_job(face: str) -> None:
    worker = RecordingWorker(delay_s=60.0)
    app = create_app(Settings(online=OnlineSettings(enabled=False)), worker=worker)
    path = face.split()[0]
    async with app.router.lifespan_context(app):
        before = cancelled_count("disconnect")
        started = time.perf_counter()
        sent = await asyncio.wait_for(post_then_disconnect(app, path, FACES[face], after_s=0.3), timeout=10)
        elapsed = time.perf_counter() - started
        assert len(worker.runs) == 1, "the job never reached the worker"
        assert worker.cancelled == worker.runs  # its running task was cancelled, not left to finish
        assert cancelled_count("disconnect") == before + 1
        assert elapsed < 5  # returned at the disconnect, not after the worker's 60 s
        statuses = [m["status"] for m in sent if m["type"] == "http.response.start"]
        assert statuses in ([], [499])  # nobody is listening; nothing else is sent
