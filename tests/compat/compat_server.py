"""A real ``weaver serve`` process for the client-compatibility tests: its own port, API keys on, the tiny
generator (random 2-layer Llama, character tokenizer) and the two cheap verifiers, so it starts in seconds."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.reliability.harness import build_tiny_generator, write_worker_config
from tests.support import ROOT, free_port

API_KEY = "compat-key"
CHEAP = [{"name": "answer_agreement", "type": "answer_agreement"}, {"name": "math_check", "type": "math_check"}]


@dataclass(frozen=True)
class Server:
    root: str  # http://127.0.0.1:PORT (what Cohere, litellm and TEI clients take)
    key: str
    generator: str  # the generator's model id, as /v1/models lists it

    @property
    def v1(self) -> str:  # what OpenAI-style clients take
        return f"{self.root}/v1"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("compat-server")
    generator = build_tiny_generator(work / "generator")
    config = write_worker_config(work / "worker.yaml", generator_dir=generator, verifiers=CHEAP)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "WEAVER_API_KEYS": API_KEY,
           "WEAVER_DEFAULT_N_CANDIDATES": "2", "WEAVER_LIMITS__MAX_TOKENS": "32", "WEAVER_LOG_LEVEL": "warning"}
    env.pop("WEAVER_REDIS_URL", None)
    log = (work / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--worker-config", str(config)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            if process.poll() is not None:
                pytest.fail(f"weaver serve exited {process.returncode}:\n{(work / 'server.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{root}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"weaver serve not ready in 240 s:\n{(work / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        models = httpx.get(f"{root}/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}).json()
        generator_id = next(m["id"] for m in models["data"] if m["id"] != "weaver")
        yield Server(root=root, key=API_KEY, generator=generator_id)
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
