"""Abandoned work stops, in both modes (embedded server; Redis gateway + a real worker process).

A tiny random Llama generates (only the code path matters). "Stopped" is measured, not assumed: the CPU
time of the process that generates, over a window after the event, against a window while it worked.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from service.settings import Settings
from tests.lifecycle.lifecycle_support import Deployment, deployment, metric, worker_config
from tests.support import REDIS_URL, free_port, redis_or_skip
from tests.workers.generation.conftest import build_tiny_model
from workers.queue.keys import QueueKeys

pytestmark = pytest.mark.slow
TIMEOUT_S = 4  # the deployments' request deadline
TEARDOWN_S = 10.0  # process exit after the grace period (torch, Redis, a loaded box); the job itself runs longer
LONG = 4000  # max_tokens of a request that would run for a minute (the deployments allow it)


def chat_body(max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {
        "model": "weaver",
        "messages": [{"role": "user", "content": "count to a thousand"}],
        "max_tokens": max_tokens,
        "temperature": 1.0,
        "verification": {"n_candidates": 8, **extra},
    }


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("lifecycle")
    model = build_tiny_model(tmp / "tiny", context=4096)
    never_ending(model)
    return worker_config(tmp / "worker.yaml", model)


def never_ending(model: Path) -> None:
    """Suppress EOS, so every candidate runs to max_tokens: the long jobs here are long for sure."""
    from transformers import GenerationConfig

    generation = GenerationConfig.from_pretrained(str(model))
    generation.suppress_tokens = [*generation.suppress_tokens, generation.eos_token_id]
    generation.save_pretrained(str(model))


@pytest.fixture(scope="module", params=["embedded", "redis"])
def served(
    request: pytest.FixtureRequest, config: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    mode = request.param
    redis_url = redis_or_skip(REDIS_URL) if mode == "redis" else None
    prefix = f"weaver-lifecycle-{uuid.uuid4().hex[:8]}"
    tmp = tmp_path_factory.mktemp(f"served-{mode}")
    with deployment(
        mode, config, free_port(), tmp, redis_url=redis_url, prefix=prefix, WEAVER_REQUEST_TIMEOUT_S=str(TIMEOUT_S)
    ) as dep:
        yield dep
    if redis_url:
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)


def in_flight(dep: Deployment) -> int:
    """Jobs waiting or running: the Redis stream's length, or the embedded queue's busy slots + depth."""
    if dep.redis_url:
        return int(redis.Redis.from_url(dep.redis_url).xlen(QueueKeys(dep.prefix).stream))
    text = dep.metrics()
    return int(metric(text, "weaver_queue_depth") + metric(text, "weaver_worker_busy_slots"))


def post_in_thread(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            response = httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=120)
        except httpx.HTTPError as exc:  # the server went away (SIGTERM tests)
            box["status"], box["body"], box["at"] = None, str(exc), time.monotonic()
            return
        try:
            payload: Any = response.json()
        except ValueError:
            payload = response.text
        box["status"], box["body"], box["at"] = response.status_code, payload, time.monotonic()

    box["thread"] = threading.Thread(target=run)
    box["thread"].start()
    return box


def test_a_job_past_its_deadline_stops_using_cpu(served: Deployment) -> None:
    cancelled_before = metric(served.metrics(), "weaver_jobs_cancelled_total", reason="deadline")
    call = post_in_thread(served.url, chat_body(LONG))
    time.sleep(1.0)
    busy = served.idle_cpu(1.5)  # while the job generates
    call["thread"].join()
    assert call["status"] == 504, call["body"]
    assert call["body"]["error"]["code"] == "deadline_exceeded"
    time.sleep(max(0.0, call["at"] + 1.0 - time.monotonic()))  # 1 s after the 504
    after = served.idle_cpu(1.5)
    assert busy > 0.3, f"precondition: the job kept the generator busy ({busy:.2f} CPU s in 1.5 s)"
    assert after < 0.25 * busy, f"still working after the 504: {after:.2f} CPU s vs {busy:.2f} while generating"
    assert in_flight(served) == 0
    assert metric(served.metrics(), "weaver_jobs_cancelled_total", reason="deadline") == cancelled_before + 1


async def _stream_then_hang_up(url: str, body: dict[str, Any], after_s: float) -> None:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    payload = json.dumps(body).encode()
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    await writer.drain()
    await asyncio.sleep(after_s)
    writer.close()
    await writer.wait_closed()


def test_disconnected_streaming_clients_leave_no_job_running(served: Deployment) -> None:
    metrics = served.metrics()
    before = metric(metrics, "weaver_jobs_cancelled_total", reason="disconnect")
    body = chat_body(LONG, n_candidates=4) | {"stream": True}

    async def twenty() -> None:
        await asyncio.gather(*(_stream_then_hang_up(served.url, body, 0.3) for _ in range(20)))

    asyncio.run(twenty())
    deadline = time.monotonic() + 3.0  # well inside the request deadline: disconnects, not timeouts, ended them
    while in_flight(served) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert in_flight(served) == 0
    assert metric(served.metrics(), "weaver_jobs_cancelled_total", reason="disconnect") == before + 20
    time.sleep(0.5)
    assert served.idle_cpu(1.5) < 0.3


def test_a_retry_with_the_same_idempotency_key_attaches_to_the_running_job(served: Deployment) -> None:
    body = chat_body(32, return_candidates=True)
    headers = {"Idempotency-Key": f"retry-{uuid.uuid4()}"}
    first = post_in_thread(served.url, body, headers)
    time.sleep(0.2)
    retry = post_in_thread(served.url, body, headers)
    first["thread"].join()
    retry["thread"].join()
    assert first["status"] == retry["status"] == 200, (first["body"], retry["body"])
    texts = [[c["text"] for c in call["body"]["verification"]["candidates"]] for call in (first, retry)]
    assert texts[0] == texts[1]  # 8 samples at temperature 1: equal only when they come from one run
    again = httpx.post(f"{served.url}/v1/chat/completions", json=body, headers=headers, timeout=60)
    assert [c["text"] for c in again.json()["verification"]["candidates"]] == texts[0]  # replayed, not rerun
    other = httpx.post(f"{served.url}/v1/chat/completions", json=chat_body(5), headers=headers, timeout=60)
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"


def test_sigterm_during_a_long_generation_exits_within_the_grace_period(
    config: Path, tmp_path: Path
) -> None:
    """Embedded: the port answers at once (/healthz 200, /readyz 503 naming what loads); SIGTERM mid-generation
    exits within the grace period (plus process teardown)."""
    grace = 2.0
    env = {"WEAVER_QUEUE__SHUTDOWN_GRACE_S": str(grace), "WEAVER_REQUEST_TIMEOUT_S": "120"}
    with deployment("embedded", config, free_port(), tmp_path, redis_url=None, prefix="weaver", **env) as dep:
        call = post_in_thread(dep.url, chat_body(LONG))
        time.sleep(1.5)
        assert dep.idle_cpu(0.5) > 0.1, "precondition: generating"
        started = time.monotonic()
        dep.gateway.terminate()
        dep.gateway.wait(grace + 30)
        took = time.monotonic() - started
        call["thread"].join()
    assert took < grace + TEARDOWN_S, f"exit took {took:.1f} s with a {grace} s grace period"
    assert call["status"] != 200, call  # the client got an error or a closed connection, not a hang


def test_redis_worker_sigterm_during_a_long_generation_exits_within_the_grace_period(
    config: Path, tmp_path: Path
) -> None:
    redis_url = redis_or_skip(REDIS_URL)
    grace = 2.0
    prefix = f"weaver-sigterm-{uuid.uuid4().hex[:8]}"
    env = {"WEAVER_QUEUE__SHUTDOWN_GRACE_S": str(grace), "WEAVER_REQUEST_TIMEOUT_S": "60"}
    with deployment("redis", config, free_port(), tmp_path, redis_url=redis_url, prefix=prefix, **env) as dep:
        assert dep.worker is not None
        call = post_in_thread(dep.url, chat_body(LONG))
        time.sleep(1.5)
        assert dep.idle_cpu(0.5) > 0.1, "precondition: generating"
        started = time.monotonic()
        dep.worker.terminate()
        dep.worker.wait(grace + 30)
        took = time.monotonic() - started
        stream = QueueKeys(prefix).stream
        handed_back = redis.Redis.from_url(redis_url).xlen(stream)
        dep.gateway.terminate()
        call["thread"].join()
    assert took < grace + TEARDOWN_S, f"worker exit took {took:.1f} s with a {grace} s grace period"
    assert handed_back == 1  # the client still waits: its job went back to the stream for another worker


def test_readiness_answers_while_models_load(config: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.lifecycle.lifecycle_support import ROOT, stop

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "WEAVER_LOG_LEVEL": "warning"}
    log = (tmp_path / "serve.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--worker-config", str(config)],
        cwd=ROOT, env=env, stdout=log, stderr=log,
    )  # fmt: skip
    seen: list[tuple[int, int, dict[str, Any]]] = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
            except httpx.HTTPError:
                time.sleep(0.05)
                continue
            seen.append((health, ready.status_code, ready.json()))
            if ready.status_code == 200:
                break
            time.sleep(0.05)
        loading = [body for health, status, body in seen if health == 200 and status == 503]
        assert loading, f"the port opened only once everything was loaded: {seen[:3]}"
        assert "loading" in json.dumps(loading[0]["not_ready"])
        assert seen[-1][1] == 200
        if loading:
            chat = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=chat_body(2), timeout=60)
            assert chat.status_code == 200
    finally:
        stop(process)


async def test_a_stop_list_beyond_the_limits_gets_400() -> None:
    from tests.service.gateway_fakes import FakeWorker
    from tests.service.gateway_support import app_client, assert_error

    async with app_client(Settings(), worker=FakeWorker()) as client:
        for stop, ok in [
            ([f"stop-{i}" for i in range(200)], False),
            (["x" * 65], False),
            ([f"{i:02d}" + "y" * 62 for i in range(16)], True),
        ]:
            body = chat_body(8) | {"stop": stop, "verification": {}}
            response = await client.post("/v1/chat/completions", json=body)
            if ok:
                assert response.status_code == 200, response.text
            else:
                error = assert_error(response, 400, "limit_exceeded")
                assert error["param"] == "stop"
