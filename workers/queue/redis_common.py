"""Redis connection settings shared by the gateway client and the worker loop."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from workers.queue.errors import QueueUnavailable
from workers.queue.keys import GROUP, QueueKeys

T = TypeVar("T")
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


def connect(url: str, *, socket_timeout_s: float = 10.0) -> aioredis.Redis:
    """A client that fails fast when Redis is down (one quick retry) and reconnects by itself afterwards."""
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=1.0,
        socket_timeout=socket_timeout_s,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
        health_check_interval=15,
        protocol=2,
    )


async def guarded(call: Awaitable[T]) -> T:
    """Await a Redis call; a lost connection becomes QueueUnavailable (HTTP 503 at the gateway)."""
    try:
        return await call
    except REDIS_DOWN as exc:
        raise QueueUnavailable(f"queue backend unreachable: {exc}") from exc


async def ensure_group(client: aioredis.Redis, keys: QueueKeys) -> None:
    """Create the stream and its consumer group if missing (after a Redis restart both are gone).

    The group starts at id 0 so jobs added before it existed are still delivered.
    """
    try:
        await client.xgroup_create(keys.stream, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def entry_age_s(entry_id: str, now_s: float) -> float:
    """Age of a stream entry from its id (``<unix ms>-<seq>``)."""
    millis = int(entry_id.split("-", 1)[0])
    return max(0.0, now_s - millis / 1000.0)
