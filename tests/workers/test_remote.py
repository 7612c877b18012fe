"""Remote verifiers against a real HTTP server started in the test (no mocking library)."""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from workers.batching import VerifierBatcher
from workers.verifiers.base import PairItem
from workers.verifiers.lm_judge import LMJudgeVerifier
from workers.verifiers.remote import RemoteVerifier


class VerifierServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.failures_left = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def quality(text: str) -> float:
    """The 'model' this server runs: candidates saying 'correct' are good ones."""
    return 0.9 if "correct" in text else 0.1


class Handler(BaseHTTPRequestHandler):
    server: VerifierServer

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError):  # the client timed out first (the timeout test)
            self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        path = self.path
        with self.server.lock:
            self.server.requests.append((path, body))
            if path.startswith("/flaky"):
                if self.server.failures_left > 0:
                    self.server.failures_left -= 1
                    self._send(503, {"error": "warming up"})
                    return
                path = path[len("/flaky"):]
        if path.startswith("/slow"):
            time.sleep(2.0)
            path = path[len("/slow"):]
        if path == "/bad/score":
            self._send(400, {"error": {"message": "bad request"}})
        elif path == "/score":
            data = [{"index": i, "score": quality(t)} for i, t in enumerate(body["text_2"])]
            self._send(200, {"data": data})
        elif path == "/classify":
            self._send(200, {"data": [{"index": i, "probs": [1 - quality(t), quality(t)]}
                                      for i, t in enumerate(body["input"])]})
        elif path == "/pooling":
            self._send(200, {"data": [{"index": i, "data": [quality(t) * 10]} for i, t in enumerate(body["input"])]})
        elif path == "/rerank":
            ranked = sorted(({"index": i, "score": quality(t)} for i, t in enumerate(body["texts"])),
                            key=lambda r: -r["score"])
            self._send(200, ranked)
        elif path == "/chat/completions":
            text = body["messages"][-1]["content"]
            good = quality(text.split("<solution>")[1].split("</solution>")[0])
            top = [{"token": "Yes", "logprob": math.log(good * 0.8)},
                   {"token": "No", "logprob": math.log((1 - good) * 0.8)}, {"token": "The", "logprob": math.log(0.2)}]
            self._send(200, {"choices": [{"message": {"content": "Yes"}, "logprobs": {"content": [
                {"token": top[0]["token"], "logprob": top[0]["logprob"], "top_logprobs": top}]}}]})
        else:
            self._send(404, {"error": "no route"})


@pytest.fixture
def server() -> Iterator[VerifierServer]:
    srv = VerifierServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


ITEMS = [PairItem("q1", "this is correct"), PairItem("q1", "nope"), PairItem("q2", "also correct")]


@pytest.mark.parametrize(("protocol", "expected"), [
    ("vllm_score", [0.9, 0.1, 0.9]), ("vllm_classify", [0.9, 0.1, 0.9]), ("vllm_pooling", [9.0, 1.0, 9.0]),
    ("tei_rerank", [0.9, 0.1, 0.9]),
])
async def test_protocols(server: VerifierServer, protocol: str, expected: list[float]) -> None:
    verifier = RemoteVerifier("remote", base_url=server.url, protocol=protocol, model="m")  # type: ignore[arg-type]
    scores = await verifier.score(ITEMS)
    assert scores == pytest.approx(expected)
    paths = [p for p, _ in server.requests]
    # one request per batch (TEI: one per distinct prompt)
    assert len(paths) == (2 if protocol == "tei_rerank" else 1)
    assert all(body.get("model") == "m" for _, body in server.requests)
    await verifier.aclose()


async def test_openai_judge_reads_yes_no_logprobs(server: VerifierServer) -> None:
    verifier = RemoteVerifier("judge", base_url=server.url, protocol="openai_judge", model="judge-model")
    scores = await verifier.score(ITEMS)
    assert scores == pytest.approx([0.9, 0.1, 0.9])
    body = server.requests[0][1]
    assert body["logprobs"] is True and body["max_tokens"] == 1
    await verifier.aclose()
    judge = LMJudgeVerifier("judge", model="judge-model", backend="openai", base_url=server.url)
    assert await judge.score(ITEMS[:1]) == pytest.approx([0.9])
    await judge.aclose()


async def test_retries_with_backoff_on_503(server: VerifierServer) -> None:
    server.failures_left = 2
    verifier = RemoteVerifier("r", base_url=server.url + "/flaky", retries=3, backoff_s=0.01)
    assert await verifier.score(ITEMS[:1]) == pytest.approx([0.9])
    assert len(server.requests) == 3
    await verifier.aclose()


async def test_client_errors_are_not_retried_and_become_nan_in_the_batcher(server: VerifierServer) -> None:
    verifier = RemoteVerifier("r", base_url=server.url + "/bad", retries=3, backoff_s=0.01)
    batcher = VerifierBatcher(verifier)
    outcomes = await batcher.submit(ITEMS[:1])
    assert outcomes[0].value is None and "400" in (outcomes[0].error or "")
    assert len(server.requests) == 1
    await batcher.close()
    await verifier.aclose()


async def test_request_timeout_yields_an_error(server: VerifierServer) -> None:
    verifier = RemoteVerifier("r", base_url=server.url + "/slow", retries=1, backoff_s=0.01, request_timeout_s=0.3)
    batcher = VerifierBatcher(verifier)
    start = time.perf_counter()
    outcomes = await batcher.submit(ITEMS[:2])
    assert all(o.value is None and "Timeout" in (o.error or "") for o in outcomes)
    assert time.perf_counter() - start < 3.0
    await batcher.close()
    await verifier.aclose()


async def test_concurrent_jobs_share_http_batches(server: VerifierServer) -> None:
    import asyncio

    verifier = RemoteVerifier("r", base_url=server.url, max_batch_size=64, max_wait_ms=20)
    batcher = VerifierBatcher(verifier)
    results = await asyncio.gather(*(batcher.submit([PairItem(f"q{j}", f"cand {j} correct")]) for j in range(20)))
    assert all(r[0].value == pytest.approx(0.9) for r in results)
    assert len(server.requests) < 20
    await batcher.close()
    await verifier.aclose()
