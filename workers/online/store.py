"""Model versions in Redis: the artifact JSON under a versioned key, an index, a pointer, pub/sub.

Every pointer move (a refit's publication, an operator's rollback or unpin) is one optimistic
transaction (WATCH the pointer, the sequence and, for a refit, the refit lock; MULTI; EXEC) that also
announces the new pointer on the events channel. So a replica whose lease ran out can never publish,
a refit can never overwrite a rollback that landed while it was fitting (the pin is checked inside
the transaction), and readers never see a pointer without its artifact.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar, cast

import redis

from models.online import PinPolicy, Pointer, VersionInfo, VersionNotFound, pin_allows
from models.weaver import WeaverModel
from workers.online.keys import OnlineKeys

T = TypeVar("T")


class LeaseLost(RuntimeError):
    """The refit lock expired (or was taken) before publication: the fit is discarded."""


class RedisModelStore:
    """``models.online.ModelStore`` on Redis; ``publish`` also takes the refit lock's token (fencing)."""

    def __init__(self, client: redis.Redis, keys: OnlineKeys, keep: int = 50) -> None:
        self.client = client
        self.keys = keys
        self.keep = keep

    def publish(self, model: WeaverModel, info: VersionInfo, pin_policy: PinPolicy = "hold",
                window_start: float | None = None, lock_token: str | None = None) -> VersionInfo | None:
        """Store ``model`` and make it current; returns its metadata with the assigned sequence, or None
        when a pinned version holds (nothing is stored). Raises LeaseLost when ``lock_token`` no longer
        holds the refit lock."""
        payload = json.dumps(model.to_json(), default=_json_default)

        def attempt(pipe: Any) -> VersionInfo | None:
            if lock_token is not None and _text(pipe.get(self.keys.lock)) != lock_token:
                raise LeaseLost("refit lock lost before publication")
            if not pin_allows(_pointer(pipe.get(self.keys.current)), pin_policy, window_start):
                return None
            sequence = int(pipe.get(self.keys.sequence) or 0) + 1
            published = replace(info, sequence=sequence)
            pointer = json.dumps(Pointer(model.version, sequence, info.source, time.time()).to_json())
            pipe.multi()
            pipe.set(self.keys.sequence, sequence)
            pipe.set(self.keys.artifact(model.version), payload)
            pipe.hset(self.keys.index, model.version, json.dumps(published.to_json()))
            pipe.set(self.keys.current, pointer)
            pipe.publish(self.keys.events, pointer)
            return published

        result = self._transaction(attempt, self.keys.lock, self.keys.current, self.keys.sequence)
        if result is not None:
            self._prune()
        return result

    def _transaction(self, attempt: Callable[[Any], T], *watched: str) -> T:
        """``attempt`` under WATCH on ``watched``, retried on a conflicting write; returns what it returned."""
        return cast(T, self.client.transaction(attempt, *watched, value_from_callable=True))  # type: ignore[arg-type]

    def rollback(self, version: str) -> Pointer:
        """Serve a kept version again, pinned, and announce it: every replica swaps to it."""

        def attempt(pipe: Any) -> Pointer:
            if not pipe.exists(self.keys.artifact(version)):
                raise VersionNotFound(version)
            raw = pipe.hget(self.keys.index, version)
            sequence = VersionInfo.from_json(json.loads(raw)).sequence if raw else 0
            now = time.time()
            pointer = Pointer(version, sequence, "rollback", now, pinned=True, pinned_at=now)
            self._move(pipe, pointer)
            return pointer

        return self._transaction(attempt, self.keys.current, self.keys.artifact(version))

    def unpin(self) -> Pointer | None:
        """Let refits replace the served version again; announced so every replica's gauges follow."""

        def attempt(pipe: Any) -> Pointer | None:
            pointer = _pointer(pipe.get(self.keys.current))
            if pointer is None or not pointer.pinned:
                return pointer
            unpinned = replace(pointer, pinned=False)
            self._move(pipe, unpinned)
            return unpinned

        return self._transaction(attempt, self.keys.current)

    def set_current(self, version: str) -> None:
        """Serve a kept version, unpinned (seeding; an operator's rollback is ``rollback``)."""

        def attempt(pipe: Any) -> None:
            if not pipe.exists(self.keys.artifact(version)):
                raise VersionNotFound(version)
            info = self.info(version)
            self._move(pipe, Pointer(version, info.sequence if info else 0, info.source if info else "seed",
                                     time.time()))

        self.client.transaction(attempt, self.keys.current, self.keys.artifact(version))

    def _move(self, pipe: Any, pointer: Pointer) -> None:
        raw = json.dumps(pointer.to_json())
        pipe.multi()
        pipe.set(self.keys.current, raw)
        pipe.publish(self.keys.events, raw)

    # -- reading ----------------------------------------------------------------------------------
    def put(self, model: WeaverModel, info: VersionInfo) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self.keys.artifact(model.version), json.dumps(model.to_json(), default=_json_default))
        pipe.hset(self.keys.index, model.version, json.dumps(info.to_json()))
        pipe.execute()

    def get(self, version: str) -> WeaverModel:
        raw = self.client.get(self.keys.artifact(version))
        if raw is None:
            raise VersionNotFound(version)
        return WeaverModel.from_json(json.loads(raw))

    def info(self, version: str) -> VersionInfo | None:
        raw = self.client.hget(self.keys.index, version)
        return VersionInfo.from_json(json.loads(raw)) if raw is not None else None

    def versions(self) -> list[VersionInfo]:
        raw = self.client.hgetall(self.keys.index)
        infos = [VersionInfo.from_json(json.loads(v)) for v in raw.values()]
        return sorted(infos, key=lambda i: i.sequence)

    def pointer(self) -> Pointer | None:
        return _pointer(self.client.get(self.keys.current))

    def current(self) -> str | None:
        pointer = self.pointer()
        return pointer.version if pointer else None

    def _prune(self) -> None:
        infos = self.versions()
        current = self.current()
        extra = len(infos) - self.keep
        for info in infos:
            if extra <= 0:
                break
            if info.version == current:
                continue
            self.client.delete(self.keys.artifact(info.version))
            self.client.hdel(self.keys.index, info.version)
            extra -= 1


def prefixes_with_versions(client: redis.Redis, limit: int = 20) -> list[str]:
    """Key prefixes that hold a version index on this Redis (what ``--prefix`` could be)."""
    found: set[str] = set()
    for key in client.scan_iter(match="*:models:index", count=1000):
        found.add((_text(key) or "").removesuffix(":models:index"))
        if len(found) >= limit:
            break
    return sorted(found)


def _pointer(raw: bytes | str | None) -> Pointer | None:
    return Pointer.from_json(json.loads(raw)) if raw else None


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
