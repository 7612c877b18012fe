"""Auth: keys from the environment (a Kubernetes Secret) or a mounted file, compared in constant time, never logged.

The per-endpoint 401s and the ops-endpoint switch are in tests/service/test_errors.py; the Redis-backed rate
limits that survive a gateway restart are in tests/service/test_redis_gateway.py. This file adds the
secret-handling promises, against the real embedded service under uvicorn with every log captured.
"""

from __future__ import annotations

import hmac
import logging
import uuid
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.security import KeyChecker
from service.settings import load_settings
from tests.reliability.harness import live_server, write_worker_config

RERANK = {"query": "2+2?", "documents": ["#### 4", "#### 5"], "verification": {"aggregator": "mean"}}


def test_comparison_is_constant_time_over_every_configured_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every configured key is compared (no early exit on a match) with hmac.compare_digest on equal-length
    SHA-256 digests, so neither the position of the matching key nor the presented key's length shows in timing."""
    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    checker = KeyChecker(["first-key", "second-key", "third-key"])
    for presented in ("first-key", "third-key", "nope", "x" * 5000, ""):
        calls.clear()
        checker.check(presented)
        assert calls == [(32, 32)] * 3, (presented, calls)
    assert checker.check("second-key") and not checker.check("second-key ") and not checker.check(None)


def test_keys_come_from_the_environment_or_a_mounted_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mounted = tmp_path / "api-keys"  # what a Secret volume mount looks like: one key per line
    mounted.write_text("# weaver keys\nfrom-file\n")
    monkeypatch.setenv("WEAVER_API_KEYS", "from-env-1, from-env-2")
    monkeypatch.setenv("WEAVER_API_KEYS_FILE", str(mounted))
    settings = load_settings()
    assert sorted(settings.resolved_api_keys()) == ["from-env-1", "from-env-2", "from-file"]
    text = repr(settings) + str(settings) + settings.model_dump_json()
    assert "from-env-1" not in text and "from-env-2" not in text  # SecretStr everywhere it is printed


def test_api_keys_never_reach_the_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    good, wrong = f"sk-good-{uuid.uuid4().hex}", f"sk-wrong-{uuid.uuid4().hex}"
    monkeypatch.setenv("WEAVER_API_KEYS", good)
    config = write_worker_config(tmp_path / "w.yaml", verifiers=[{"name": "answer_agreement",
                                                                  "type": "answer_agreement"}])
    settings = load_settings(worker_config=config, protect_ops_endpoints=True, log_level="debug")
    caplog.set_level(logging.DEBUG)  # everything, uvicorn's access and error logs included
    with live_server(create_app(settings), log_config={"version": 1, "disable_existing_loggers": False},
                     log_level="debug") as url, \
            httpx.Client(base_url=url, timeout=60) as client:
        ok = client.post("/v1/rerank", json=RERANK, headers={"Authorization": f"Bearer {good}"})
        assert ok.status_code == 200, ok.text
        assert client.post("/v1/rerank", json=RERANK, headers={"X-API-Key": good}).status_code == 200
        denied = client.post("/v1/rerank", json=RERANK, headers={"Authorization": f"Bearer {wrong}"})
        assert denied.status_code == 401 and wrong not in denied.text
        assert client.get("/metrics").status_code == 401
        metrics = client.get("/metrics", headers={"Authorization": f"Bearer {good}"})
        assert metrics.status_code == 200 and good not in metrics.text
        assert client.get("/readyz", headers={"X-API-Key": good}).status_code == 200
        bad_body = client.post("/v1/rerank", content=b"{not json", headers={"Authorization": f"Bearer {good}"})
        assert bad_body.status_code == 400
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "POST /v1/rerank HTTP/1.1\" 401" in logged  # the capture saw the access log, denied request included
    assert good not in logged and wrong not in logged
