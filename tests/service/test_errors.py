"""Every error the API can answer, with its status and OpenAI-shaped body.

These use a small fake worker (instant, deterministic) because they test the gateway's checks and the
queue's failure paths, not verification; the acceptance tests use the real worker.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from service.settings import LimitSettings, QueueSettings, Settings
from tests.service.gateway_fakes import FakeWorker
from tests.service.gateway_support import app_client, assert_error, free_port

CHAT = {"model": "weaver", "messages": [{"role": "user", "content": "What is 2+2?"}]}
RERANK = {"query": "What is 2+2?", "documents": ["4", "5"]}


async def test_invalid_bodies_are_400_in_openai_shape() -> None:
    async with app_client(Settings(), worker=FakeWorker()) as client:
        error = assert_error(await client.post("/v1/rerank", json={"documents": ["a"]}), 400, "invalid_value")
        assert error["param"] == "query" and error["type"] == "invalid_request_error"
        error = assert_error(
            await client.post("/v1/rerank", content=b"{not json", headers={"content-type": "application/json"}),
            400,
            "invalid_json",
        )
        error = assert_error(await client.post("/v1/chat/completions", json={**CHAT, "messages": []}), 400)
        assert error["param"] == "messages"
        no_user = {**CHAT, "messages": [{"role": "system", "content": "be brief"}]}
        assert "user message" in assert_error(await client.post("/v1/chat/completions", json=no_user), 400)["message"]
        both = {**RERANK, "verification": {"verifiers": ["length"], "profile": "cheap"}}
        assert "not both" in assert_error(await client.post("/v1/rerank", json=both), 400)["message"]
        bad_agg = {**RERANK, "verification": {"aggregator": "oracle"}}
        assert assert_error(await client.post("/v1/rerank", json=bad_agg), 400)["param"] == "verification.aggregator"
        too_many_n = {**CHAT, "n": 3, "verification": {"n_candidates": 2}}
        assert assert_error(await client.post("/v1/chat/completions", json=too_many_n), 400)["param"] == "n"


async def test_unknown_verifier_lists_the_available_ones() -> None:
    async with app_client(Settings(), worker=FakeWorker()) as client:
        body = {**RERANK, "verification": {"verifiers": ["length", "oracle"]}}
        error = assert_error(await client.post("/v1/rerank", json=body), 400, "unknown_verifier")
        assert error["param"] == "verification.verifiers"
        assert "'oracle'" in error["message"] and "available: length, echo" in error["message"]
        body = {**CHAT, "verification": {"profile": "gold"}}
        error = assert_error(await client.post("/v1/chat/completions", json=body), 400, "unknown_profile")
        assert "available: cheap" in error["message"]


async def test_limits_are_enforced_before_any_work() -> None:
    limits = LimitSettings(max_candidates=3, max_chars=50, max_verifiers=1, max_tokens=64)
    worker = FakeWorker()
    async with app_client(Settings(limits=limits), worker=worker) as client:
        cases = [
            ("/v1/chat/completions", {**CHAT, "verification": {"n_candidates": 4}}, "verification.n_candidates"),
            ("/v1/rerank", {**RERANK, "documents": ["a", "b", "c", "d"]}, "documents"),
            ("/v1/rerank", {**RERANK, "documents": ["x" * 60]}, "documents"),
            ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": "y" * 51}]}, "messages"),
            ("/v1/rerank", {**RERANK, "verification": {"verifiers": ["length", "echo"]}}, "verification.verifiers"),
            ("/v1/chat/completions", {**CHAT, "max_tokens": 65}, "max_tokens"),
        ]
        for path, body, param in cases:
            error = assert_error(await client.post(path, json=body), 400, "limit_exceeded")
            assert error["param"] == param
    assert worker.runs == []  # nothing reached the worker


async def test_unknown_model_is_404() -> None:
    async with app_client(Settings(), worker=FakeWorker()) as client:
        error = assert_error(await client.post("/v1/chat/completions", json={**CHAT, "model": "gpt-9"}), 404)
        assert error["code"] == "model_not_found" and "available: weaver" in error["message"]


async def test_oversized_body_is_413_declared_or_streamed() -> None:
    async with app_client(Settings(limits=LimitSettings(max_body_bytes=200)), worker=FakeWorker()) as client:
        big = {**RERANK, "documents": ["z" * 300]}
        assert_error(await client.post("/v1/rerank", json=big), 413, "body_too_large")

        async def chunks():  # no Content-Length: counted while it streams in
            yield b'{"query": "q", "documents": ["'
            for _ in range(10):
                yield b"z" * 50
            yield b'"]}'

        response = await client.post("/v1/rerank", content=chunks(), headers={"content-type": "application/json"})
        assert_error(response, 413, "body_too_large")
        assert (await client.post("/v1/rerank", json=RERANK)).status_code == 200


async def test_api_keys_401_and_ops_endpoints() -> None:
    settings = Settings(api_keys="k-one, k-two")
    async with app_client(settings, worker=FakeWorker()) as client:
        error = assert_error(await client.post("/v1/rerank", json=RERANK), 401, "invalid_api_key")
        assert error["type"] == "authentication_error" and "missing" in error["message"]
        wrong = await client.post("/v1/rerank", json=RERANK, headers={"Authorization": "Bearer k-three"})
        assert "invalid" in assert_error(wrong, 401)["message"]
        assert "k-three" not in wrong.text
        assert_error(await client.get("/v1/models", headers={"Authorization": "Bearer "}), 401)
        ok = await client.post("/v1/rerank", json=RERANK, headers={"Authorization": "Bearer k-two"})
        assert ok.status_code == 200
        assert (await client.post("/v1/rerank", json=RERANK, headers={"X-API-Key": "k-one"})).status_code == 200
        assert (await client.get("/healthz")).status_code == 200  # open by default
        assert (await client.get("/metrics")).status_code == 200
    async with app_client(Settings(api_keys="k", protect_ops_endpoints=True), worker=FakeWorker()) as client:
        assert_error(await client.get("/metrics"), 401)
        assert_error(await client.get("/readyz"), 401)
        assert (await client.get("/healthz", headers={"Authorization": "Bearer k"})).status_code == 200


async def test_api_keys_file(tmp_path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# mounted secret\nfile-key\n\n")
    async with app_client(Settings(api_keys_file=keys), worker=FakeWorker()) as client:
        assert_error(await client.post("/v1/rerank", json=RERANK), 401)
        ok = await client.post("/v1/rerank", json=RERANK, headers={"Authorization": "Bearer file-key"})
        assert ok.status_code == 200


async def test_rate_limit_is_429_with_retry_after() -> None:
    async with app_client(Settings(api_keys="a,b", rate_limit_per_minute=2), worker=FakeWorker()) as client:
        a = {"Authorization": "Bearer a"}
        for _ in range(2):
            assert (await client.post("/v1/rerank", json=RERANK, headers=a)).status_code == 200
        response = await client.post("/v1/rerank", json=RERANK, headers=a)
        assert_error(response, 429, "rate_limit_exceeded")
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        other = await client.post("/v1/rerank", json=RERANK, headers={"Authorization": "Bearer b"})
        assert other.status_code == 200  # limits are per key


async def test_full_queue_is_429_with_retry_after() -> None:
    settings = Settings(queue=QueueSettings(max_depth=2, concurrency=1, retry_after_s=3))
    worker = FakeWorker(delay_s=0.5)
    async with app_client(settings, worker=worker) as client:
        responses = await asyncio.gather(*(client.post("/v1/rerank", json=RERANK) for _ in range(5)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200, 200, 429, 429, 429], statuses
        rejected = next(r for r in responses if r.status_code == 429)
        assert_error(rejected, 429, "queue_full")
        assert rejected.headers["Retry-After"] == "3"
    assert len(worker.runs) == 2


class SlowToStopWorker(FakeWorker):
    """Finishes its current step before it honours a cancellation, as a stage inside a batch does. The first
    job then holds the only slot well past the queued jobs' deadlines: with a worker that stops at once, the
    next job is dequeued when the first is cancelled, a few milliseconds before its own (nearly equal)
    deadline, and may legitimately start."""

    async def pause(self) -> None:
        step = asyncio.ensure_future(asyncio.sleep(self.delay_s))
        try:
            await asyncio.shield(step)
        except asyncio.CancelledError:
            await step
            raise


async def test_deadline_is_504_and_expired_jobs_do_not_run() -> None:
    settings = Settings(request_timeout_s=0.3, queue=QueueSettings(concurrency=1))
    worker = SlowToStopWorker(delay_s=0.6)
    async with app_client(settings, worker=worker) as client:
        responses = await asyncio.gather(*(client.post("/v1/rerank", json=RERANK) for _ in range(3)))
        for response in responses:
            assert_error(response, 504, "deadline_exceeded")
        await asyncio.sleep(0.7)
    assert len(worker.runs) == 1  # the two queued behind it expired and were never run


async def test_worker_job_error_is_reported() -> None:
    class FailingWorker(FakeWorker):
        async def run(self, job):  # type: ignore[no-untyped-def]
            raise RuntimeError("generator crashed")

    async with app_client(Settings(), worker=FailingWorker()) as client:
        error = assert_error(await client.post("/v1/chat/completions", json=CHAT), 500, "worker_error")
        assert "generator crashed" in error["message"] and error["type"] == "worker_error"


async def test_not_ready_worker_is_named_by_readyz_and_requests_get_503() -> None:
    worker = FakeWorker(ready=False, errors={"lm_judge": "model file missing"})
    worker.available_verifiers = lambda: []  # type: ignore[method-assign]
    async with app_client(Settings(), worker=worker) as client:
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["not_ready"] == {"lm_judge": "model file missing"}
        error = assert_error(await client.post("/v1/rerank", json=RERANK), 503, "not_ready")
        assert "lm_judge: model file missing" in error["message"]


async def test_redis_down_is_503_and_readyz_names_the_queue() -> None:
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    async with app_client(settings) as client:
        error = assert_error(await client.post("/v1/rerank", json=RERANK), 503)
        assert error["type"] == "service_unavailable"
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and "queue" in ready.json()["not_ready"]
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200


async def test_unknown_route_and_method_use_the_error_shape() -> None:
    async with app_client(Settings(), worker=FakeWorker()) as client:
        assert_error(await client.get("/v1/nothing"), 404)
        assert_error(await client.get("/v1/rerank"), 405)


@pytest.mark.parametrize("path", ["/docs", "/openapi.json"])
async def test_openapi_is_served(path: str) -> None:
    async with app_client(Settings(), worker=FakeWorker()) as client:
        response: httpx.Response = await client.get(path)
        assert response.status_code == 200
        if path == "/openapi.json":
            assert "/v1/chat/completions" in response.json()["paths"]


async def test_metrics_count_requests_and_export_worker_counters() -> None:
    async with app_client(Settings(), worker=FakeWorker()) as client:
        assert (await client.post("/v1/rerank", json=RERANK)).status_code == 200
        assert_error(await client.post("/v1/rerank", json={}), 400)
        text = (await client.get("/metrics")).text
    assert 'weaver_requests_total{aggregator="weaver",endpoint="rerank",status="200"}' in text
    assert 'weaver_requests_total{aggregator="",endpoint="rerank",status="400"}' in text
    assert 'weaver_verifier_items_total{verifier="length",worker="embedded"} 7.0' in text
    assert 'weaver_verifier_cache_misses_total{verifier="length",worker="embedded"} 4.0' in text
    assert "weaver_queue_depth 0.0" in text and "weaver_verifier_duration_seconds_bucket" in text


@pytest.mark.parametrize(("error_type", "status", "code"), [
    ("invalid_request_error", 400, "invalid_request_error"), ("unknown_profile", 400, "unknown_profile"),
    ("timeout_error", 504, "deadline_exceeded"), ("deadline_exceeded", 504, "deadline_exceeded"),
    ("service_unavailable", 503, "service_unavailable"), ("generation_error", 500, "generation_error"),
    (None, 500, "worker_error"),
])
def test_job_errors_map_to_statuses_by_an_explicit_table(error_type: str | None, status: int, code: str) -> None:
    """A kind the table does not know is the worker's fault (500), never guessed from its spelling."""
    from service.errors import job_error

    error = job_error(error_type, "message")
    assert (error.status, error.info.code) == (status, code)
