"""Queue transport between gateways and workers: in-process (embedded mode) and Redis Streams (distributed).

Nothing here imports FastAPI or ``service``: a worker process runs the consumer side on its own.
"""

from workers.queue.base import Catalog, JobQueue, QueueStats
from workers.queue.errors import JobDeadlineExceeded, QueueError, QueueFull, QueueUnavailable

__all__ = [
    "Catalog",
    "JobDeadlineExceeded",
    "JobQueue",
    "QueueError",
    "QueueFull",
    "QueueStats",
    "QueueUnavailable",
]
