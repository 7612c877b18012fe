"""Compute by need through the API: ``verification.cascade``, ``budget`` and ``adaptive_n`` reach the worker,
the ``compute`` block comes back (in the body and the header), the metrics count it, and bad values get the
OpenAI error shape. Embedded, and over a real Redis with the same worker behind the queue."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from service.settings import Settings
from tests.service.gateway_support import REDIS_URL, app_client, assert_error, running
from tests.workers.test_adaptive_job import (
    AGREEING,
    PROMPT,
    SCATTERED,
    CountingJudge,
    ScriptedGenerator,
    fitted_worker,
)
from workers.entry import Worker
from workers.queue.redis_queue import RedisJobQueue
from workers.queue.redis_worker import RedisWorkerLoop


@pytest.fixture
async def worker() -> AsyncIterator[Worker]:
    async with fitted_worker() as w:
        w._generator = ScriptedGenerator(["A: 18"])  # noqa: SLF001 - a scripted backend in place of a model
        yield w


def rerank_body(documents: list[str], **verification: object) -> dict[str, object]:
    return {"model": "weaver", "query": PROMPT, "documents": documents, "verification": verification}


async def test_rerank_cascade_options_and_the_compute_block(worker: Worker) -> None:
    async with app_client(Settings(), worker=worker) as client:
        settled = await client.post("/v1/rerank", json=rerank_body(AGREEING))
        assert settled.status_code == 200, settled.text
        compute = settled.json()["verification"]["compute"]
        assert compute["stop_reason"] == "settled" and compute["verifiers_skipped"] == ["judge"]
        header = json.loads(settled.headers["x-weaver-verification"])
        assert header["compute"]["stop_reason"] == "settled" and header["compute"]["candidates"] == 4
        judge = next(v for v in settled.json()["verification"]["verifiers"] if v["name"] == "judge")
        assert judge["raw"] == [None] * 4 and "settled" in judge["skipped"]

        off = await client.post("/v1/rerank", json=rerank_body(AGREEING, cascade=False))
        assert off.json()["verification"]["compute"]["stop_reason"] == "disabled"
        assert sorted(CountingJudge.scored) == sorted(AGREEING)
        capped = await client.post("/v1/rerank", json=rerank_body(SCATTERED, budget=0.0))
        assert capped.json()["verification"]["compute"]["stop_reason"] == "budget"

        metrics = (await client.get("/metrics")).text
        assert 'weaver_compute_stops_total{phase="verification",reason="settled"}' in metrics
        assert 'weaver_verifier_compute_seconds_total{scope="full"}' in metrics

        for bad in ({"budget": -1}, {"cascade": "sometimes"}, {"adaptive_n": True}):
            assert_error(await client.post("/v1/rerank", json=rerank_body(AGREEING, **bad)), 400)


async def test_chat_adaptive_n(worker: Worker) -> None:
    async with app_client(Settings(), worker=worker) as client:
        body = {"model": "weaver", "messages": [{"role": "user", "content": PROMPT}],
                "verification": {"n_candidates": 16, "adaptive_n": True, "return_candidates": True}}
        response = await client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        block = response.json()["verification"]
        assert block["compute"]["rounds"] == [2, 4] and block["compute"]["sampling_stop_reason"] == "settled"
        assert len(block["candidates"]) == 4 and response.json()["choices"][0]["message"]["content"] == "A: 18"
        metrics = (await client.get("/metrics")).text
        assert 'weaver_sampled_candidates_total{scope="requested"}' in metrics
        assert 'weaver_compute_stops_total{phase="sampling",reason="settled"}' in metrics


@pytest.mark.redis
async def test_the_options_and_the_compute_block_cross_redis(worker: Worker, queue: RedisJobQueue,
                                                             prefix: str) -> None:
    async with running(RedisWorkerLoop(worker, REDIS_URL, prefix=prefix, block_ms=100)), \
            app_client(Settings(), queue=queue) as client:
        for _ in range(100):  # the worker's first heartbeat
            if (await client.get("/readyz")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        settled = await client.post("/v1/rerank", json=rerank_body(AGREEING))
        off = await client.post("/v1/rerank", json=rerank_body(AGREEING, cascade=False, budget=2.5))
    assert settled.status_code == 200 and off.status_code == 200, (settled.text, off.text)
    assert settled.json()["verification"]["compute"]["verifiers_skipped"] == ["judge"]
    assert off.json()["verification"]["compute"]["stop_reason"] == "disabled"
    assert off.json()["verification"]["compute"]["budget_s"] == 2.5
