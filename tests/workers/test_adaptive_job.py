"""Compute by need in the worker: the verifier cascade and adaptive N (workers/adaptive_job.py), no web layer.

A registered test verifier type with a high cost stands for an expensive judge; it counts what it scores, so
the tests see which candidates really reached it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest

from models.weaver import WeaverModel
from models.weaver_v2 import WeaverV2Model
from workers.config import AdaptiveConfig, VerifierSpec, WorkerConfig
from workers.contract import ChatMessage, Job, SamplingParams
from workers.entry import Worker
from workers.generation.base import GeneratedCandidate, GenerationOutput
from workers.verifiers import PairItem, Verifier, register_verifier_type

PROMPT = "Janet's ducks lay 16 eggs per day. She eats 3 and bakes with 4. She sells the rest at $2 each. How much?"
AGREEING = ["16 - 7 = 9 eggs, 9 * 2 = 18.\nA: 18", "9 * 2 = <<9*2=18>>18\nA: 18",
            "She sells 9 eggs for 18 dollars.\nA: 18", "16 - 3 = 13, 13 * 2 = 26\nA: 26"]
SCATTERED = ["A: 18", "A: 26", "A: 32", "A: 14"]


class CountingJudge(Verifier):
    """An 'expensive' pair verifier: 1 for answers of 18, else 0; remembers every candidate it scored."""

    kind = "counting_judge"
    expected_cost_s = 1.0
    scored: list[str] = []

    def score_sync(self, items: Sequence[Any]) -> list[Any]:
        texts = [item.candidate for item in items if isinstance(item, PairItem)]
        time.sleep(0.01 * len(texts))  # measured cost: about 10 ms per candidate, past the cheap stage's 5 ms
        CountingJudge.scored.extend(texts)
        return [1.0 if text.rstrip().endswith("18") else 0.0 for text in texts]


register_verifier_type(CountingJudge.kind, CountingJudge)


def config(**adaptive: Any) -> WorkerConfig:
    verifiers = [VerifierSpec(name="answer_agreement", type="answer_agreement"),
                 VerifierSpec(name="math_check", type="math_check"),
                 VerifierSpec(name="judge", type=CountingJudge.kind)]
    return WorkerConfig(verifiers=verifiers, profiles={"all": ["answer_agreement", "math_check", "judge"]},
                        default_profile="all", adaptive=AdaptiveConfig(**adaptive))


def fitted_model(seed: int = 0) -> WeaverModel:
    """A label model fitted label-free on synthetic scores: agreement and the judge are strong, math weak."""
    rng = np.random.default_rng(seed)
    matrices = []
    for _ in range(200):
        truth = rng.random(4) < 0.5
        agreement = np.where(truth, rng.choice([2 / 3, 1.0], 4), rng.choice([0.0, 1 / 3], 4, p=[0.8, 0.2]))
        math_ok = np.where(truth, rng.choice([1.0, 0.5], 4, p=[0.7, 0.3]), rng.choice([1.0, 0.5], 4, p=[0.4, 0.6]))
        judge = np.where(truth, rng.random(4) < 0.9, rng.random(4) < 0.1).astype(float)
        matrices.append(np.column_stack([agreement, math_ok, judge]))
    return WeaverModel.fit(matrices, ("answer_agreement", "math_check", "judge"))


@asynccontextmanager
async def fitted_worker(**adaptive: Any) -> AsyncIterator[Worker]:
    """A started worker serving ``fitted_model``, the judge's record cleared."""
    CountingJudge.scored = []
    w = Worker.from_config(config(**adaptive))
    await w.start()
    w.set_weaver_model(fitted_model())
    try:
        yield w
    finally:
        await w.close()


@pytest.fixture
async def worker() -> AsyncIterator[Worker]:
    async with fitted_worker() as w:
        yield w


def rerank(candidates: list[str], **fields: Any) -> Job:
    return Job(kind="rerank", prompt=PROMPT, candidates=candidates, **fields)


async def test_a_settled_choice_skips_the_expensive_stage(worker: Worker) -> None:
    costs = worker.verifier_costs()
    result = await worker.run(rerank(AGREEING))
    assert result.status == "ok", result.error
    compute = result.compute
    assert compute is not None and compute.cascade
    assert compute.stages == [["answer_agreement", "math_check"], ["judge"]]
    assert compute.stop_reason == "settled" and compute.verifiers_skipped == ["judge"]
    assert CountingJudge.scored == []  # the expensive verifier saw nothing
    assert result.candidates[result.selected_index].answer == "18"  # type: ignore[index]
    judge = next(d for d in result.diagnostics if d.name == "judge")
    assert judge.raw == [None] * 4 and judge.skipped and "settled" in judge.skipped
    assert compute.verifier_calls == 8 and compute.verifier_seconds < 0.01 * compute.full_verifier_seconds
    assert compute.full_verifier_seconds == pytest.approx(4 * sum(costs.values()), abs=1e-5)


async def test_a_choice_in_doubt_runs_the_next_stage(worker: Worker) -> None:
    result = await worker.run(rerank(SCATTERED))
    compute = result.compute
    assert compute is not None and compute.stop_reason in ("exhausted", "settled")
    assert compute.verifiers_run == ["answer_agreement", "math_check", "judge"] and not compute.verifiers_skipped
    assert sorted(CountingJudge.scored) == sorted(SCATTERED)
    assert result.candidates[result.selected_index].answer == "18"  # type: ignore[index]  # the judge decided


async def test_request_overrides_turn_the_cascade_off_or_cap_it(worker: Worker) -> None:
    off = await worker.run(rerank(AGREEING, cascade=False))
    assert off.compute is not None and off.compute.stop_reason == "disabled" and not off.compute.verifiers_skipped
    assert sorted(CountingJudge.scored) == sorted(AGREEING)
    CountingJudge.scored.clear()
    capped = await worker.run(rerank(SCATTERED, budget_s=0.009))  # the judge now measures ~0.01 s
    assert capped.compute is not None and capped.compute.stop_reason == "budget"
    assert capped.compute.verifiers_skipped == ["judge"] and capped.compute.budget_s == 0.009
    assert CountingJudge.scored == []
    skipped = next(d for d in capped.diagnostics if d.name == "judge").skipped
    assert skipped is not None and "budget" in skipped


async def test_without_a_label_model_every_verifier_runs() -> None:
    CountingJudge.scored = []
    cold = Worker.from_config(config())
    await cold.start()
    try:
        result = await cold.run(rerank(AGREEING))
    finally:
        await cold.close()
    assert result.compute is not None and result.compute.stop_reason == "no_model"
    assert result.compute.stages == [["answer_agreement", "math_check"], ["judge"]]
    assert not result.compute.verifiers_skipped
    assert sorted(CountingJudge.scored) == sorted(AGREEING)


async def test_without_a_label_model_the_budget_still_caps() -> None:
    CountingJudge.scored = []
    cold = Worker.from_config(config())
    await cold.start()
    try:
        capped = await cold.run(rerank(AGREEING, budget_s=0.5))  # the judge's prior: 1 s per candidate
    finally:
        await cold.close()
    assert capped.compute is not None and capped.compute.stop_reason == "budget"
    assert capped.compute.verifiers_skipped == ["judge"] and CountingJudge.scored == []
    skipped = next(d for d in capped.diagnostics if d.name == "judge").skipped
    assert skipped is not None and "no label model" in skipped


async def test_the_server_default_can_be_off() -> None:
    async with fitted_worker(cascade=False) as w:
        assert (await w.run(rerank(AGREEING))).compute.stop_reason == "disabled"  # type: ignore[union-attr]
        on = await w.run(rerank(AGREEING, cascade=True))
        assert on.compute is not None and on.compute.stop_reason == "settled"


async def test_measured_costs_replace_the_priors(worker: Worker) -> None:
    assert worker.verifier_costs()["judge"] == CountingJudge.expected_cost_s
    await worker.run(rerank(SCATTERED))
    measured = {d["name"]: d for d in worker.describe_verifiers()}
    assert measured["judge"]["cost_measured"] and 0.009 < measured["judge"]["cost_s_per_candidate"] < 1.0
    assert worker.verifier_costs()["judge"] == measured["judge"]["cost_s_per_candidate"]


class ScriptedGenerator:
    """A generation backend that answers from a script, recording each round's size and seed."""

    name = "scripted"
    model = "scripted"

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.calls: list[tuple[int, int | None]] = []

    def ready(self) -> bool:
        return True

    async def generate(self, messages: list[ChatMessage], n: int, sampling: SamplingParams) -> GenerationOutput:
        start = sum(count for count, _ in self.calls)
        self.calls.append((n, sampling.seed))
        texts = [self.answers[(start + i) % len(self.answers)] for i in range(n)]
        return GenerationOutput([GeneratedCandidate(t, "stop", 5) for t in texts], requested=n, prompt_tokens=10)

    async def close(self) -> None:
        return None


async def chat(answers: list[str], n: int, model: bool, **fields: Any) -> tuple[Any, ScriptedGenerator]:
    CountingJudge.scored = []
    w = Worker.from_config(config(adaptive_n=True))
    await w.start()
    if model:
        w.set_weaver_model(fitted_model())
    generator = ScriptedGenerator(answers)
    w._generator = generator  # noqa: SLF001 - a scripted backend in place of a model
    try:
        job = Job(kind="generate", prompt=PROMPT, n_candidates=n, sampling=SamplingParams(seed=7), **fields)
        return await w.run(job), generator
    finally:
        await w.close()


async def test_adaptive_n_stops_when_the_vote_is_settled() -> None:
    result, generator = await chat(["A: 18"], 16, model=False)
    compute = result.compute
    assert compute.rounds == [2, 4] and compute.candidates_generated == 4 and compute.candidates_requested == 16
    assert compute.sampling_stop_reason == "settled" and "leading answer" in compute.sampling_detail
    assert generator.calls == [(2, 7), (2, 9)]  # the second round has its own seeds
    assert len(result.candidates) == 4 and result.generation.returned == 4


async def test_adaptive_n_runs_to_n_while_in_doubt() -> None:
    result, generator = await chat(["A: 1", "A: 2", "A: 3", "A: 4", "A: 5"], 8, model=False)
    compute = result.compute
    assert compute.rounds == [2, 4, 8] and compute.sampling_stop_reason == "exhausted"
    assert [n for n, _ in generator.calls] == [2, 2, 4] and len(result.candidates) == 8


async def test_adaptive_n_with_the_label_model_and_the_cascade() -> None:
    result, _ = await chat(AGREEING[:3], 8, model=True)
    compute = result.compute
    assert compute.sampling_stop_reason == "settled" and compute.candidates_generated < 8
    assert compute.stop_reason == "settled" and compute.verifiers_skipped == ["judge"]
    assert CountingJudge.scored == []
    off, _ = await chat(["A: 18"], 8, model=False, adaptive_n=False)
    assert off.compute.rounds == [8] and off.compute.sampling_stop_reason is None


def fitted_v2_model(seed: int = 0) -> WeaverV2Model:
    """A v2 label model fitted label-free on synthetic queries with answers (the lookahead needs one)."""
    from models.answers import agreement_shares

    rng = np.random.default_rng(seed)
    matrices, answers = [], []
    for _ in range(300):
        truth = rng.random(4) < 0.5
        texts = tuple("18" if t else str(rng.choice([24, 26, 32, 14])) for t in truth)
        math_ok = np.where(truth, rng.choice([1.0, 0.5], 4, p=[0.7, 0.3]), rng.choice([1.0, 0.5], 4, p=[0.4, 0.6]))
        judge = np.where(truth, rng.random(4) < 0.9, rng.random(4) < 0.1).astype(float)
        matrices.append(np.column_stack([agreement_shares(texts), math_ok, judge]))
        answers.append(texts)
    return WeaverV2Model.fit(matrices, ("answer_agreement", "math_check", "judge"), answers)


async def test_with_a_v2_model_the_lookahead_decides() -> None:
    async with fitted_worker() as w:
        w.set_weaver_model(fitted_v2_model())
        settled = await w.run(rerank([*AGREEING[:3], "Sixteen minus seven is nine; 9 x 2 = 18.\nA: 18"]))
        doubtful = await w.run(rerank(SCATTERED))
    assert settled.compute is not None and settled.compute.stop_reason == "settled"
    assert "would change the answer" in settled.compute.detail and settled.compute.verifiers_skipped == ["judge"]
    assert doubtful.compute is not None and doubtful.compute.verifiers_run[-1] == "judge"
    assert sorted(CountingJudge.scored) == sorted(SCATTERED)
