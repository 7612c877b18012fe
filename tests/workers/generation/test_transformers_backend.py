"""The transformers backend's code paths on a tiny random Llama (one character = one token)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pydantic
import pytest

from workers.contract import ChatMessage, SamplingParams
from workers.generation import GenerationBackend, PromptTooLongError, build_backend
from workers.generation.transformers_backend import TransformersBackend


def chat(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


async def started(path: Path, **extra: object) -> TransformersBackend:
    backend = build_backend({"backend": "transformers", "model": str(path), "device": "cpu", **extra})
    assert isinstance(backend, TransformersBackend)
    await backend.start()
    assert backend.ready()
    return backend


async def test_returns_exactly_n_with_real_token_counts(tiny_model_dir: Path) -> None:
    backend = await started(tiny_model_dir)
    messages = chat("what is 2+2?")
    out = await backend.generate(messages, 6, SamplingParams(temperature=1.0, max_tokens=12, seed=3))
    assert out.requested == 6 and out.returned == 6 and out.reason is None
    assert out.prompt_tokens == len(backend.render_prompt(messages))
    # ChatML around the 12-character question: one token per character plus the template's tokens
    rendered = "<|im_start|>user\nwhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    assert out.prompt_tokens == len(rendered.replace("<|im_start|>", "S").replace("<|im_end|>", "E"))
    for candidate in out.candidates:
        assert candidate.finish_reason in {"stop", "length"}
        assert 1 <= candidate.completion_tokens <= 12
        if candidate.finish_reason == "length":
            assert candidate.completion_tokens == 12 and len(candidate.text) == 12
        else:  # ended by EOS: the text is every token before it, the count includes it
            assert len(candidate.text) == candidate.completion_tokens - 1
    await backend.close()


async def test_seed_makes_sampling_reproducible(tiny_model_dir: Path) -> None:
    backend = await started(tiny_model_dir)
    params = SamplingParams(temperature=1.0, top_p=0.9, max_tokens=16, seed=1234)
    first = await backend.generate(chat("hello"), 4, params)
    second = await backend.generate(chat("hello"), 4, params)
    other = await backend.generate(chat("hello"), 4, params.model_copy(update={"seed": 99}))
    texts = [c.text for c in first.candidates]
    assert texts == [c.text for c in second.candidates]
    assert texts != [c.text for c in other.candidates]
    assert len(set(texts)) > 1  # the N samples differ from each other
    await backend.close()


async def test_vanishing_temperature_decodes_greedily_instead_of_overflowing(tiny_model_dir: Path) -> None:
    # found by the API fuzzer: temperature 1e-197 made logits / temperature inf and sampling crash
    assert SamplingParams(temperature=1e-197).temperature == 0.0
    assert SamplingParams(temperature=1e-5).temperature == 1e-5
    backend = await started(tiny_model_dir)
    tiny = await backend.generate(chat("hello"), 3, SamplingParams(temperature=1.1e-197, max_tokens=8))
    greedy = await backend.generate(chat("hello"), 1, SamplingParams(temperature=0.0, max_tokens=8))
    assert [c.text for c in tiny.candidates] == [greedy.candidates[0].text] * 3
    await backend.close()


async def test_max_tokens_caps_every_candidate(tiny_model_dir: Path) -> None:
    backend = await started(tiny_model_dir)
    out = await backend.generate(chat("count"), 5, SamplingParams(temperature=1.0, max_tokens=3, seed=0))
    assert out.returned == 5
    assert all(c.completion_tokens <= 3 and len(c.text) <= 3 for c in out.candidates)
    await backend.close()


async def test_stop_string_cuts_text_and_counts_generated_tokens(tiny_model_dir: Path) -> None:
    backend = await started(tiny_model_dir)
    greedy = SamplingParams(temperature=0.0, max_tokens=40)
    full = (await backend.generate(chat("tell me"), 1, greedy)).candidates[0].text
    assert len(full) >= 8, f"precondition: the tiny model's greedy text is long enough: {full!r}"
    stop = full[5:7]
    cut = full.find(stop)
    out = await backend.generate(chat("tell me"), 3, greedy.model_copy(update={"stop": [stop, "never-seen"]}))
    for candidate in out.candidates:
        assert candidate.text == full[:cut]  # OpenAI semantics: the stop string is not returned
        assert candidate.finish_reason == "stop"
        assert candidate.completion_tokens == cut + len(stop)  # tokens produced, up to the one completing it
    await backend.close()


async def test_concurrent_requests_share_a_left_padded_batch(tiny_model_dir: Path) -> None:
    backend = await started(tiny_model_dir)
    greedy = SamplingParams(temperature=0.0, max_tokens=10)
    prompts = ["hi", "a much longer question, padded on the left?", "medium prompt"]
    alone = [(await backend.generate(chat(p), 2, greedy)) for p in prompts]
    together = await asyncio.gather(*(backend.generate(chat(p), 2, greedy) for p in prompts))
    for single, batched in zip(alone, together, strict=True):
        assert single.extras["batch_requests"] == 1
        assert batched.extras["batch_requests"] == 3 and batched.extras["batch_rows"] == 3  # greedy: one row each
        assert batched.extras["greedy_copies"] == 2 and batched.returned == 2
        assert [c.text for c in batched.candidates] == [c.text for c in single.candidates]
        assert [c.completion_tokens for c in batched.candidates] == [c.completion_tokens for c in single.candidates]
        assert batched.prompt_tokens == single.prompt_tokens
    await backend.close()


async def test_seeded_requests_run_alone_and_large_n_is_chunked(tiny_model_dir: Path) -> None:
    backend = await started(tiny_model_dir, max_batch_size=2)
    params = SamplingParams(temperature=1.0, max_tokens=6, seed=5)
    a, b = await asyncio.gather(backend.generate(chat("x"), 5, params), backend.generate(chat("y"), 1, params))
    assert a.returned == 5 and a.extras["batch_requests"] == 1
    assert b.returned == 1 and b.extras["batch_requests"] == 1
    again = await backend.generate(chat("x"), 5, params)
    assert [c.text for c in again.candidates] == [c.text for c in a.candidates]
    await backend.close()


async def test_event_loop_stays_responsive_while_generating(tiny_model_dir: Path) -> None:
    backend = await started(tiny_model_dir)
    task = asyncio.create_task(backend.generate(chat("go"), 8, SamplingParams(temperature=1.0, max_tokens=200)))
    ticks_while_generating = 0
    while not task.done() and ticks_while_generating < 3:
        await asyncio.sleep(0.01)
        ticks_while_generating += not task.done()
    # had generate() blocked the loop, the task would be finished before the first tick came back
    assert ticks_while_generating == 3
    task.cancel()  # no need to decode all 200 tokens: the batch stops once its caller is gone
    await backend.close()


async def test_cancelled_request_leaves_the_others_intact(tiny_model_dir: Path) -> None:
    backend = await started(tiny_model_dir)
    params = SamplingParams(temperature=1.0, max_tokens=8)
    doomed = asyncio.create_task(backend.generate(chat("a"), 2, params))
    kept = asyncio.create_task(backend.generate(chat("b"), 2, params))
    await asyncio.sleep(0)
    doomed.cancel()
    out = await kept
    assert out.returned == 2
    assert doomed.cancelled()
    await backend.close()


async def test_cancelling_every_caller_stops_the_running_batch(tiny_model_dir: Path) -> None:
    backend = await started(tiny_model_dir)
    entered, decoded = threading.Event(), []
    run_batch = backend._run_batch

    class CancelledMidDecode:
        """Stands in for the batch's abandonment flag. At its 10th check, with decoding under way, it tells the
        test and waits for the caller's cancellation to land: a tiny model could otherwise finish all its
        tokens before the test's cancel, on a fast machine."""

        def __init__(self, real: threading.Event) -> None:
            self.real, self.checks = real, 0

        def is_set(self) -> bool:
            self.checks += 1
            if self.checks == 10:
                entered.set()
                assert self.real.wait(10)
            return self.real.is_set()

    def in_flight(batch: list[Any], abandoned: threading.Event) -> list[Any]:
        outputs = run_batch(batch, CancelledMidDecode(abandoned))  # type: ignore[arg-type]
        decoded.extend(c.completion_tokens for out in outputs for c in out.candidates)
        return outputs

    backend._run_batch = in_flight  # type: ignore[method-assign]
    long_run = SamplingParams(temperature=1.0, max_tokens=200)
    task = asyncio.create_task(backend.generate(chat("long"), 4, long_run))
    assert await asyncio.to_thread(entered.wait, 10)
    task.cancel()
    backend._run_batch = run_batch  # type: ignore[method-assign]
    out = await backend.generate(chat("next"), 1, SamplingParams(temperature=1.0, max_tokens=4, seed=0))
    assert out.returned == 1
    assert backend.abandoned_batches == 1
    assert 0 < sum(decoded) < 4 * 200 / 10, decoded  # the batch was decoding, and stopped instead of going on
    await backend.close()


async def test_prompt_longer_than_context_is_rejected(tiny_short_context_dir: Path) -> None:
    backend = await started(tiny_short_context_dir)
    with pytest.raises(PromptTooLongError, match="context window is 64"):
        await backend.generate(chat("x" * 80), 2, SamplingParams())
    # a prompt that nearly fills the window still gets the room that is left, ending with "length"
    out = await backend.generate(chat("x" * 20), 2, SamplingParams(temperature=1.0, max_tokens=200, seed=0))
    assert out.returned == 2
    assert all(c.completion_tokens <= 64 - out.prompt_tokens for c in out.candidates)
    await backend.close()


def test_build_backend_validates_config() -> None:
    with pytest.raises(ValueError, match="unknown generation backend"):
        build_backend({"backend": "nope"})
    with pytest.raises(pydantic.ValidationError):
        build_backend({"backend": "transformers", "temprature": 0.3})
    backend = build_backend({})
    assert isinstance(backend, GenerationBackend) and backend.name == "transformers" and not backend.ready()


async def test_generate_before_start_fails_clearly() -> None:
    backend = build_backend({"backend": "transformers"})
    with pytest.raises(RuntimeError, match="before start"):
        await backend.generate(chat("hi"), 1, SamplingParams())
