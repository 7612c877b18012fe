"""The Worker entry on rerank jobs (and generate-job plumbing), without any web layer."""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from models.aggregators import QueryScores, Ranking, rank_order
from models.weaver import WeaverModel
from workers.config import AggregationConfig, VerifierSpec, WorkerConfig
from workers.contract import Job
from workers.entry import Worker

GOOD = "16 - 3 - 4 = <<16-3-4=9>>9 eggs\n9 * 2 = $<<9*2=18>>18\nA: 18"
ALSO_GOOD = "She keeps 16 - 7 = 9 eggs and sells them: 9 * 2 = 18.\nA: 18"
BAD_MATH = "16 - 3 = <<16-3=12>>12 eggs\n12 * 2 = <<12*2=24>>24\nA: 24"
NO_SUPPORT = "16 - 3 = 13 eggs\nA: 99"
PROMPT = "Janet's ducks lay 16 eggs per day. She eats 3 and bakes with 4. She sells the rest at $2 each. How much?"
CANDIDATES = [BAD_MATH, GOOD, NO_SUPPORT, ALSO_GOOD]


def cheap_config(**extra: object) -> WorkerConfig:
    verifiers = [VerifierSpec(name="answer_agreement", type="answer_agreement"),
                 VerifierSpec(name="math_check", type="math_check"),
                 VerifierSpec(name="broken_rm", type="reward_model", params={"model": "/nonexistent/reward-model"}),
                 VerifierSpec(name="offline_judge", type="remote", params={
                     "base_url": "http://127.0.0.1:9", "protocol": "vllm_score", "retries": 0,
                     "request_timeout_s": 1.0})]
    return WorkerConfig(verifiers=verifiers, profiles={"cheap": ["answer_agreement", "math_check"]},
                        default_profile="cheap", **extra)  # type: ignore[arg-type]


@pytest.fixture
async def worker() -> Worker:
    w = Worker.from_config(cheap_config())
    await w.start()
    yield w  # type: ignore[misc]
    await w.close()


def rerank(**fields: object) -> Job:
    fields.setdefault("candidates", list(CANDIDATES))
    return Job(kind="rerank", prompt=PROMPT, **fields)  # type: ignore[arg-type]


async def test_rerank_job_cold_start(worker: Worker) -> None:
    result = await worker.run(rerank())
    assert result.status == "ok", result.error
    assert result.verifier_names == ["answer_agreement", "math_check"]
    assert np.array(result.scores, dtype=float).shape == (4, 2)
    assert result.aggregator == "mean" and "cold start" in result.aggregator_note
    assert result.candidates[result.selected_index].answer == "18"  # type: ignore[index]
    assert sorted(c.rank for c in result.candidates) == [0, 1, 2, 3]
    assert result.candidates[result.selected_index].rank == 0  # type: ignore[index]
    agreement = result.diagnostics[0]
    assert agreement.raw == pytest.approx([0.0, 1 / 3, 0.0, 1 / 3])
    assert agreement.vote == [0, 1, 0, 1]
    assert result.diagnostics[1].raw[0] < 1.0 and result.diagnostics[1].raw[1] == 1.0
    assert {"verification", "aggregation", "total"} <= set(result.timings)
    assert result.generation is None
    json.loads(result.model_dump_json())  # serialisable for the queue


async def test_introspection(worker: Worker) -> None:
    assert not worker.ready()  # a configured verifier failed to load: kept out of traffic (issue 8)
    errors = worker.readiness_errors()
    assert "verifier:broken_rm" in errors and "nonexistent" in errors["verifier:broken_rm"]
    assert worker.available_verifiers() == ["answer_agreement", "math_check", "offline_judge"]
    assert worker.profiles() == {"cheap": ["answer_agreement", "math_check"]}
    described = {d["name"]: d for d in worker.describe_verifiers()}
    assert described["broken_rm"]["ready"] is False and described["math_check"]["ready"] is True
    assert described["math_check"]["profiles"] == ["cheap"]


async def test_failing_verifiers_give_nan_and_errors_not_job_failures(worker: Worker) -> None:
    result = await worker.run(rerank(verifiers=["math_check", "broken_rm", "offline_judge"], aggregator="mean"))
    assert result.status == "ok"
    by_name = {d.name: d for d in result.diagnostics}
    assert by_name["broken_rm"].raw == [None] * 4 and "verifier unavailable" in (by_name["broken_rm"].error or "")
    assert by_name["offline_judge"].raw == [None] * 4 and "failed" in (by_name["offline_judge"].error or "")
    assert [row[1] for row in result.scores] == [None] * 4
    assert by_name["math_check"].error is None


@pytest.mark.parametrize(("fields", "error_type", "message"), [
    ({"verifiers": ["nope"]}, "invalid_request_error", "unknown verifiers"),
    ({"profile": "nope"}, "invalid_request_error", "unknown verifier profile"),
    ({"profile": "cheap", "verifiers": ["math_check"]}, "invalid_request_error", "not both"),
    ({"aggregator": "cascade"}, "invalid_request_error", "not configured"),
    ({"aggregator": "cross_encoder"}, "invalid_request_error", "not configured"),
    ({"deadline": time.time() - 1}, "timeout_error", "deadline"),
])
async def test_job_level_errors(worker: Worker, fields: dict[str, object], error_type: str, message: str) -> None:
    result = await worker.run(rerank(**fields))
    assert result.status == "error" and result.error_type == error_type and message in (result.error or "")
    assert result.candidates == []


async def test_generate_job_without_a_generator_is_a_clear_error(worker: Worker) -> None:
    result = await worker.run(Job(kind="generate", prompt="What is 2+2?"))
    assert result.status == "error" and result.error_type == "service_unavailable"


async def test_majority_first_and_plugged_in_aggregators(worker: Worker) -> None:
    majority = await worker.run(rerank(aggregator="majority"))
    assert majority.aggregator == "majority" and majority.candidates[majority.selected_index].answer == "18"  # type: ignore[index]
    first = await worker.run(rerank(aggregator="first"))
    assert first.selected_index == 0

    def shortest(query: QueryScores) -> Ranking:
        lengths = -np.array([len(a or "") for a in query.answers or ()], dtype=float)
        return Ranking("cross_encoder", "test-1", lengths, rank_order(lengths), False, "shortest answer")

    worker.register_aggregator("cross_encoder", shortest)
    plugged = await worker.run(rerank(aggregator="cross_encoder"))
    assert plugged.status == "ok" and plugged.aggregator == "cross_encoder" and plugged.aggregator_version == "test-1"


def fitted_weaver(seed: int = 0) -> WeaverModel:
    """A Weaver model fitted (label-free) on synthetic scores of the two cheap verifiers."""
    rng = np.random.default_rng(seed)
    matrices = []
    for _ in range(60):
        truth = rng.random(4) < 0.4
        agreement = np.where(truth, rng.choice([2 / 3, 1.0], 4), rng.choice([0.0, 1 / 3], 4, p=[0.7, 0.3]))
        math_ok = np.where(truth, rng.choice([1.0, 0.75], 4, p=[0.9, 0.1]), rng.choice([1.0, 0.5], 4, p=[0.4, 0.6]))
        matrices.append(np.column_stack([agreement, math_ok]))
    return WeaverModel.fit(matrices, ("answer_agreement", "math_check"))


async def test_weaver_model_posterior_and_diagnostics(worker: Worker, tmp_path: Path) -> None:
    model = fitted_weaver()
    worker.set_weaver_model(model)
    result = await worker.run(rerank())
    assert result.aggregator == "weaver" and result.aggregator_version == model.version
    assert result.confidence is not None and 0.0 <= result.confidence <= 1.0
    assert all(0.0 <= c.score <= 1.0 for c in result.candidates)
    accuracy = model.accuracy()
    for j, diag in enumerate(result.diagnostics):
        assert diag.estimated_accuracy == pytest.approx(float(accuracy[j]))
        assert all(v in (0, 1) for v in diag.vote)
        assert diag.kept == bool(model.kept[j])
    # from a file at start-up, and a per-task swap
    path = tmp_path / "weaver.json"
    model.save(path)
    loaded = Worker.from_config(cheap_config(aggregation=AggregationConfig(weaver_model=str(path))))
    await loaded.start()
    assert (await loaded.run(rerank())).aggregator_version == model.version
    other = fitted_weaver(seed=1)
    loaded.set_weaver_model(other, task="gsm8k")
    assert (await loaded.run(rerank(task="gsm8k"))).aggregator_version == other.version
    untasked = await loaded.run(rerank())
    assert untasked.aggregator_version != other.version and untasked.aggregator_note == "global model"
    await loaded.close()


async def test_weaver_model_without_these_verifiers_falls_back(worker: Worker) -> None:
    worker.set_weaver_model(fitted_weaver())
    result = await worker.run(rerank(verifiers=["offline_judge"]))
    assert result.status == "ok" and "keeps none of these verifiers" in result.aggregator_note


async def test_concurrent_jobs_are_batched_together(worker: Worker) -> None:
    jobs = [rerank(verifiers=["math_check"], candidates=[f"{i} + 1 = {i + 1}\nA: {i + 1}", BAD_MATH])
            for i in range(12)]
    results = await asyncio.gather(*(worker.run(j) for j in jobs))
    assert all(r.status == "ok" for r in results)
    assert [r.scores[0][0] for r in results] == [1.0] * 12
    stats = next(d for d in worker.describe_verifiers() if d["name"] == "math_check")["stats"]
    assert stats["deduped"] + stats["cache_hits"] >= 11  # BAD_MATH scored once for all twelve jobs
    assert stats["batches"] < 13


@pytest.mark.redis
async def test_score_cache_on_real_redis(live_redis_url: str) -> None:
    import uuid

    import redis.asyncio as redis

    from workers.config import CacheConfig

    prefix = f"weaver-test:{uuid.uuid4().hex}:"
    config = cheap_config(cache=CacheConfig(redis_url=live_redis_url, redis_prefix=prefix))
    first, second = Worker.from_config(config), Worker.from_config(config)
    await first.start()
    await second.start()
    await first.run(rerank())
    again = await second.run(rerank())  # another worker process would see the same cache
    stats = {d["name"]: d["stats"] for d in second.describe_verifiers() if d.get("stats")}
    assert stats["math_check"]["cache_hits"] == 4 and stats["answer_agreement"]["cache_hits"] == 1
    assert again.status == "ok"
    client = redis.Redis.from_url(live_redis_url)
    keys = [k async for k in client.scan_iter(match=prefix + "*")]
    assert len(keys) == 5
    await client.delete(*keys)
    await client.aclose()
    await first.close()
    await second.close()


async def test_nan_scores_are_null_in_the_result(worker: Worker) -> None:
    result = await worker.run(Job(kind="rerank", prompt="?", candidates=["no numbers here"], aggregator="mean"))
    assert result.status == "ok" and result.scores == [[None, None]]
    assert all(d.raw == [None] for d in result.diagnostics)
    assert not any(isinstance(c.score, float) and math.isnan(c.score) for c in result.candidates)


async def test_generate_job_with_a_tiny_transformers_generator(tiny_causal_lm_dir: Path) -> None:
    """The generate path end to end with the real transformers backend (a tiny random Llama)."""
    from workers.contract import SamplingParams

    config = cheap_config(generation={"backend": "transformers", "model": str(tiny_causal_lm_dir), "device": "cpu",
                                      "dtype": "float32", "max_batch_size": 8})
    generating = Worker.from_config(config)
    await generating.start()
    try:
        assert "generation" not in generating.readiness_errors()  # (broken_rm alone keeps ready() false)
        result = await generating.run(Job(kind="generate", prompt="What is 2 + 2?", n_candidates=3,
                                          sampling=SamplingParams(temperature=1.0, max_tokens=6, seed=1)))
        assert result.status == "ok", result.error
        info = result.generation
        assert info is not None and info.backend and (info.requested, info.returned) == (3, 3)
        assert info.prompt_tokens > 0 and info.completion_tokens == sum(c.completion_tokens for c in result.candidates)
        assert len(result.candidates) == 3 and all(c.finish_reason in ("stop", "length") for c in result.candidates)
        assert np.array(result.scores, dtype=float).shape == (3, 2)
        assert result.timings["generation"] > 0
    finally:
        await generating.close()
