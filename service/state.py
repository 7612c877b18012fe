"""Long-lived objects one app owns: settings, the queue, auth and rate limiting. Built in the lifespan."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from service.security import KeyChecker, RateLimiter
from service.settings import Settings
from workers.queue.base import JobQueue


@dataclass
class GatewayState:
    settings: Settings
    queue: JobQueue
    keys: KeyChecker
    rate_limiter: RateLimiter | None = None
    worker: Any = None  # the in-process Worker in embedded mode (owned and closed by the app)
    online: Any = None  # workers.online.runtime.OnlineRuntime, or None when online.enabled is false
    loading: asyncio.Task[None] | None = None  # the owned worker loading its models (embedded mode)
