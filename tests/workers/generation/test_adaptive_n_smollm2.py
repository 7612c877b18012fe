"""Adaptive N with the real SmolLM2 generator on CPU: rounds stop early when the answer is clear, and run to
n_candidates when it is not (no label model: the answer-vote rule, Adaptive-Consistency's Beta criterion)."""

from __future__ import annotations

import pytest

from workers.config import AdaptiveConfig, VerifierSpec, WorkerConfig
from workers.contract import ChatMessage, Job, SamplingParams
from workers.entry import Worker
from workers.generation.model_cache import ResolvedModel

pytestmark = pytest.mark.slow


def job(prompt: str, n: int, temperature: float) -> Job:
    return Job(kind="generate", prompt=prompt, messages=[ChatMessage(role="user", content=prompt)], n_candidates=n,
               sampling=SamplingParams(temperature=temperature, max_tokens=24, seed=0))


async def test_rounds_stop_early_on_a_clear_answer_and_run_to_n_without_one(smollm2_cache: ResolvedModel) -> None:
    config = WorkerConfig(
        generation={"backend": "transformers", "model": "smollm2-135m-instruct", "device": "cpu", "num_threads": 1,
                    "cache_dir": str(smollm2_cache.path.parent.parent)},
        verifiers=[VerifierSpec(name="answer_agreement", type="answer_agreement")],
        adaptive=AdaptiveConfig(adaptive_n=True))
    worker = Worker(config)
    await worker.start()
    try:
        clear = await worker.run(job("What is 10 + 10? Answer with a number.", 16, 0.2))
        open_ended = await worker.run(job("Pick a random number between 1 and 1000. Reply with the number only.",
                                          8, 1.0))
    finally:
        await worker.close()
    assert clear.status == "ok" and clear.compute is not None, clear.error
    assert clear.compute.sampling_stop_reason == "settled" and clear.compute.candidates_generated < 16
    assert clear.compute.rounds[-1] == len(clear.candidates) == clear.generation.returned  # type: ignore[union-attr]
    assert clear.candidates[clear.selected_index].answer == "20"  # type: ignore[index]
    assert open_ended.status == "ok" and open_ended.compute is not None, open_ended.error
    assert open_ended.compute.rounds == [2, 4, 8] and open_ended.compute.sampling_stop_reason == "exhausted"
    assert len({c.answer for c in open_ended.candidates}) > 2  # the model really disagreed with itself
