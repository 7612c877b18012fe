"""Schemathesis over the running service's own OpenAPI schema: no 5xx, every error in the OpenAI shape.

The service is the real embedded stack under uvicorn: the worker with the cheap verifiers (plus the
code_tests sandbox) and a tiny random generator, so every request, valid or not, runs the real code path.
Hypothesis generates positive and negative (schema-violating) bodies; the budget is a few hundred requests
per POST endpoint. A final check asserts the service is still live and ready afterwards.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from service.app import create_app
from service.settings import LimitSettings, QueueSettings, Settings
from tests.reliability.harness import live_server, write_worker_config

pytestmark = pytest.mark.slow

POST_EXAMPLES = 300  # per POST endpoint (positive and negative bodies mixed)
GET_EXAMPLES = 15
SEEN: Counter[tuple[str, int]] = Counter()  # (path, status class) of every fuzzed response


@pytest.fixture(scope="module")
def base_url(tiny_generator_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = write_worker_config(tmp_path_factory.mktemp("fuzz") / "worker.yaml", generator_dir=tiny_generator_dir)
    service_settings = Settings(
        worker_config=config, request_timeout_s=60,
        limits=LimitSettings(max_candidates=3, max_tokens=6, max_chars=4000, max_body_bytes=64_000),
        queue=QueueSettings(max_depth=64, concurrency=4),
    )
    with live_server(create_app(service_settings)) as url:
        yield url


# The schema the service serves at /openapi.json, built from the app object (no lifespan runs at import).
# It is loaded here rather than from a fixture because schemathesis' lazy fixture loader fails on pytest 9.
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())


def openai_error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx/5xx body is exactly ``{"error": {"message", "type", "param", "code"}}`` with a message."""
    if response.status_code < 400:
        return None
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, f"not the OpenAI error shape: {body!r}"
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, f"error fields: {sorted(error)}"
    assert isinstance(error["message"], str) and error["message"], "empty error message"
    assert isinstance(error["type"], str) and error["type"], "empty error type"
    return True


def _fuzz(case: Any, base_url: str) -> None:
    served_model_paths = ("/v1/chat/completions", "/v1/rerank", "/v2/rerank", "/rerank")
    if case.path in served_model_paths and isinstance(case.body, dict) and isinstance(case.body.get("model"), str):
        case.body["model"] = "weaver"  # a random model id is always 404: name the served one to reach the work
    response = case.call(base_url=base_url, timeout=120)
    SEEN[(case.path, response.status_code // 100)] += 1
    if case.path == "/readyz" and response.status_code == 503:  # readiness answers with its own body
        return
    case.validate_response(response, checks=[not_a_server_error, openai_error_shape])


@schema.include(method="POST").parametrize()
@settings(max_examples=POST_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_post_endpoints_never_5xx_and_errors_are_openai_shaped(case: Any, base_url: str) -> None:
    _fuzz(case, base_url)


@schema.include(method="GET").parametrize()
@settings(max_examples=GET_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_get_endpoints_never_5xx(case: Any, base_url: str) -> None:
    _fuzz(case, base_url)


def test_service_is_healthy_after_fuzzing(base_url: str) -> None:
    """Runs after the fuzz tests in this module (file order): still live, ready, and answering real work."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        rerank = client.post("/v1/rerank", json={"query": "2+2?", "documents": ["#### 4", "#### 5", "#### 4"],
                                                "verification": {"profile": "cheap", "aggregator": "mean"}})
        assert rerank.status_code == 200, rerank.text
        assert rerank.json()["results"][0]["index"] in (0, 2)
        chat = client.post("/v1/chat/completions", json={"model": "weaver", "max_tokens": 4, "n": 1,
                                                         "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["role"] == "assistant"
    if SEEN:  # the fuzz tests ran in this session: they reached both the success and the error paths
        for path in ("/v1/chat/completions", "/v1/rerank"):
            assert SEEN[(path, 2)] >= 10 and SEEN[(path, 4)] >= 10, dict(SEEN)
            assert SEEN[(path, 2)] + SEEN[(path, 4)] >= 200, dict(SEEN)
        assert not [key for key in SEEN if key[1] == 5], dict(SEEN)
