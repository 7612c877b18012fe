"""Score cache keyed by (verifier name + version, prompt hash, candidate hash).

In-memory LRU by default; Redis when configured, so every worker of a fleet shares it. Cache
failures never fail scoring: a Redis outage reads as a miss and writes are dropped, and each is counted in
``weaver_score_cache_errors_total{operation}`` (alert WeaverScoreCacheFailing).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

from prometheus_client import Counter

from workers.verifiers.base import GroupItem, Item, Score, Verifier, stable_hash

log = logging.getLogger(__name__)

CACHE_ERRORS = Counter(
    "weaver_score_cache_errors_total", "Score cache reads or writes that failed (read as a miss / dropped)",
    ["operation"],
)
for _operation in ("read", "write"):  # exported at 0 from the start, so rate() sees the first failure
    CACHE_ERRORS.labels(_operation)


def score_cache_key(verifier: Verifier, item: Item) -> str:
    """``name@version:prompt_hash:candidate_hash``; a group's candidate hash covers all its candidates."""
    prompt_part = stable_hash([item.prompt, verifier.context_key(item.context)])
    candidate_part = stable_hash(list(item.candidates)) if isinstance(item, GroupItem) else stable_hash(
        item.candidate)
    return f"{verifier.name}@{verifier.version}:{prompt_part}:{candidate_part}"


def _encode(value: Score) -> str:
    """JSON with NaN as null (abstentions are cached too)."""
    if isinstance(value, list):
        return json.dumps([None if math.isnan(v) else v for v in value])
    return json.dumps(None if math.isnan(value) else float(value))


def _decode(raw: str | bytes) -> Score:
    value = json.loads(raw)
    if isinstance(value, list):
        return [math.nan if v is None else float(v) for v in value]
    return math.nan if value is None else float(value)


class ScoreCache(ABC):
    @abstractmethod
    async def get_many(self, keys: Iterable[str]) -> dict[str, Score]: ...

    @abstractmethod
    async def set_many(self, values: Mapping[str, Score]) -> None: ...

    async def close(self) -> None:
        """Release connections."""


class MemoryScoreCache(ScoreCache):
    """A bounded LRU in process memory."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[str, Score] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    async def get_many(self, keys: Iterable[str]) -> dict[str, Score]:
        found: dict[str, Score] = {}
        for key in keys:
            if key in self._data:
                self._data.move_to_end(key)
                found[key] = self._data[key]
        return found

    async def set_many(self, values: Mapping[str, Score]) -> None:
        for key, value in values.items():
            self._data[key] = value
            self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)


class RedisScoreCache(ScoreCache):
    """Scores as JSON strings under ``prefix + key`` with a TTL (redis.asyncio)."""

    def __init__(self, url: str, prefix: str = "weaver:score:", ttl_s: int | None = None) -> None:
        import redis.asyncio as redis

        self.prefix = prefix
        self.ttl_s = ttl_s
        self._client: Any = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)

    async def get_many(self, keys: Iterable[str]) -> dict[str, Score]:
        keys = list(keys)
        if not keys:
            return {}
        try:
            raw = await self._client.mget([self.prefix + k for k in keys])
        except Exception as exc:  # noqa: BLE001 - an unavailable cache is a miss
            log.warning("score cache read failed: %s", exc)
            CACHE_ERRORS.labels("read").inc()
            return {}
        return {k: _decode(v) for k, v in zip(keys, raw, strict=True) if v is not None}

    async def set_many(self, values: Mapping[str, Score]) -> None:
        if not values:
            return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, value in values.items():
                    pipe.set(self.prefix + key, _encode(value), ex=self.ttl_s)
                await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - dropping a write only costs a rescore
            log.warning("score cache write failed: %s", exc)
            CACHE_ERRORS.labels("write").inc()

    async def close(self) -> None:
        await self._client.aclose()


def build_cache(memory_size: int, redis_url: str | None = None, redis_prefix: str = "weaver:score:",
                redis_ttl_s: int | None = None) -> ScoreCache | None:
    if redis_url:
        return RedisScoreCache(redis_url, redis_prefix, redis_ttl_s)
    return MemoryScoreCache(memory_size) if memory_size > 0 else None


class JsonlScoreCache(ScoreCache):
    """An append-only JSON Lines file of ``{"key", "value"}`` rows, for offline scoring reruns.

    Every finished batch is appended and flushed, so an interrupted run resumes where it stopped.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._data: dict[str, Score] = {}
        if self.path.exists():
            with open(self.path, encoding="utf-8") as handle:
                for line in handle:
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        row = json.loads(line)
                        self._data[row["key"]] = _decode(json.dumps(row["value"]))
                    except (ValueError, KeyError, TypeError):
                        continue  # a torn last line from an interrupted run
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: TextIO | None = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def __len__(self) -> int:
        return len(self._data)

    async def get_many(self, keys: Iterable[str]) -> dict[str, Score]:
        return {k: self._data[k] for k in keys if k in self._data}

    async def set_many(self, values: Mapping[str, Score]) -> None:
        self._data.update(values)
        if self._handle is None:
            return
        try:
            for key, value in values.items():
                self._handle.write(json.dumps({"key": key, "value": json.loads(_encode(value))}) + "\n")
            self._handle.flush()
        except OSError as exc:  # a full disk costs the cache file, never the scores: keep them in memory
            log.warning("score cache file %s is no longer written (disk full or not writable): %s", self.path, exc)
            self._drop_handle()

    def _drop_handle(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            with contextlib.suppress(OSError):
                handle.close()

    async def close(self) -> None:
        self._drop_handle()
