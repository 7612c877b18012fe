"""A worker's self-description, shared by the in-process queue and the Redis heartbeat."""

from __future__ import annotations

from typing import Any, Protocol

from workers.contract import Job, JobResult
from workers.queue.base import Catalog


class WorkerLike(Protocol):
    """The part of ``workers.entry.Worker`` the queue needs (tests may pass a small fake)."""

    def ready(self) -> bool: ...
    def readiness_errors(self) -> dict[str, str]: ...
    def describe_verifiers(self) -> list[dict[str, Any]]: ...
    def available_verifiers(self) -> list[str]: ...
    def profiles(self) -> dict[str, list[str]]: ...
    async def run(self, job: Job) -> JobResult: ...


def generator_models(worker: WorkerLike) -> list[str]:
    """Generator model names, when the worker says (``describe_generation()`` is optional)."""
    describe = getattr(worker, "describe_generation", None)
    if describe is None:
        return []
    try:
        info = describe()
    except Exception:  # noqa: BLE001 - a description must never break readiness
        return []
    model = info.get("model") if isinstance(info, dict) else None
    return [str(model)] if model else []


def describe_worker(worker: WorkerLike) -> dict[str, Any]:
    """JSON-able snapshot of one worker (the Redis heartbeat payload)."""
    return {
        "name": str(getattr(worker, "name", "embedded")),
        "ready": bool(worker.ready()),
        "errors": dict(worker.readiness_errors()),
        "verifiers": list(worker.describe_verifiers()),
        "available": list(worker.available_verifiers()),
        "profiles": {k: list(v) for k, v in worker.profiles().items()},
        "models": generator_models(worker),
    }


def catalog_from_descriptions(descriptions: list[dict[str, Any]]) -> Catalog:
    """Merge worker snapshots: ready when at least one worker is; verifiers offered by every ready worker."""
    if not descriptions:
        return Catalog(ready=False, errors={"workers": "no live worker is consuming the queue"})
    ready = [d for d in descriptions if d.get("ready")]
    pool = ready or descriptions
    first = pool[0]
    available = [name for name in first.get("available", []) if all(name in d.get("available", []) for d in pool)]
    errors: dict[str, str] = {}
    if not ready:
        for d in descriptions:
            errors.update(d.get("errors") or {"worker": "not ready"})
    models: list[str] = []
    for d in pool:
        models.extend(m for m in d.get("models", []) if m not in models)
    return Catalog(
        ready=bool(ready),
        errors=errors,
        verifiers=[v for v in first.get("verifiers", []) if v.get("name") in available],
        available=available,
        profiles=dict(first.get("profiles", {})),
        models=models,
        workers=len(ready),
        worker_verifiers={
            str(d.get("name", f"worker-{i}")): list(d.get("verifiers", [])) for i, d in enumerate(descriptions)
        },
    )
