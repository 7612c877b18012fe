"""Helpers for gateway tests: run an app (lifespan included) behind an in-memory httpx client."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import redis.asyncio as aioredis

from service.app import create_app
from service.settings import Settings
from tests.support import REDIS_URL, free_port, redis_or_skip

__all__ = ["REDIS_URL", "app_client", "assert_error", "cleanup", "free_port", "redis_or_skip", "running"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@asynccontextmanager
async def app_client(settings: Settings, **app_kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, **app_kwargs)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """Status plus the OpenAI error shape; returns the inner error object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


@asynccontextmanager
async def running(loop: Any) -> AsyncIterator[Any]:
    """Run a ``RedisWorkerLoop`` for the block, then stop it (its drain included)."""
    task = asyncio.create_task(loop.run())
    try:
        yield loop
    finally:
        loop.stop()
        await asyncio.wait_for(task, 10)


async def cleanup(prefix: str) -> None:
    """Delete every key under ``prefix`` (a test's own queue namespace)."""
    client = aioredis.Redis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()
