"""Model versions in Redis: the artifact JSON under a versioned key, an index, a pointer, pub/sub.

Publication is one Lua script: it checks the refit lock's token (when given), assigns the sequence
number, stores the artifact and its metadata, moves the pointer and announces the version, so a
replica whose lease ran out can never publish and readers never see a pointer without its artifact.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from models.online import VersionInfo, VersionNotFound
from models.weaver import WeaverModel
from workers.online.keys import OnlineKeys

_PUBLISH = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local seq = redis.call('INCR', KEYS[4])
local info = cjson.decode(ARGV[4])
info['sequence'] = seq
redis.call('SET', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[2], cjson.encode(info))
local pointer = cjson.encode({version=ARGV[2], sequence=seq, published_at=tonumber(ARGV[5]), source=info['source']})
redis.call('SET', KEYS[5], pointer)
redis.call('PUBLISH', ARGV[6], pointer)
return seq
"""


class LeaseLost(RuntimeError):
    """The refit lock expired (or was taken) before publication: the fit is discarded."""


class RedisModelStore:
    """``models.online.ModelStore`` on Redis, plus ``publish`` for the refit coordinator."""

    def __init__(self, client: redis.Redis, keys: OnlineKeys, keep: int = 50) -> None:
        self.client = client
        self.keys = keys
        self.keep = keep
        self._publish = client.register_script(_PUBLISH)

    def publish(self, model: WeaverModel, info: VersionInfo, lock_token: str | None = None) -> VersionInfo:
        """Store ``model`` and make it current; returns the metadata with its assigned sequence."""
        published_at = time.time()
        payload = json.dumps(model.to_json(), default=_json_default)
        seq = int(self._publish(
            keys=[self.keys.lock, self.keys.artifact(model.version), self.keys.index, self.keys.sequence,
                  self.keys.current],
            args=[lock_token or "", model.version, payload, json.dumps(info.to_json()), repr(published_at),
                  self.keys.events],
        ))
        if seq < 0:
            raise LeaseLost("refit lock lost before publication")
        self._prune()
        return VersionInfo.from_json({**info.to_json(), "sequence": seq})

    # -- ModelStore protocol ----------------------------------------------------------------------
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

    def versions(self) -> list[VersionInfo]:
        raw = self.client.hgetall(self.keys.index)
        infos = [VersionInfo.from_json(json.loads(v)) for v in raw.values()]
        return sorted(infos, key=lambda i: i.sequence)

    def pointer(self) -> dict[str, Any] | None:
        raw = self.client.get(self.keys.current)
        return json.loads(raw) if raw is not None else None

    def current(self) -> str | None:
        pointer = self.pointer()
        return str(pointer["version"]) if pointer else None

    def set_current(self, version: str) -> None:
        """Point every replica at a kept version (rollback): pointer + announcement in one transaction."""
        if not self.client.exists(self.keys.artifact(version)):
            raise VersionNotFound(version)
        raw = self.client.hget(self.keys.index, version)
        sequence = VersionInfo.from_json(json.loads(raw)).sequence if raw else 0
        pointer = json.dumps({"version": version, "sequence": sequence, "published_at": time.time(),
                              "source": "rollback"})
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self.keys.current, pointer)
        pipe.publish(self.keys.events, pointer)
        pipe.execute()

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


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
