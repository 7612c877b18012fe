"""Locust users for weaver-rerank: /v1/rerank with cheap verifiers and /v1/chat/completions with generation.

Payloads are real GSM8K problems: rerank sends a dev-set problem with its four model-written solutions,
chat sends a training-set question. A response counts as a success only if its body holds what a
client relies on: every document scored, per-verifier diagnostics for every candidate, no verifier error.

Environment:
  WEAVER_DATA_DIR             folder with gsm8k_gpt3_dev.jsonl and gsm8k_train.jsonl (default ../shared/data)
  WEAVER_LOADTEST_PROFILE     verifier profile for rerank (default: cheap)
  WEAVER_LOADTEST_CHAT_PROFILE  verifier profile for chat (default: cheap)
  WEAVER_LOADTEST_CANDIDATES  candidates sampled per chat request (default: 2)
  WEAVER_LOADTEST_MAX_TOKENS  max_tokens per sampled candidate (default: 48)
  WEAVER_LOADTEST_USER_RPS    if set, each user paces itself to this many requests/s (constant_throughput);
                              otherwise users wait 0.5-1.5 s between requests (think time)
  WEAVER_LOADTEST_API_KEY     sent as a Bearer token when set
  WEAVER_LOADTEST_MODEL       model name in chat requests (default: weaver)

Run it headless with ``python -m loadtests.run`` (starts a local service and prints a summary).
"""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path
from typing import Any

from locust import HttpUser, between, constant_throughput, task

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # locust -f runs this file outside the package
from loadtests.payloads import API_KEY, USER_RPS, chat_payloads, diagnostics_problems, rerank_payloads  # noqa: E402


def _pace() -> Any:
    return constant_throughput(float(USER_RPS)) if USER_RPS else between(0.5, 1.5)


class WeaverUser(HttpUser):
    abstract = True
    wait_time = _pace()

    def on_start(self) -> None:
        if API_KEY:
            self.client.headers["Authorization"] = f"Bearer {API_KEY}"


class RerankUser(WeaverUser):
    """Scores a GSM8K problem's four candidate solutions with the cheap verifier profile."""

    payloads: list[dict[str, Any]] = []

    def on_start(self) -> None:
        super().on_start()
        if not RerankUser.payloads:
            RerankUser.payloads = rerank_payloads()

    @task
    def rerank(self) -> None:
        body = random.choice(self.payloads)
        n_docs = len(body["documents"])
        with self.client.post("/v1/rerank", json=body, name="/v1/rerank", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            data = response.json()
            results = data.get("results") or []
            problems = diagnostics_problems(data.get("verification") or {}, n_docs)
            if sorted(r.get("index") for r in results) != list(range(n_docs)):
                problems.append(f"{len(results)} results for {n_docs} documents")
            scores = [r.get("relevance_score") for r in results]
            if any(s is None or not math.isfinite(s) for s in scores):
                problems.append(f"non-finite relevance score in {scores}")
            if problems:
                response.failure("; ".join(problems))
            else:
                response.success()


class ChatUser(WeaverUser):
    """Asks a GSM8K question; the service samples N candidates, verifies them and returns the best."""

    payloads: list[dict[str, Any]] = []

    def on_start(self) -> None:
        super().on_start()
        if not ChatUser.payloads:
            ChatUser.payloads = chat_payloads()

    @task
    def chat(self) -> None:
        body = random.choice(self.payloads)
        name = "/v1/chat/completions"
        with self.client.post("/v1/chat/completions", json=body, name=name, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            data = response.json()
            verification = data.get("verification") or {}
            candidates = verification.get("candidates") or []
            problems = diagnostics_problems(verification, len(candidates))
            if not candidates:
                problems.append("no candidates returned")
            generation = verification.get("generation") or {}
            if generation.get("returned") != len(candidates):
                problems.append(f"generation returned {generation.get('returned')}, {len(candidates)} scored")
            choices = data.get("choices") or []
            if not choices or not isinstance(choices[0].get("message", {}).get("content"), str):
                problems.append("no selected answer in choices[0].message.content")
            if (data.get("usage") or {}).get("completion_tokens", 0) <= 0:
                problems.append("usage.completion_tokens is 0")
            if problems:
                response.failure("; ".join(problems))
            else:
                response.success()
