"""Submitting a job on behalf of an HTTP request: it lives only while the client is connected.

The request's task waits for the job's result while a watcher waits for the client to go away. A
disconnect (or the server's shutdown cancelling the request) cancels the wait with its reason; the queue
then cancels the job unless another request (same Idempotency-Key) still waits for it.
"""

from __future__ import annotations

import asyncio
import hashlib

from fastapi import Request

from service.errors import APIError, invalid
from service.security import bearer_token, key_id
from workers.contract import Job, JobResult
from workers.queue.base import JobQueue
from workers.queue.errors import IdempotencyMismatch

IDEMPOTENCY_HEADER = "idempotency-key"
MAX_IDEMPOTENCY_KEY_CHARS = 255


class ClientDisconnected(APIError):
    """The client closed the connection before its answer was ready (logged as 499, as nginx does)."""

    def __init__(self) -> None:
        super().__init__(499, "client closed the request", type="client_disconnected", code="client_disconnected")


async def wait_for_disconnect(request: Request) -> None:
    """Return once the client has gone (the body is already read, so the next ASGI message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def submit_while_connected(queue: JobQueue, job: Job, request: Request) -> JobResult:
    """``queue.submit(job)`` in the request's own task, cancelled (reason ``disconnect``) as soon as the
    client disconnects. One watcher task reads the connection; the job itself needs no hand-off (the
    in-process queue runs it right here when a slot is free)."""
    current = asyncio.current_task()
    assert current is not None
    disconnected = False

    async def watch() -> None:
        nonlocal disconnected
        await wait_for_disconnect(request)
        disconnected = True
        current.cancel("disconnect")

    watcher = asyncio.ensure_future(watch())
    try:
        return await queue.submit(job)
    except IdempotencyMismatch as exc:
        raise APIError(422, str(exc), param="Idempotency-Key", code="idempotency_key_reused") from None
    except asyncio.CancelledError:
        if disconnected and current.uncancel() == 0:  # our own cancellation, not the server's
            raise ClientDisconnected() from None
        raise
    finally:
        watcher.cancel()


def apply_idempotency_key(job: Job, request: Request, endpoint: str) -> None:
    """With an ``Idempotency-Key`` header, the job id is derived from (API key, endpoint, key), so a retry of
    the same request attaches to the job already running (or replays its result) instead of starting another.
    The fingerprint of the job's content catches a key reused for a different request."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_CHARS or not key.isprintable():
        raise invalid(
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable characters", "Idempotency-Key"
        )
    owner = key_id(bearer_token(request.headers.get("authorization"), request.headers.get("x-api-key")))
    job.id = hashlib.sha256(f"{owner}\n{endpoint}\n{key}".encode()).hexdigest()[:32]
    content = job.model_dump_json(exclude={"id", "deadline", "enqueued_at", "fingerprint"})
    job.fingerprint = hashlib.sha256(content.encode()).hexdigest()


async def require_loaded(request: Request) -> None:
    """503 with Retry-After while the embedded worker is still loading its models (the port is open at once)."""
    state = request.app.state.gateway
    if state.loading is not None and not state.loading.done():
        errors = state.worker.readiness_errors() if state.worker is not None else {}
        still = ", ".join(k for k, v in errors.items() if v == "loading") or "models"
        raise APIError(
            503,
            f"the service is starting: still loading {still}; retry shortly (GET /readyz says when it is ready)",
            type="service_unavailable",
            code="model_loading",
            headers={"Retry-After": "5"},
        )
