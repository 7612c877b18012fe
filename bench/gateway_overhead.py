"""Gateway + queue overhead of a /v1/rerank request with cheap verifiers, against calling the worker directly.

One run, one process, one real ``Worker`` (cheap verifiers, score cache off so every call does the work):

- direct:   ``await worker.run(job)``
- embedded: HTTP request through the FastAPI app (in-memory ASGI transport) -> in-process queue -> worker
- redis:    the same app in distributed mode -> Redis Stream -> a worker loop in this process -> reply list

Requests are sent one at a time (latency, not throughput). Overhead = mean(mode) / mean(direct) - 1.

    PYTHONPATH=. python bench/gateway_overhead.py [--requests 300] [--redis-url redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from service.app import create_app  # noqa: E402
from service.settings import QueueSettings, Settings  # noqa: E402
from workers.contract import Job  # noqa: E402
from workers.queue.redis_worker import RedisWorkerLoop  # noqa: E402

VERIFIERS = ["answer_agreement", "math_check"]


def bench_worker_config() -> Any:
    from workers.config import WorkerConfig

    config = WorkerConfig.default().model_dump()
    config.update(generation=None, cache={"memory_size": 0})
    config["verifiers"] = [v for v in config["verifiers"] if v["name"] in VERIFIERS]
    config["profiles"] = {"cheap": VERIFIERS}
    config["default_profile"] = "cheap"
    return WorkerConfig.model_validate(config)


def payload(i: int, mode: str) -> dict[str, object]:
    """Distinct texts per request and mode, GSM8K-like: 4 candidates, 2 sharing the right answer."""
    a, b = 17 + i, 5 + i % 7
    return {
        "query": f"[{mode}] Tom has {a} apples and buys {b} more. How many apples does he have?",
        "documents": [
            f"He has {a} + {b} = {a + b} apples. The answer is {a + b}.",
            f"{a} plus {b} makes {a + b}. #### {a + b}",
            f"{a} - {b} = {a - b}, so the answer is {a - b}.",
            f"Tom ends with {a * b} apples. #### {a * b}",
        ],
        "verification": {"verifiers": VERIFIERS, "aggregator": "mean"},
    }


async def timed(n: int, call: Callable[[int], Awaitable[None]]) -> list[float]:
    for i in range(10):  # warm-up
        await call(-1 - i)
    samples = []
    for i in range(n):
        start = time.perf_counter()
        await call(i)
        samples.append(time.perf_counter() - start)
    return samples


async def run(requests: int, redis_url: str | None) -> list[tuple[str, list[float]]]:
    from workers.entry import Worker

    worker = Worker.from_config(bench_worker_config())
    await worker.start()
    rows: list[tuple[str, list[float]]] = []

    async def direct(i: int) -> None:
        body = payload(i, "direct")
        job = Job(
            kind="rerank",
            prompt=str(body["query"]),
            candidates=list(body["documents"]),  # type: ignore[arg-type]
            verifiers=VERIFIERS,
            aggregator="mean",
        )
        result = await worker.run(job)
        assert result.status == "ok", result.error

    rows.append(("direct (worker.run)", await timed(requests, direct)))

    async def through(app_settings: Settings, label: str, mode: str) -> None:
        app = create_app(app_settings, worker=worker)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

                async def call(i: int) -> None:
                    response = await client.post("/v1/rerank", json=payload(i, mode))
                    assert response.status_code == 200, response.text

                rows.append((label, await timed(requests, call)))

    await through(Settings(), "embedded (HTTP + in-process queue)", "embedded")
    if redis_url:
        prefix = f"weaver-bench-{uuid.uuid4().hex[:8]}"
        loop = RedisWorkerLoop(worker, redis_url, prefix=prefix, heartbeat_interval_s=0.5, block_ms=1000)
        consumer = asyncio.create_task(loop.run())
        await asyncio.sleep(1.0)  # first heartbeat registers the worker
        await through(
            Settings(redis_url=redis_url, queue=QueueSettings(prefix=prefix)), "redis (HTTP + Streams)", "redis"
        )
        loop.stop()
        await consumer
    await worker.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--redis-url", default=os.environ.get("WEAVER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--no-redis", action="store_true")
    args = parser.parse_args()
    rows = asyncio.run(run(args.requests, None if args.no_redis else args.redis_url))
    base = statistics.fmean(rows[0][1])
    print(f"rerank, 4 documents, verifiers {'+'.join(VERIFIERS)}, {args.requests} sequential requests per mode\n")
    print(f"| {'mode':<36} | {'mean ms':>8} | {'p50 ms':>7} | {'p95 ms':>7} | {'overhead':>9} |")
    print(f"|{'-' * 38}|{'-' * 10}:|{'-' * 9}:|{'-' * 9}:|{'-' * 11}:|")
    for label, samples in rows:
        ms = sorted(s * 1000 for s in samples)
        mean = statistics.fmean(ms)
        overhead = "-" if label.startswith("direct") else f"{mean / (base * 1000) - 1:+.1%}"
        print(
            f"| {label:<36} | {mean:8.2f} | {ms[len(ms) // 2]:7.2f} | {ms[int(len(ms) * 0.95)]:7.2f} | {overhead:>9} |"
        )


if __name__ == "__main__":
    main()
