"""Hostile candidates for code_tests, sent through the real embedded service (HTTP -> queue -> Worker -> sandbox).

Each attack must be blocked, scored 0 with a reason in the diagnostics, leave no trace on the host, and
the service must stay ready and keep answering. (tests/workers/test_sandbox.py covers the sandbox function
itself; this file proves the same promises end to end.)
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.settings import Settings
from tests.reliability.harness import write_worker_config

GOOD = "def add(a, b):\n    return a + b"
TESTS = ["assert add(2, 3) == 5"]


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    config = write_worker_config(tmp_path / "worker.yaml", verifiers=[
        {"name": "code_tests", "type": "code_tests", "params": {"test_timeout_s": 2, "memory_mb": 256}}])
    app = create_app(Settings(worker_config=config, request_timeout_s=120))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://gateway",
                                                                   timeout=120) as http:
        yield http


async def rerank(client: httpx.AsyncClient, documents: list[str]) -> dict[str, Any]:
    response = await client.post("/v1/rerank", json={
        "query": "write add(a, b)", "documents": documents,
        "verification": {"verifiers": ["code_tests"], "aggregator": "mean", "context": {"tests": TESTS}}})
    assert response.status_code == 200, response.text
    return response.json()


def _listener() -> tuple[socket.socket, list[str]]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(8)
    seen: list[str] = []

    def accept() -> None:
        try:
            conn, _ = server.accept()
            seen.append("connected")
            conn.close()
        except OSError:
            pass

    threading.Thread(target=accept, daemon=True).start()
    return server, seen


async def test_hostile_programs_score_zero_with_a_reason_and_the_service_survives(
        client: httpx.AsyncClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"sk-live-{uuid.uuid4().hex}"
    monkeypatch.setenv("OPENAI_API_KEY", secret)  # a secret in the worker's environment
    secret_file = tmp_path / "mounted-secret"
    secret_file.write_text(secret)
    secret_file.chmod(0o644)  # world-readable: only the sandbox's own rules can keep it out
    target = tmp_path / f"escaped-{uuid.uuid4().hex}"
    server, connections = _listener()
    port = server.getsockname()[1]
    attacks = {
        "fork bomb": "import os\nwhile True:\n    os.fork()",
        "infinite loop": "def add(a, b):\n    while True:\n        pass",
        "huge memory": "blocks = []\nwhile True:\n    blocks.append(bytearray(100_000_000))",
        "network": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'x')\n{GOOD}",
        "write outside": f"open({str(target)!r}, 'w').write('pwned')\n{GOOD}",
        "read outside": f"data = open({str(secret_file)!r}).read()\nassert {secret!r} not in data\n{GOOD}",
        "env secret": f"import os\nassert os.environ.get('OPENAI_API_KEY') is None\n"
                      f"assert {secret!r} not in repr(dict(os.environ))\n"
                      "assert b'sk-live-' not in open(f'/proc/{os.getppid()}/environ', 'rb').read()\n" + GOOD,
    }
    body = await rerank(client, [*attacks.values(), GOOD])
    server.close()
    diagnostics = body["verification"]["verifiers"][0]
    raw, notes = diagnostics["raw"], diagnostics["notes"]
    for i, name in enumerate(attacks):
        assert raw[i] == 0.0, (name, raw[i], notes[i])
        assert notes[i] and notes[i].startswith("0/1 tests passed;"), (name, notes[i])  # a reason is given
    assert raw[-1] == 1.0 and body["results"][0]["index"] == len(attacks)
    reasons = dict(zip(attacks, notes, strict=False))
    assert "timeout" in reasons["infinite loop"] or "signal" in reasons["infinite loop"]
    assert "memory" in reasons["huge memory"].lower() or "signal" in reasons["huge memory"]
    # refused by the audit hook, or (inside bubblewrap) the host path simply does not exist in the sandbox
    for attack in ("write outside", "read outside"):
        assert "outside" in reasons[attack] or "No such file" in reasons[attack], reasons[attack]
    assert connections == [] and not target.exists()
    assert secret not in str(body)  # nothing the attacks printed leaks the secret back
    # the worker is alive and responsive: ready, and a plain request after the attacks is scored normally
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    again = await rerank(client, [GOOD, "def add(a, b):\n    return a - b"])
    assert again["verification"]["verifiers"][0]["raw"] == [1.0, 0.0]


async def test_a_sandbox_secret_in_the_service_environment_is_not_visible_through_python_either(
        client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment the sandbox gets is built from scratch, whatever the worker process holds."""
    monkeypatch.setenv("WEAVER_API_KEYS", "k-secret-value")
    program = ("import os\nleaked = [k for k in os.environ if 'KEY' in k or 'TOKEN' in k or 'SECRET' in k]\n"
               "assert leaked == [], leaked\n" + GOOD)
    body = await rerank(client, [program])
    assert body["verification"]["verifiers"][0]["raw"] == [1.0], body["verification"]["verifiers"][0]
    assert os.environ["WEAVER_API_KEYS"] == "k-secret-value"
