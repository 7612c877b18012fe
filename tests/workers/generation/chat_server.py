"""A small but real OpenAI-compatible chat-completions server for tests (FastAPI + uvicorn on a free port).

Its behaviour is configurable to imitate the servers the openai backend meets: ones that honour ``n``,
ignore it or reject it, fail transiently (503/429 with Retry-After), hang, or refuse ``logprobs``.
A completion is a deterministic function of (seed, choice index): words drawn from a fixed list, one word
per "token", so token counts can be checked exactly.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

WORDS = ["alpha", "beta", "gamma", "delta", "seven", "eight", "nine", "the", "answer", "is"]


@dataclass
class Behaviour:
    honour_n: bool = True  # False: always one choice, like servers that ignore n
    reject_n: bool = False  # True: HTTP 400 when n > 1
    fail_first: int = 0  # the first K chat requests fail with fail_status
    fail_status: int = 503
    retry_after: float | None = None
    fail_seeds: set[int] = field(default_factory=set)  # requests with these seeds always fail (HTTP 500)
    delay_s: float = 0.0
    refuse_logprobs: bool = False  # HTTP 400 when logprobs are requested
    api_key: str | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)  # chat bodies received, in order
    request_times: list[float] = field(default_factory=list)
    disconnects: int = 0  # requests whose client hung up during delay_s


def completion_words(seed: int | None, index: int) -> list[str]:
    rng = random.Random(f"{seed}-{index}" if seed is not None else None)
    return [rng.choice(WORDS) for _ in range(rng.randint(3, 12))]


def build_app(behaviour: Behaviour) -> FastAPI:
    app = FastAPI()

    def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        body = {"error": {"message": message, "type": "invalid_request_error" if status < 500 else "server_error",
                          "param": None, "code": None}}
        return JSONResponse(body, status_code=status, headers=headers)

    def authorised(request: Request) -> bool:
        return behaviour.api_key is None or request.headers.get("authorization") == f"Bearer {behaviour.api_key}"

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        if not authorised(request):
            return error(401, "invalid api key")
        return JSONResponse({"object": "list", "data": [{"id": "tiny", "object": "model"}]})

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        if not authorised(request):
            return error(401, "invalid api key")
        body = await request.json()
        behaviour.requests.append(body)
        behaviour.request_times.append(time.monotonic())
        if len(behaviour.requests) <= behaviour.fail_first:
            headers = {"Retry-After": str(behaviour.retry_after)} if behaviour.retry_after is not None else None
            return error(behaviour.fail_status, "temporarily overloaded", headers)
        if body.get("seed") in behaviour.fail_seeds:
            return error(500, "this replica is broken")
        n = int(body.get("n", 1))
        if behaviour.reject_n and n > 1:
            return error(400, "n must be 1 for this model")
        if behaviour.refuse_logprobs and body.get("logprobs"):
            return error(400, "logprobs are not supported")
        if behaviour.delay_s:
            until = time.monotonic() + behaviour.delay_s
            while time.monotonic() < until:  # like a real engine: notice a client that hung up, stop work
                if await request.is_disconnected():
                    behaviour.disconnects += 1
                    return error(499, "client closed the request")
                await asyncio.sleep(0.02)
        choices, completion_tokens = [], 0
        for index in range(n if behaviour.honour_n else 1):
            words = completion_words(body.get("seed"), index)
            finish = "stop"
            if len(words) > body.get("max_tokens", 1 << 30):
                words, finish = words[: body["max_tokens"]], "length"
            for position, word in enumerate(words):
                if word in (body.get("stop") or []):
                    words, finish = words[: position + 1], "stop"
                    break
            text = " ".join(words)
            for stop in body.get("stop") or []:
                text = text.split(stop)[0] if stop in text else text
            choice: dict[str, Any] = {"index": index, "message": {"role": "assistant", "content": text},
                                      "finish_reason": finish}
            if body.get("logprobs"):
                choice["logprobs"] = {"content": [{"token": w, "logprob": -1.0, "top_logprobs": []} for w in words]}
            choices.append(choice)
            completion_tokens += len(words)
        prompt_tokens = sum(len(m["content"].split()) + 4 for m in body["messages"])
        return JSONResponse({
            "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
            "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })

    return app


@contextmanager
def serve(behaviour: Behaviour) -> Iterator[str]:
    """Run the app on 127.0.0.1:<free port> in a thread; yields the base URL (ending in /v1)."""
    server = uvicorn.Server(uvicorn.Config(build_app(behaviour), host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test chat server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
