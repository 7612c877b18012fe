"""A Redis worker process takes part in online learning: it follows published versions (swapping its
Worker's model) and, like every replica, may take the refit lock when a refit is due."""

from __future__ import annotations

from typing import Any

from workers.online.runtime import OnlineRuntime
from workers.online.settings import OnlineSettings


def attach_worker(worker: Any, redis_url: str, prefix: str, settings: OnlineSettings | None = None,
                  replica_id: str | None = None) -> OnlineRuntime | None:
    settings = settings or OnlineSettings()
    if not settings.enabled:
        return None
    settings = settings.model_copy(update={"mode": "redis", "redis_url": redis_url, "prefix": prefix})
    online = OnlineRuntime(settings, replica_id=replica_id or getattr(worker, "name", None))
    online.attach(worker)
    online.start()
    return online
