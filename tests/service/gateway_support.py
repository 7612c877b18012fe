"""Helpers for gateway tests: run an app (lifespan included) behind an in-memory httpx client."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.settings import Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REDIS_URL = os.environ.get("WEAVER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_or_skip(url: str = REDIS_URL) -> str:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"Redis not reachable at {url}: {exc}")
    return url
