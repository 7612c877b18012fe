"""The gateway's view of a queue: submit a job, wait for its one result; plus depth and the worker catalogue."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from workers.contract import Job, JobResult


@dataclass(frozen=True)
class QueueStats:
    depth: int  # jobs waiting or running
    oldest_age_s: float  # age of the oldest job not yet answered (0 when empty)
    workers: int  # live workers consuming this queue
    running: int | None = None  # jobs running now, when the queue knows (in-process); None: min(depth, slots)


@dataclass(frozen=True)
class Catalog:
    """What the workers behind a queue can do: verifiers, profiles, readiness."""

    ready: bool
    errors: dict[str, str] = field(default_factory=dict)  # component -> why not ready
    verifiers: list[dict[str, Any]] = field(default_factory=list)  # describe_verifiers() of a worker
    available: list[str] = field(default_factory=list)
    profiles: dict[str, list[str]] = field(default_factory=dict)
    models: list[str] = field(default_factory=list)  # generator model names
    workers: int = 0
    worker_verifiers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # worker -> its verifiers


class JobQueue(ABC):
    """Submit/await a job. Raises QueueFull, QueueUnavailable or JobDeadlineExceeded, never returns twice."""

    mode: str = "base"

    async def start(self) -> None:
        """Connect / spawn consumers."""

    async def close(self) -> None:
        """Stop taking jobs; finish or hand back in-flight ones."""

    @abstractmethod
    async def submit(self, job: Job) -> JobResult:
        """Enqueue ``job`` and wait (at most until ``job.deadline``) for its result."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise QueueUnavailable when the backend cannot be reached."""

    @abstractmethod
    async def stats(self) -> QueueStats: ...

    @abstractmethod
    async def catalog(self) -> Catalog: ...
