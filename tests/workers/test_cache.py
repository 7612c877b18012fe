"""Score caches: in-memory LRU, the JSONL file used offline, and real Redis."""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from workers.cache import JsonlScoreCache, MemoryScoreCache, RedisScoreCache, score_cache_key
from workers.verifiers.base import GroupItem, PairItem
from workers.verifiers.code_tests import CodeTestsVerifier
from workers.verifiers.math_check import MathCheckVerifier


def test_key_covers_verifier_version_prompt_and_candidate() -> None:
    verifier = MathCheckVerifier("m")
    base = score_cache_key(verifier, PairItem("p", "c"))
    assert base.startswith(f"m@{verifier.version}:")
    assert base == score_cache_key(verifier, PairItem("p", "c"))
    assert base != score_cache_key(verifier, PairItem("p2", "c"))
    assert base != score_cache_key(verifier, PairItem("p", "c2"))
    assert base != score_cache_key(MathCheckVerifier("other"), PairItem("p", "c"))
    assert score_cache_key(verifier, PairItem("p", "c", {"x": 1})) == base  # context does not matter here
    code = CodeTestsVerifier("code")
    assert score_cache_key(code, PairItem("p", "c", {"tests": ["a"]})) != score_cache_key(
        code, PairItem("p", "c", {"tests": ["b"]}))
    group_ab = score_cache_key(verifier, GroupItem("p", ("a", "b")))
    assert group_ab != score_cache_key(verifier, GroupItem("p", ("b", "a")))


async def test_memory_cache_is_a_bounded_lru() -> None:
    cache = MemoryScoreCache(max_entries=2)
    await cache.set_many({"a": 1.0, "b": 2.0})
    assert await cache.get_many(["a"]) == {"a": 1.0}  # touches a
    await cache.set_many({"c": 3.0})  # evicts b, the least recently used
    assert await cache.get_many(["a", "b", "c"]) == {"a": 1.0, "c": 3.0}
    assert len(cache) == 2


async def test_jsonl_cache_survives_a_restart_and_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "scores.jsonl"
    cache = JsonlScoreCache(path)
    await cache.set_many({"pair": 0.25, "group": [0.5, math.nan], "abstain": math.nan})
    await cache.close()
    with open(path, "a") as handle:
        handle.write('{"key": "torn", "val')  # an interrupted write
    reopened = JsonlScoreCache(path)
    found = await reopened.get_many(["pair", "group", "abstain", "torn"])
    assert found["pair"] == 0.25
    assert found["group"][0] == 0.5 and math.isnan(found["group"][1])  # type: ignore[index]
    assert math.isnan(found["abstain"])  # type: ignore[arg-type]
    assert "torn" not in found
    await reopened.close()


@pytest.mark.redis
async def test_redis_cache_round_trip(live_redis_url: str) -> None:
    import redis.asyncio as redis

    prefix = f"weaver-test:{uuid.uuid4().hex}:"
    cache = RedisScoreCache(live_redis_url, prefix=prefix, ttl_s=60)
    other = RedisScoreCache(live_redis_url, prefix=prefix, ttl_s=60)  # a second worker sharing the cache
    try:
        await cache.set_many({"k1": 0.75, "k2": [0.1, 0.9]})
        assert await other.get_many(["k1", "k2", "missing"]) == {"k1": 0.75, "k2": [0.1, 0.9]}
        client = redis.Redis.from_url(live_redis_url)
        ttl = await client.ttl(prefix + "k1")
        assert 0 < ttl <= 60
        await client.delete(prefix + "k1", prefix + "k2")
        await client.aclose()
    finally:
        await cache.close()
        await other.close()


async def test_unreachable_redis_reads_as_a_miss() -> None:
    def errors(operation: str) -> float:
        return REGISTRY.get_sample_value("weaver_score_cache_errors_total", {"operation": operation}) or 0.0

    before = {op: errors(op) for op in ("read", "write")}
    cache = RedisScoreCache("redis://127.0.0.1:1/0", prefix="weaver-test:")
    assert await cache.get_many(["a"]) == {}
    await cache.set_many({"a": 1.0})  # dropped, no exception
    await cache.close()
    # each failure is counted (weaver_score_cache_errors_total, alert WeaverScoreCacheFailing)
    assert {op: errors(op) - before[op] for op in before} == {"read": 1, "write": 1}
