"""Gateway + queue overhead of a /v1/rerank request with cheap verifiers, against calling the worker directly.

One run, one process, one real ``Worker`` (cheap verifiers; score cache off so every call does the work):

- direct:   ``await worker.run(job)`` (the worker entry, no gateway, no queue)
- embedded: the request bytes through the ASGI app (middleware, auth, validation, limits, in-process
            queue, worker, response model, JSON), as uvicorn would call it, minus the socket
- redis:    the same app in distributed mode: Redis Stream -> a worker loop in this process -> reply list
- embedded + HTTP client: the embedded path driven by an in-process httpx client (adds client costs)

The modes are interleaved request by request, so machine noise (a shared 2-core box) hits them alike;
requests are sequential (latency, not throughput). Overhead = statistic(mode) / statistic(direct) - 1.

    PYTHONPATH=. python bench/gateway_overhead.py [--requests 500] [--redis-url redis://127.0.0.1:6379/0]
        [--idle-ms 200]  # an idle gap before each request: latency at low load
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fastapi import FastAPI  # noqa: E402

from service.app import create_app  # noqa: E402
from service.settings import QueueSettings, Settings  # noqa: E402
from workers.contract import Job  # noqa: E402
from workers.online.settings import OnlineSettings  # noqa: E402
from workers.queue.redis_worker import RedisWorkerLoop  # noqa: E402

VERIFIERS = ["answer_agreement", "math_check"]  # the cheap profile; --verifiers picks others
Call = Callable[[int], Awaitable[None]]


def bench_worker_config() -> Any:
    from workers.config import WorkerConfig

    config = WorkerConfig.default().model_dump()
    config.update(generation=None, cache={"memory_size": 0})
    config["verifiers"] = [v for v in config["verifiers"] if v["name"] in VERIFIERS]
    config["profiles"] = {"cheap": VERIFIERS}
    config["default_profile"] = "cheap"
    return WorkerConfig.model_validate(config)


def payload(i: int, mode: str) -> dict[str, Any]:
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


async def asgi_post(app: FastAPI, path: str, body: bytes) -> int:
    """One request straight into the ASGI app, as a server would hand it over."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000), "state": {},
    }  # fmt: skip
    delivered = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


def asgi_call(app: FastAPI, mode: str) -> Call:
    async def call(i: int) -> None:
        status = await asgi_post(app, "/v1/rerank", json.dumps(payload(i, mode)).encode())
        assert status == 200, status

    return call


async def run(requests: int, redis_url: str | None, online: bool = True, idle_s: float = 0.0) -> dict[str, list[float]]:
    from workers.entry import Worker

    worker = Worker.from_config(bench_worker_config())
    await worker.start()

    async def direct(i: int) -> None:
        body = payload(i, "direct")
        job = Job(kind="rerank", prompt=body["query"], candidates=body["documents"], verifiers=VERIFIERS,
                  aggregator="mean")  # fmt: skip
        result = await worker.run(job)
        assert result.status == "ok", result.error

    learning = OnlineSettings(enabled=online)
    embedded = create_app(Settings(online=learning), worker=worker)
    calls: dict[str, Call] = {
        "direct (worker.run)": direct,
        "embedded (ASGI + in-process queue)": asgi_call(embedded, "e"),
    }
    loop = consumer = None
    distributed = None
    if redis_url:
        prefix = f"weaver-bench-{uuid.uuid4().hex[:8]}"
        loop = RedisWorkerLoop(worker, redis_url, prefix=prefix, heartbeat_interval_s=0.5, block_ms=1000)
        consumer = asyncio.create_task(loop.run())
        await asyncio.sleep(1.0)  # the first heartbeat registers the worker
        distributed = create_app(Settings(redis_url=redis_url, queue=QueueSettings(prefix=prefix),
                                             online=learning), worker=worker)
        calls["redis (ASGI + Streams + worker loop)"] = asgi_call(distributed, "r")
    samples: dict[str, list[float]] = {name: [] for name in calls}
    async with embedded.router.lifespan_context(embedded):
        transport = httpx.ASGITransport(app=embedded)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

            async def through_client(i: int) -> None:
                response = await client.post("/v1/rerank", json=payload(i, "h"))
                assert response.status_code == 200, response.text

            calls["embedded + in-process httpx client"] = through_client
            samples["embedded + in-process httpx client"] = []
            lifespan = distributed.router.lifespan_context(distributed) if distributed else None
            if lifespan is not None:
                await lifespan.__aenter__()
            for i in range(-20, requests):  # 20 warm-up rounds
                for name, call in calls.items():
                    if idle_s:
                        await asyncio.sleep(idle_s)  # untimed: the service idles as between sparse requests
                    start = time.perf_counter()
                    await call(i)
                    if i >= 0:
                        samples[name].append(time.perf_counter() - start)
            if lifespan is not None:
                await lifespan.__aexit__(None, None, None)
    if loop is not None and consumer is not None:
        loop.stop()
        await consumer
    await worker.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--redis-url", default=os.environ.get("WEAVER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--verifiers", default=",".join(VERIFIERS), help="comma-separated verifier names")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio",
                        help="event loop (uvicorn runs on uvloop when it is installed)")
    parser.add_argument("--no-online", action="store_true",
                        help="online learning off (as served it is on: every answer is logged for refits)")
    parser.add_argument("--idle-ms", type=float, default=0.0,
                        help="idle gap before each request (untimed): latency at low load, where each process or "
                             "thread hop may first have to wake up")
    args = parser.parse_args()
    VERIFIERS[:] = args.verifiers.split(",")
    if args.loop == "uvloop":  # what uvicorn picks when uvloop is installed (its loop="auto")
        import uvloop

        uvloop.install()
    samples = asyncio.run(run(args.requests, None if args.no_redis else args.redis_url, online=not args.no_online,
                              idle_s=args.idle_ms / 1000))
    base_name = next(iter(samples))
    base_median = statistics.median(samples[base_name])
    base_mean = statistics.fmean(samples[base_name])
    print(f"rerank, 4 documents, verifiers {'+'.join(VERIFIERS)}, {args.requests} sequential requests per mode, "
          f"interleaved, online learning {'off' if args.no_online else 'on'}"
          + (f", {args.idle_ms:g} ms idle before each" if args.idle_ms else "") + "\n")  # fmt: skip
    print("| mode | median ms | mean ms | p95 ms | overhead (median) | overhead (mean) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, values in samples.items():
        ms = sorted(v * 1000 for v in values)
        median, mean = statistics.median(ms), statistics.fmean(ms)
        if name == base_name:
            over_median = over_mean = "-"
        else:
            over_median = f"{median / (base_median * 1000) - 1:+.1%}"
            over_mean = f"{mean / (base_mean * 1000) - 1:+.1%}"
        p95 = ms[int(len(ms) * 0.95)]
        print(f"| {name} | {median:.3f} | {mean:.3f} | {p95:.3f} | {over_median} | {over_mean} |")


if __name__ == "__main__":
    main()
