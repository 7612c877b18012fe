"""Build the gateway's online learner from its settings and connect it to the queue and worker."""

from __future__ import annotations

import logging
from typing import Any

from workers.online.runtime import OnlineRuntime
from workers.online.settings import OnlineSettings
from workers.queue.base import JobQueue

log = logging.getLogger("weaver.online")


def build_online(
    online: OnlineSettings, redis_url: str | None, prefix: str, worker: Any = None
) -> OnlineRuntime | None:
    """Embedded gateway: refit in a thread and swap the in-process worker's model. Distributed: Redis mode
    (the score log, lock and versions live beside the queue, under the same prefix)."""
    if not online.enabled:
        return None
    if redis_url:
        online = online.model_copy(update={"mode": "redis", "redis_url": redis_url, "prefix": prefix})
    else:
        online = online.model_copy(update={"mode": "embedded"})
    learning = OnlineRuntime(online)
    if worker is not None and hasattr(worker, "set_weaver_model"):
        learning.attach(worker)
    learning.start()
    log.info("online learning on (%s mode): %s", online.mode, learning.note())
    return learning


def observed(queue: JobQueue, online: OnlineRuntime | None) -> JobQueue:
    if online is None:
        return queue
    from service.api.feedback.observe import ObservedQueue

    return ObservedQueue(queue, online)
