"""End to end with the real models: SmolLM2-135M-Instruct generates and judges, all-MiniLM-L6-v2 embeds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from workers.config import WorkerConfig
from workers.contract import Job, SamplingParams
from workers.entry import Worker


@pytest.mark.slow
async def test_cpu_default_worker_generates_and_reranks(dev_set_path: Path) -> None:
    config = WorkerConfig.default()
    worker = Worker.from_config(config)
    await worker.start()
    try:
        assert worker.ready(), worker.readiness_errors()
        assert worker.readiness_errors() == {}

        row = json.loads(dev_set_path.open().readline())
        texts = [c["text"] for c in row["candidates"][:2]]
        rerank = await worker.run(Job(kind="rerank", prompt=row["prompt"], candidates=texts))
        assert rerank.status == "ok", rerank.error
        assert rerank.verifier_names == ["answer_agreement", "math_check", "embedding_consistency", "lm_judge"]
        by_name = {d.name: d for d in rerank.diagnostics}
        judge = by_name["lm_judge"].raw
        assert all(v is not None and 0.0 < v < 1.0 for v in judge), by_name["lm_judge"].error
        assert all(v is not None and -1.0 <= v <= 1.0 for v in by_name["embedding_consistency"].raw)
        assert all(d.error is None for d in rerank.diagnostics)

        generated = await worker.run(Job(
            kind="generate", prompt="What is 12 + 30? End with 'A: <number>'.", n_candidates=2,
            sampling=SamplingParams(temperature=0.8, max_tokens=24, seed=0), profile="cheap"))
        assert generated.status == "ok", generated.error
        info = generated.generation
        assert info is not None and info.requested == 2 and info.returned == len(generated.candidates)
        assert info.returned == 2 or info.reason
        assert info.completion_tokens > 0 and info.backend
        assert all(c.finish_reason in ("stop", "length") for c in generated.candidates)
        assert generated.timings["generation"] > 0
        assert not any(math.isnan(c.score) for c in generated.candidates)
    finally:
        await worker.close()
