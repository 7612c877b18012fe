"""Acceptance: the embedded service (gateway + worker in one process, CPU) with the REAL default models
(SmolLM2-135M generator, the CPU verifier set), driven by the official ``openai`` client and plain HTTP."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from service.app import create_app
from service.settings import LimitSettings, Settings
from tests.service.gateway_support import free_port

pytestmark = pytest.mark.slow
openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    import uvicorn

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    port = free_port()
    settings = Settings(port=port, request_timeout_s=300, limits=LimitSettings(max_tokens=256))
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 300
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "embedded service did not start"
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(60)


def check_diagnostics(verification: dict, n: int, must_score: bool = True) -> None:
    assert verification["verifiers"], "no verifier diagnostics"
    for diag in verification["verifiers"]:
        assert len(diag["raw"]) == n and len(diag["normalized"]) == n and len(diag["vote"]) == n, diag
        assert diag["latency_s"] >= 0 and diag["name"] and diag["version"]
        if must_score and diag["error"] is None:  # inputs every verifier can score (numeric answers)
            assert any(v is not None for v in diag["raw"]), diag
    assert 0 <= verification["selected_index"] < n
    confidence = verification["confidence"]
    if confidence is None:  # the default config has no fitted Weaver model: a cold start, said so
        assert "cold start" in verification["note"], verification["note"]
    else:
        assert 0.0 <= confidence <= 1.0
    assert verification["aggregator"] and verification["aggregator_version"] is not None


def test_chat_with_the_openai_client(base_url: str) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=300)
    models = [m.id for m in client.models.list().data]
    assert "weaver" in models
    completion = client.chat.completions.create(
        model="weaver",
        messages=[{"role": "user", "content": "What is 12 + 30? Answer with the number."}],
        max_tokens=24,
        temperature=0.8,
        n=2,
        extra_body={"verification": {"n_candidates": 2, "return_candidates": True}},
    )
    assert len(completion.choices) == 2
    assert completion.choices[0].message.role == "assistant"
    assert isinstance(completion.choices[0].message.content, str)
    verification = completion.model_extra["verification"]
    check_diagnostics(verification, 2, must_score=False)  # a sampled answer may carry no number to check
    by_name = {d["name"]: d for d in verification["verifiers"]}
    for model_based in ("embedding_consistency", "lm_judge"):  # these score any text
        assert by_name[model_based]["error"] is None and None not in by_name[model_based]["raw"], by_name[model_based]
    names = set(by_name)
    assert names == {"answer_agreement", "math_check", "embedding_consistency", "lm_judge"}  # the default profile
    candidates = sorted(verification["candidates"], key=lambda c: c["rank"])
    assert len(candidates) == 2 and [c["rank"] for c in candidates] == [0, 1]
    assert all(math.isfinite(c["score"]) for c in candidates)
    assert candidates[0]["index"] == verification["selected_index"]
    assert completion.choices[0].message.content == candidates[0]["text"]
    assert completion.choices[1].message.content == candidates[1]["text"]
    assert verification["generation"]["requested"] == 2
    # usage counts every sampled token, not only the returned choices
    assert completion.usage.completion_tokens == sum(c["completion_tokens"] for c in candidates) > 0
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_streaming_with_the_openai_client(base_url: str) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=300)
    stream = client.chat.completions.create(
        model="weaver",
        messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"verification": {"n_candidates": 2, "profile": "cheap"}},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason in ("stop", "length")
    verification = finals[0].model_extra["verification"]
    check_diagnostics(verification, 2, must_score=False)  # a colour has no answer to agree on: abstentions
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert text.strip(), "streamed no content"


def test_min_confidence_gives_an_explicit_abstention(base_url: str) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=300)
    completion = client.chat.completions.create(
        model="weaver",
        messages=[{"role": "user", "content": "What is 2 + 2?"}],
        max_tokens=16,
        extra_body={
            "verification": {"n_candidates": 2, "min_confidence": 1.0, "profile": "cheap", "return_candidates": True}
        },
    )
    verification = completion.model_extra["verification"]
    selected = next(c for c in completion.model_extra["verification"]["candidates"] if c["rank"] == 0)
    if (verification["confidence"] or selected["score"]) < 1.0:
        assert verification["abstained"] is True
        assert completion.choices[0].message.content is None
        assert "abstained" in completion.choices[0].message.refusal
    else:  # every candidate passed every check: not an abstention
        assert verification["abstained"] is False


def test_rerank_over_http(base_url: str) -> None:
    body = {
        "query": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May?",
        "documents": [
            "In May she sold 48 / 2 = 24 clips. Altogether 48 + 24 = 72. The answer is 72.",
            {"text": "She sold 48 + 24 = 72 clips in total. #### 72"},
            "48 * 2 = 96, so the answer is 96.",
            "The answer is 50.",
        ],
        "top_n": 3,
        "return_documents": True,
    }
    response = httpx.post(f"{base_url}/v1/rerank", json=body, timeout=300)
    assert response.status_code == 200, response.text
    data = response.json()
    assert len(data["results"]) == 3
    scores = [r["relevance_score"] for r in data["results"]]
    assert scores == sorted(scores, reverse=True)
    assert {data["results"][0]["index"], data["results"][1]["index"]} == {0, 1}  # the two agreeing right answers
    assert data["results"][0]["document"]["text"]
    verification = data["verification"]
    check_diagnostics(verification, 4)
    names = {d["name"] for d in verification["verifiers"]}
    verifiers = httpx.get(f"{base_url}/v1/verifiers").json()
    assert names == set(verifiers["profiles"]["cpu-default"])  # the default profile ran, every verifier reported
    assert verification["generation"] is None
    metrics = httpx.get(f"{base_url}/metrics").text
    assert 'weaver_requests_total{aggregator="weaver",endpoint="rerank",status="200"}' in metrics
    assert "weaver_verifier_duration_seconds_bucket" in metrics
    assert 'weaver_verifier_items_total{verifier="lm_judge",worker="cpu-worker' in metrics
    assert httpx.get(f"{base_url}/readyz").json()["ready"] is True
