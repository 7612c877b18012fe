"""The embedded default: the real SmolLM2-135M-Instruct GGUF, converted once to safetensors and reloaded."""

from __future__ import annotations

import json

import pytest

from workers.contract import ChatMessage, SamplingParams
from workers.generation import build_backend
from workers.generation.model_cache import SOURCE_RECORD, ResolvedModel, resolve_model
from workers.generation.transformers_backend import TransformersBackend

pytestmark = pytest.mark.slow


def test_conversion_is_cached_by_file_identity(smollm2_cache: ResolvedModel) -> None:
    record = json.loads((smollm2_cache.path / SOURCE_RECORD).read_text())
    assert smollm2_cache.gguf is not None
    assert record["size"] == smollm2_cache.gguf.stat().st_size
    assert smollm2_cache.path.name.startswith(f"{record['size']}-")  # <size>-<sha256 prefix>
    assert (smollm2_cache.path / "model.safetensors").is_file() and (smollm2_cache.path / "tokenizer.json").is_file()
    again = resolve_model("smollm2-135m-instruct", cache_dir=smollm2_cache.path.parent.parent)
    assert again.path == smollm2_cache.path and not again.converted
    by_path = resolve_model(str(smollm2_cache.gguf), cache_dir=smollm2_cache.path.parent.parent)
    assert by_path.path == smollm2_cache.path and not by_path.converted  # alias and file path share one copy


async def test_transformers_backend_reloads_smollm2_from_the_cache(smollm2_cache: ResolvedModel) -> None:
    cache_dir = str(smollm2_cache.path.parent.parent)
    backend = build_backend({"backend": "transformers", "model": "smollm2-135m-instruct", "cache_dir": cache_dir,
                             "device": "cpu"})
    assert isinstance(backend, TransformersBackend)
    await backend.start()
    assert not backend.converted, "the start must reuse the safetensors cache, not convert again"

    messages = [ChatMessage(role="user", content="What is 3 + 4? Answer with a number.")]
    out = await backend.generate(messages, 3, SamplingParams(temperature=0.7, max_tokens=24, seed=0))
    assert out.returned == 3 and out.reason is None
    assert out.prompt_tokens == len(backend.render_prompt(messages)) > 10
    assert all(c.text.strip() and 1 <= c.completion_tokens <= 24 for c in out.candidates)
    greedy = await backend.generate(messages, 1, SamplingParams(temperature=0.0, max_tokens=24))
    assert "7" in greedy.candidates[0].text  # the real model answering, not noise
    await backend.close()
