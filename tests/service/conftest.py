"""Fixtures for gateway tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from tests.service.gateway_support import REDIS_URL, cleanup, redis_or_skip
from workers.queue.redis_queue import RedisJobQueue


@pytest.fixture
def prefix() -> str:
    return f"weaver-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def queue(prefix: str) -> AsyncIterator[RedisJobQueue]:
    """A gateway-side Redis queue on a real Redis, in a namespace of its own, removed afterwards."""
    redis_or_skip()
    q = RedisJobQueue(REDIS_URL, prefix=prefix, max_depth=8)
    await q.start()
    yield q
    await q.close()
    await cleanup(prefix)
