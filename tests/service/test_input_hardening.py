"""Red-team findings 3, 4 and 8 at the HTTP boundary: lone surrogates are a 400 naming the field, rate limits
bucket by authenticated key or client address, the docs need a key, chat messages are capped, and one
connection cannot hold the server with huge or endless headers."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import httpx
import pytest
import uvicorn

from service.app import create_app
from service.cli.serve import http_limits
from service.settings import LimitSettings, Settings
from tests.service.gateway_fakes import FakeWorker
from tests.service.gateway_support import app_client, assert_error, free_port

SURROGATE_RERANK = b'{"query": "q", "documents": ["fine", "bad \\ud800 text"]}'
SURROGATE_CHAT = b'{"model": "weaver", "messages": [{"role": "user", "content": "hi \\udfff"}]}'


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/rerank", SURROGATE_RERANK, "documents[1]"),
    ("/v1/chat/completions", SURROGATE_CHAT, "messages[0].content"),
])
async def test_a_lone_surrogate_is_a_400_naming_the_field(path: str, body: bytes, field: str) -> None:
    async with app_client(Settings(), worker=FakeWorker()) as client:
        response = await client.post(path, content=body, headers={"content-type": "application/json"})
        error = assert_error(response, 400, "invalid_unicode")
        assert error["param"] == field and field in error["message"]


async def test_a_surrogate_pair_is_ordinary_text() -> None:
    async with app_client(Settings(), worker=FakeWorker()) as client:
        body = b'{"query": "q", "documents": ["smile \\ud83d\\ude00", "plain"]}'
        response = await client.post("/v1/rerank", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 200, response.text


async def test_without_keys_made_up_keys_share_the_client_address_bucket() -> None:
    async with app_client(Settings(rate_limit_per_minute=5), worker=FakeWorker()) as client:
        statuses = [(await client.get("/v1/models", headers={"X-API-Key": f"made-up-{i}",
                                                             "X-Forwarded-For": f"10.0.0.{i}"})).status_code
                    for i in range(12)]
        assert statuses.count(200) == 5 and statuses.count(429) == 7, statuses


async def test_with_keys_each_authenticated_key_has_its_own_bucket() -> None:
    async with app_client(Settings(api_keys="key-a,key-b", rate_limit_per_minute=2), worker=FakeWorker()) as client:
        def auth(key: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {key}"}

        a = [(await client.get("/v1/models", headers=auth("key-a"))).status_code for _ in range(3)]
        b = [(await client.get("/v1/models", headers=auth("key-b"))).status_code for _ in range(2)]
        wrong = [(await client.get("/v1/models", headers=auth(f"guess-{i}"))).status_code for i in range(5)]
        assert a == [200, 200, 429] and b == [200, 200] and wrong == [401] * 5


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
async def test_docs_need_a_key_when_keys_are_configured(path: str) -> None:
    async with app_client(Settings(api_keys="secret-key"), worker=FakeWorker()) as client:
        assert_error(await client.get(path), 401, "invalid_api_key")
        assert (await client.get(path, headers={"Authorization": "Bearer secret-key"})).status_code == 200
    async with app_client(Settings(api_keys="secret-key", public_docs=True), worker=FakeWorker()) as client:
        assert (await client.get(path)).status_code == 200
    async with app_client(Settings(), worker=FakeWorker()) as client:
        assert (await client.get(path)).status_code == 200


async def test_fifty_thousand_chat_messages_are_refused_quickly() -> None:
    settings = Settings(limits=LimitSettings(max_body_bytes=5_000_000))  # so the message cap, not the body cap, acts
    async with app_client(settings, worker=FakeWorker()) as client:
        messages = [{"role": "user", "content": ""}] * 50_000
        start = time.perf_counter()
        response = await client.post("/v1/chat/completions", json={"model": "weaver", "messages": messages})
        elapsed = time.perf_counter() - start
        error = assert_error(response, 400)
        assert "messages" in (error["param"] or "") + error["message"]
        assert elapsed < 2.0, elapsed  # was a 3 s stall of the event loop


class _Server:
    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        config = uvicorn.Config(create_app(settings, worker=FakeWorker()), host="127.0.0.1", port=self.port,
                                log_level="warning", lifespan="on", **http_limits(settings))
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def _healthz_latency(port: int) -> float:
    start = time.perf_counter()
    response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
    assert response.status_code == 200
    return time.perf_counter() - start


def test_an_oversized_header_is_refused_without_stalling_the_server() -> None:
    settings = Settings(limits=LimitSettings(max_header_bytes=16_384, header_timeout_s=2.0))
    with _Server(settings) as server, socket.create_connection(("127.0.0.1", server.port)) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        conn.settimeout(10)
        try:
            for _ in range(200):  # up to 20 MB; the server must cut us off long before
                conn.sendall(b"a" * 100_000)
        except OSError:
            pass  # the server closed the connection
        try:
            answer = conn.recv(200)
        except OSError:
            answer = b""
        assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer
        assert _healthz_latency(server.port) < 1.0


def test_half_open_connections_are_closed_after_the_header_timeout() -> None:
    settings = Settings(limits=LimitSettings(header_timeout_s=1.0))
    with _Server(settings) as server:
        sockets = []
        for _ in range(100):
            conn = socket.create_connection(("127.0.0.1", server.port))
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
            sockets.append(conn)
        assert _healthz_latency(server.port) < 1.0
        time.sleep(2.5)
        closed = 0
        for conn in sockets:
            conn.settimeout(5)
            try:
                closed += conn.recv(1) == b""
            except OSError:
                closed += 1
            conn.close()
        assert closed == len(sockets)
        assert _healthz_latency(server.port) < 1.0
