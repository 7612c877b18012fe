"""API keys (constant-time comparison, never logged), rate-limit buckets and limits (in memory or in Redis),
and the API-key gate in front of the interactive docs.

Rate-limit buckets: the authenticated key when keys are configured (a made-up key never reaches the
limiter: it is refused with 401 first), otherwise the client address. The client address is the TCP
peer, or, only when the peer is one of ``forwarded_allow_ips`` (uvicorn's proxy-headers policy), the
address that proxy put in ``X-Forwarded-For``; a client cannot choose its own bucket with a header.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from abc import ABC, abstractmethod

import redis.asyncio as aioredis

from workers.queue.keys import QueueKeys
from workers.queue.redis_common import connect, guarded

WINDOW_S = 60


def key_id(api_key: str | None) -> str:
    """A stable, non-reversible id for a key (rate-limit buckets and logs never see the key itself)."""
    if not api_key:
        return "anonymous"
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


def rate_bucket(authenticated_key: str | None, keys_enabled: bool, client_host: str | None) -> str:
    """Who a request counts against: its key when keys are on, else the client address (never a header)."""
    if keys_enabled and authenticated_key:
        return f"key:{key_id(authenticated_key)}"
    return f"addr:{client_host or 'unknown'}"


class KeyChecker:
    """Checks a presented key against every configured key without early exit (constant time per key)."""

    def __init__(self, keys: list[str]) -> None:
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def check(self, presented: str | None) -> bool:
        if not self._digests:
            return True
        candidate = hashlib.sha256((presented or "").encode()).digest()
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(candidate, digest)
        return matched and bool(presented)


def bearer_token(authorization: str | None, x_api_key: str | None) -> str | None:
    """``Authorization: Bearer <key>`` (the OpenAI client) or ``X-API-Key: <key>``."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return x_api_key.strip() if x_api_key else None


class RateLimiter(ABC):
    """Fixed one-minute windows per key id."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute

    @abstractmethod
    async def hit(self, bucket: str) -> float | None:
        """Count one request; return seconds until the window resets when over the limit, else None."""

    async def close(self) -> None:
        return None


class MemoryRateLimiter(RateLimiter):
    def __init__(self, per_minute: int) -> None:
        super().__init__(per_minute)
        self._counts: dict[tuple[str, int], int] = {}

    async def hit(self, bucket: str) -> float | None:
        now = time.time()
        window = int(now // WINDOW_S)
        self._counts = {k: v for k, v in self._counts.items() if k[1] == window}
        count = self._counts.get((bucket, window), 0) + 1
        self._counts[(bucket, window)] = count
        return (window + 1) * WINDOW_S - now if count > self.per_minute else None


class RedisRateLimiter(RateLimiter):
    """Counters live in Redis, so limits hold across gateway replicas and restarts."""

    def __init__(self, per_minute: int, url: str, prefix: str) -> None:
        super().__init__(per_minute)
        self.keys = QueueKeys(prefix)
        self.client: aioredis.Redis = connect(url)

    async def hit(self, bucket: str) -> float | None:
        now = time.time()
        window = int(now // WINDOW_S)
        key = self.keys.rate(bucket, window)
        pipe = self.client.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, WINDOW_S * 2)
        count, _ = await guarded(pipe.execute())
        return (window + 1) * WINDOW_S - now if int(count) > self.per_minute else None

    async def close(self) -> None:
        await self.client.aclose()
