"""The cross_encoder and cascade aggregators through the Worker entry, with a tiny saved checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from models.distill.student import CrossEncoderStudent, default_base_model
from models.weaver import WeaverModel
from workers.config import WorkerConfig
from workers.contract import Job
from workers.entry import Worker

PROMPT = "Tom has 3 apples and buys 4 more. How many apples does he have?"
CANDIDATES = ["3 + 4 = <<3+4=7>>7\nA: 7", "3 * 4 = <<3*4=12>>12\nA: 12", "He has 7 apples.\nA: 7",
              "3 + 4 = <<3+4=8>>8\nA: 8"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from transformers import AutoTokenizer, BertConfig

    tokenizer = AutoTokenizer.from_pretrained(default_base_model())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    student = CrossEncoderStudent.from_config(config, tokenizer, max_length=64, seed=1)
    with __import__("torch").no_grad():  # a head with a visible spread so margins are not all ~0
        student.model.classifier.weight.mul_(50.0)
    path = tmp_path_factory.mktemp("ce") / "ckpt"
    student.save(path)
    return path


def worker_config(checkpoint, margin: float) -> WorkerConfig:
    return WorkerConfig.model_validate({
        "name": "distill-test",
        "verifiers": [
            {"name": "answer_agreement", "type": "answer_agreement"},
            {"name": "math_check", "type": "math_check"},
            {"name": "distilled", "type": "cross_encoder", "params": {"model": str(checkpoint)}, "max_wait_ms": 1},
        ],
        "profiles": {"cheap": ["answer_agreement", "math_check"]},
        "default_profile": "cheap",
        "aggregation": {"cascade_min_margin": margin},
        "cache": {"memory_size": 0},
    })


async def started(config: WorkerConfig) -> Worker:
    worker = Worker.from_config(config)
    await worker.start()
    assert worker.ready(), worker.readiness_errors()
    return worker


def rerank(aggregator: str, **extra) -> Job:
    return Job(kind="rerank", prompt=PROMPT, candidates=CANDIDATES, aggregator=aggregator, **extra)


async def test_cross_encoder_aggregator_scores_with_the_checkpoint_only(checkpoint):
    worker = await started(worker_config(checkpoint, margin=0.1))
    try:
        result = await worker.run(rerank("cross_encoder"))
        assert result.status == "ok", result.error
        assert result.aggregator == "cross_encoder" and result.verifier_names == ["distilled"]
        expected = CrossEncoderStudent.load(checkpoint).predict([PROMPT] * 4, CANDIDATES)
        scores = np.array([c.score for c in sorted(result.candidates, key=lambda c: c.index)])
        np.testing.assert_allclose(scores, expected, atol=1e-5)
        assert result.selected_index == int(np.argmax(expected))
        assert result.margin == pytest.approx(np.sort(expected)[-1] - np.sort(expected)[-2], abs=1e-5)
        assert [d.name for d in result.diagnostics] == ["distilled"]
        assert result.diagnostics[0].kind == "cross_encoder"
    finally:
        await worker.close()


async def test_cascade_stays_on_the_cross_encoder_when_it_is_decisive(checkpoint):
    worker = await started(worker_config(checkpoint, margin=0.0))
    try:
        result = await worker.run(rerank("cascade", profile="cheap"))
        assert result.status == "ok", result.error
        assert result.aggregator_note.startswith("cascade: cross-encoder")
        assert result.verifier_names == ["distilled"]  # the ensemble never ran
    finally:
        await worker.close()


async def test_cascade_falls_back_to_weaver_over_the_ensemble_when_unsure(checkpoint):
    worker = await started(worker_config(checkpoint, margin=1.01))  # no margin is ever big enough
    try:
        rng = np.random.default_rng(0)
        matrices = [np.column_stack([rng.choice([0.25, 0.5, 1.0], 4), rng.random(4)]) for _ in range(50)]
        model = WeaverModel.fit(matrices, ["answer_agreement", "math_check"])
        worker.set_weaver_model(model)
        result = await worker.run(rerank("cascade", profile="cheap"))
        assert result.status == "ok", result.error
        assert result.aggregator_note.startswith("cascade: full ensemble")
        assert f"Weaver {model.version}" in result.aggregator_note
        assert result.verifier_names == ["distilled", "answer_agreement", "math_check"]
        weaver = await worker.run(rerank("weaver", profile="cheap"))
        assert result.selected_index == weaver.selected_index
        np.testing.assert_allclose([c.score for c in result.candidates], [c.score for c in weaver.candidates])
    finally:
        await worker.close()


async def test_without_a_cross_encoder_the_aggregators_are_refused():
    config = WorkerConfig.model_validate({"verifiers": [{"name": "answer_agreement", "type": "answer_agreement"}],
                                          "cache": {"memory_size": 0}})
    worker = await started(config)
    try:
        result = await worker.run(rerank("cascade"))
        assert result.status == "error" and result.error_type == "invalid_request_error"
        assert "cascade" in (result.error or "")
    finally:
        await worker.close()
