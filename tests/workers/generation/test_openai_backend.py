"""The openai backend against a real local HTTP server speaking the chat-completions shape."""

from __future__ import annotations

import pytest

from workers.contract import ChatMessage, SamplingParams
from workers.generation import GenerationError, build_backend
from workers.generation.openai_backend import OpenAIBackend

from .chat_server import Behaviour, completion_words, serve

QUESTION = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="What is 3 + 4?")]
FAST_RETRIES = {"backoff_s": 0.01, "backoff_max_s": 0.05}


async def started(base_url: str, **extra: object) -> OpenAIBackend:
    backend = build_backend({"backend": "openai", "base_url": base_url, "model": "tiny", **FAST_RETRIES, **extra})
    assert isinstance(backend, OpenAIBackend)
    await backend.start()
    return backend


async def test_native_n_is_one_request_with_per_choice_token_counts() -> None:
    behaviour = Behaviour()
    with serve(behaviour) as url:
        backend = await started(url)
        out = await backend.generate(QUESTION, 5, SamplingParams(temperature=0.9, max_tokens=50, seed=11))
        await backend.close()
    assert out.returned == 5 and out.reason is None
    assert len(behaviour.requests) == 1 and behaviour.requests[0]["n"] == 5
    sent = behaviour.requests[0]
    assert (sent["temperature"], sent["max_tokens"], sent["seed"], sent["model"]) == (0.9, 50, 11, "tiny")
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    for index, candidate in enumerate(out.candidates):
        words = completion_words(11, index)
        assert candidate.text == " ".join(words)
        assert candidate.completion_tokens == len(words)  # from the choice's logprobs, one entry per token
    assert out.prompt_tokens == (2 + 4) + (5 + 4)  # the server's usage: words + 4 per message
    assert out.extras["completion_tokens_total"] == sum(c.completion_tokens for c in out.candidates)
    assert backend.native_n is True


async def test_server_that_ignores_n_is_detected_and_topped_up_in_parallel() -> None:
    behaviour = Behaviour(honour_n=False)
    with serve(behaviour) as url:
        backend = await started(url)
        first = await backend.generate(QUESTION, 4, SamplingParams(seed=100))
        assert backend.native_n is False
        second = await backend.generate(QUESTION, 3, SamplingParams(seed=200))
        await backend.close()
    assert first.returned == 4 and first.reason is None and "fetched the rest" in first.extras["notes"][0]
    assert second.returned == 3 and second.reason is None
    ns = [r["n"] for r in behaviour.requests]
    assert ns == [4, 1, 1, 1] + [1, 1, 1]  # one short answer, then single-choice requests only
    assert sorted(r["seed"] for r in behaviour.requests[1:4]) == [101, 102, 103]  # distinct seeds per sample
    assert len({c.text for c in first.candidates}) > 1


async def test_server_that_rejects_n_falls_back_to_parallel_requests() -> None:
    behaviour = Behaviour(reject_n=True)
    with serve(behaviour) as url:
        backend = await started(url)
        out = await backend.generate(QUESTION, 3, SamplingParams(seed=1))
        await backend.close()
    assert out.returned == 3 and out.reason is None
    assert [r["n"] for r in behaviour.requests] == [3, 1, 1, 1]


async def test_parallel_mode_fans_out_concurrently() -> None:
    behaviour = Behaviour(delay_s=0.3)
    with serve(behaviour) as url:
        backend = await started(url, n_mode="parallel", max_parallel=8)
        out = await backend.generate(QUESTION, 6, SamplingParams(seed=5))
        await backend.close()
    assert out.returned == 6 and [r["n"] for r in behaviour.requests] == [1] * 6
    # all six were in flight together: they arrived within one server delay of each other
    assert max(behaviour.request_times) - min(behaviour.request_times) < 0.3
    assert all(c.completion_tokens == len(c.text.split()) for c in out.candidates)


async def test_transient_failures_are_retried_with_backoff() -> None:
    behaviour = Behaviour(fail_first=2, fail_status=429, retry_after=0.01)
    with serve(behaviour) as url:
        backend = await started(url)
        out = await backend.generate(QUESTION, 2, SamplingParams(seed=3))
        await backend.close()
    assert out.returned == 2 and out.reason is None and out.extras["attempts"] == 3
    assert len(behaviour.requests) == 3


async def test_giving_up_after_retries_raises_with_the_server_message() -> None:
    behaviour = Behaviour(fail_first=100, fail_status=503)
    with serve(behaviour) as url:
        backend = await started(url, max_retries=2)
        with pytest.raises(GenerationError, match=r"HTTP 503: temporarily overloaded \(after 3 attempts\)"):
            await backend.generate(QUESTION, 2, SamplingParams())
        await backend.close()
    assert len(behaviour.requests) == 3


async def test_partial_fan_out_says_how_many_came_back_and_why() -> None:
    behaviour = Behaviour(honour_n=False, fail_seeds={12})  # the sample with seed 10 + 2 always fails
    with serve(behaviour) as url:
        backend = await started(url, n_mode="parallel", max_retries=1)
        out = await backend.generate(QUESTION, 4, SamplingParams(seed=10))
        await backend.close()
    assert out.requested == 4 and out.returned == 3
    assert out.reason is not None and out.reason.startswith("3 of 4 candidates came back")
    assert "HTTP 500: this replica is broken" in out.reason


async def test_timeouts_are_retried_then_reported() -> None:
    behaviour = Behaviour(delay_s=1.0)
    with serve(behaviour) as url:
        backend = await started(url, timeout_s=0.2, max_retries=1)
        with pytest.raises(GenerationError, match="timed out"):
            await backend.generate(QUESTION, 1, SamplingParams())
        await backend.close()
    assert len(behaviour.requests) == 2


async def test_a_cancelled_generation_closes_its_http_call() -> None:
    """A cancelled job cancels generate(); the HTTP request is closed, so the upstream server stops too."""
    import asyncio

    behaviour = Behaviour(delay_s=10.0)
    with serve(behaviour) as url:
        backend = await started(url)
        task = asyncio.create_task(backend.generate(QUESTION, 2, SamplingParams()))
        while not behaviour.requests:
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):
            if behaviour.disconnects:
                break
            await asyncio.sleep(0.02)
        await backend.close()
    assert behaviour.disconnects == 1 and len(behaviour.requests) == 1  # closed, not retried


async def test_logprob_refusal_falls_back_to_usage_counts() -> None:
    behaviour = Behaviour(refuse_logprobs=True)
    with serve(behaviour) as url:
        backend = await started(url)
        single = await backend.generate(QUESTION, 1, SamplingParams(seed=4))
        several = await backend.generate(QUESTION, 3, SamplingParams(seed=4))
        await backend.close()
    assert single.candidates[0].completion_tokens == len(completion_words(4, 0))  # usage covers one choice
    assert several.returned == 3
    assert several.extras["completion_tokens_total"] == sum(len(completion_words(4, i)) for i in range(3))
    assert "logprobs" not in behaviour.requests[-1]


async def test_stop_and_max_tokens_are_passed_through() -> None:
    behaviour = Behaviour()
    with serve(behaviour) as url:
        backend = await started(url)
        out = await backend.generate(QUESTION, 2, SamplingParams(max_tokens=2, stop=["zzz"], seed=9))
        await backend.close()
    assert behaviour.requests[0]["stop"] == ["zzz"] and behaviour.requests[0]["max_tokens"] == 2
    assert all(c.completion_tokens <= 2 for c in out.candidates)


async def test_api_key_is_sent_and_a_wrong_one_fails_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    behaviour = Behaviour(api_key="sk-right")
    with serve(behaviour) as url:
        monkeypatch.setenv("WEAVER_TEST_KEY", "sk-right")
        backend = await started(url, api_key_env="WEAVER_TEST_KEY")
        assert (await backend.generate(QUESTION, 1, SamplingParams())).returned == 1
        await backend.close()
        with pytest.raises(GenerationError, match="HTTP 401: invalid api key"):
            await started(url, api_key="sk-wrong")


async def test_unreachable_endpoint_fails_at_start() -> None:
    with serve(Behaviour()) as url:
        pass  # the server is gone; its port is closed
    with pytest.raises(GenerationError, match="not usable"):
        await started(url, max_retries=1)


async def test_greedy_decodes_once_and_copies() -> None:
    behaviour = Behaviour()
    with serve(behaviour) as url:
        backend = await started(url)
        out = await backend.generate(QUESTION, 4, SamplingParams(temperature=0.0, seed=2))
        await backend.close()
    assert [r["n"] for r in behaviour.requests] == [1]
    assert out.returned == 4 and len({c.text for c in out.candidates}) == 1 and out.extras["greedy_copies"] == 4
