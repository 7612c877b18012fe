"""The student's sibling context: features, the context head, training it, and serving it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.distill.dataset import DistillQuery, split_by_query
from models.distill.features import DEFAULT_CONTEXT_FEATURES, check_feature_names, context_matrix
from models.distill.regimes import SemiOnlineSource
from models.distill.student import CrossEncoderStudent, default_base_model
from models.distill.trainer import TrainConfig, predict_queries, train
from workers.config import WorkerConfig
from workers.contract import Job
from workers.entry import Worker

PROMPT = "Tom has 3 apples and buys 4 more. How many apples does he have?"
CANDIDATES = ["3 + 4 = 7\n#### 7", "3 * 4 = 12\n#### 12", "He has 7 apples.\n#### 7", "I am not sure."]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_base_model())


def tiny_student(tokenizer, features=DEFAULT_CONTEXT_FEATURES, seed: int = 0) -> CrossEncoderStudent:
    from transformers import BertConfig

    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    return CrossEncoderStudent.from_config(config, tokenizer, max_length=48, seed=seed, context_features=features)


def test_features_describe_the_siblings():
    matrix = context_matrix(CANDIDATES, DEFAULT_CONTEXT_FEATURES)
    assert matrix.shape == (4, 2)
    # 7 is shared by two of four: each sees one of its three siblings agree; 12 none; no answer -> 0
    np.testing.assert_allclose(matrix[:, 0], [1 / 3, 0.0, 1 / 3, 0.0])
    np.testing.assert_allclose(matrix[:, 1], [0.0, 0.0, 0.0, 1.0])
    assert context_matrix(CANDIDATES, ()).shape == (4, 0)
    with pytest.raises(ValueError, match="unknown context feature"):
        check_feature_names(["sibling_agreement", "vibes"])


def test_context_head_is_saved_restored_and_required(tokenizer, tmp_path):
    student = tiny_student(tokenizer)
    context = context_matrix(CANDIDATES, student.context_features)
    before = student.predict([PROMPT] * 4, CANDIDATES, context=context)
    saved = student.state()
    with torch.no_grad():
        student.context_head.weight.fill_(3.0)
    changed = student.predict([PROMPT] * 4, CANDIDATES, context=context)
    assert changed[0] > before[0] and changed[1] == pytest.approx(before[1], abs=1e-6)  # only agreeing ones move
    student.restore(saved)
    np.testing.assert_allclose(student.predict([PROMPT] * 4, CANDIDATES, context=context), before, atol=1e-6)

    with torch.no_grad():
        student.context_head.weight.copy_(torch.tensor([[2.5, -1.5]]))
    student.save(tmp_path / "ckpt")
    loaded = CrossEncoderStudent.load(tmp_path / "ckpt")
    assert loaded.context_features == DEFAULT_CONTEXT_FEATURES
    assert loaded.context_weights() == pytest.approx({"sibling_agreement": 2.5, "no_answer": -1.5,
                                                      "bias": student.context_weights()["bias"]})
    np.testing.assert_allclose(loaded.predict([PROMPT] * 4, CANDIDATES, context=context),
                               student.predict([PROMPT] * 4, CANDIDATES, context=context), atol=1e-6)
    with pytest.raises(ValueError, match="needs context features"):
        loaded.predict([PROMPT] * 4, CANDIDATES)


def agreement_queries(n: int, seed: int = 0) -> list[DistillQuery]:
    """A group-level teacher: P(correct) follows answer agreement, which no single text reveals."""
    rng = np.random.default_rng(seed)
    out = []
    for q in range(n):
        right, wrong = q + 3, q + 5
        answers = [right if rng.random() < 0.6 else wrong + int(rng.integers(0, 3)) for _ in range(4)]
        texts = tuple(f"we work it out step by step\n#### {a}" for a in answers)
        shares = context_matrix(texts, ("sibling_agreement",))[:, 0]
        teacher = np.clip(0.1 + 0.8 * shares, 0.01, 0.99)
        out.append(DistillQuery(f"q{q}", f"problem {q}", texts, teacher,
                                np.array([float(a == right) for a in answers])))
    return out


def test_a_context_student_learns_a_group_teacher_that_a_pairwise_one_cannot(tokenizer):
    split = split_by_query(agreement_queries(80), val_fraction=0.25, seed=0)
    config = TrainConfig(epochs=3, batch_size=16, lr=1e-3, context_lr=0.1, eval_every=5, patience=0,
                         warmup_steps=2, stop_on_hacking=False, select_by="proxy")
    results = {}
    for name, features in (("pairwise", ()), ("context", DEFAULT_CONTEXT_FEATURES)):
        student = tiny_student(tokenizer, features)
        results[name] = (student, train(student, SemiOnlineSource(split.train, 64), split.val, config))
    context_student, context_result = results["context"]
    pairwise_result = results["pairwise"][1]
    agreement_weight = float(context_student.context_head.weight.detach()[0, 0])
    assert agreement_weight > 0.5  # it leans on sibling agreement, as the teacher does
    assert context_result.best.proxy_bce < pairwise_result.best.proxy_bce - 0.02
    assert context_result.best.proxy_top1 > pairwise_result.best.proxy_top1
    # the restored checkpoint is the one evaluated: prediction goes through the same context path
    probs = predict_queries(context_student, split.val)
    picks_agree = [q.teacher[int(np.argmax(p))] >= q.teacher.max() - 1e-9
                   for q, p in zip(split.val, probs, strict=True)]
    assert np.mean(picks_agree) == pytest.approx(context_result.best.proxy_top1)


async def test_a_context_checkpoint_is_served_with_its_siblings(tokenizer, tmp_path):
    student = tiny_student(tokenizer)
    with torch.no_grad():
        student.context_head.weight.copy_(torch.tensor([[6.0, -4.0]]))
    student.save(tmp_path / "ckpt")
    config = WorkerConfig.model_validate({
        "name": "context-test",
        "verifiers": [{"name": "distilled", "type": "cross_encoder", "params": {"model": str(tmp_path / "ckpt")},
                       "max_wait_ms": 1}],
        "profiles": {"ce": ["distilled"]}, "default_profile": "ce", "cache": {"memory_size": 0},
    })
    worker = Worker.from_config(config)
    await worker.start()
    try:
        assert worker.ready(), worker.readiness_errors()
        other = ["5 - 2 = 3\n#### 3", "#### 4"]
        jobs = [Job(kind="rerank", prompt=PROMPT, candidates=CANDIDATES, aggregator="cross_encoder"),
                Job(kind="rerank", prompt="Another question?", candidates=other, aggregator="cross_encoder")]
        import asyncio

        results = await asyncio.gather(*(worker.run(job) for job in jobs))  # batched together
        for job, result in zip(jobs, results, strict=True):
            assert result.status == "ok", result.error
            expected = student.predict([job.prompt] * len(job.candidates), job.candidates,
                                       context=context_matrix(job.candidates, student.context_features))
            scores = np.array([c.score for c in sorted(result.candidates, key=lambda c: c.index)])
            np.testing.assert_allclose(scores, expected, atol=1e-5)
        assert results[0].selected_index in (0, 2)  # the two agreeing answers outrank the others
    finally:
        await worker.close()
