"""The training code path on a tiny randomly initialised BERT built from a config."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.distill.dataset import DistillQuery, split_by_query
from models.distill.regimes import FreshSampleSource, OfflineSource, SemiOnlineSource
from models.distill.report import plot_runs, write_log
from models.distill.student import CrossEncoderStudent, default_base_model
from models.distill.trainer import TrainConfig, predict_queries, train


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_base_model())


def tiny_student(tokenizer, seed: int = 0) -> CrossEncoderStudent:
    from transformers import BertConfig

    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    return CrossEncoderStudent.from_config(config, tokenizer, max_length=48, seed=seed)


def synthetic_queries(n: int, seed: int = 0) -> list[DistillQuery]:
    """Candidates whose correctness is visible in the text, so the student can learn something."""
    rng = np.random.default_rng(seed)
    out = []
    for q in range(n):
        labels = rng.random(4) < 0.4
        texts = tuple(f"step {i} so the answer is {'right' if ok else 'wrong'} {q}" for i, ok in enumerate(labels))
        teacher = np.where(labels, 0.85, 0.15) + rng.normal(0, 0.03, 4)
        out.append(DistillQuery(f"q{q}", f"problem number {q}: add {q} and {q + 1}", texts,
                                np.clip(teacher, 0.01, 0.99), labels.astype(float)))
    return out


def test_training_reduces_held_out_proxy_and_restores_best(tokenizer, tmp_path):
    split = split_by_query(synthetic_queries(60), val_fraction=0.25, seed=1)
    student = tiny_student(tokenizer)
    config = TrainConfig(epochs=4, batch_size=16, lr=2e-3, eval_every=3, patience=0, warmup_steps=2,
                         select_by="golden", stop_on_hacking=False)
    result = train(student, OfflineSource(split.train), split.val, config)

    assert result.steps == 4 * int(np.ceil(len(split.train) * 4 / 16))
    assert result.history[0].step == 0 and result.history[-1].step == result.steps
    assert result.history[-1].proxy_bce < result.history[0].proxy_bce
    assert result.source["mean_passes"] == pytest.approx(4.0)
    # the restored model is the best checkpoint: re-evaluating reproduces the best point's metrics
    probs = np.concatenate(predict_queries(student, split.val))
    teacher = np.concatenate([q.teacher for q in split.val])
    p = np.clip(probs, 1e-6, 1 - 1e-6)
    reproduced = float(np.mean(-(teacher * np.log(p) + (1 - teacher) * np.log(1 - p))))
    assert reproduced == pytest.approx(result.best.proxy_bce, rel=1e-5)
    assert result.select_metric == "golden_auroc"
    assert result.best.golden_auroc == max(h.golden_auroc for h in result.history)

    # save -> load round trip gives the same predictions
    student.save(tmp_path / "ckpt")
    loaded = CrossEncoderStudent.load(tmp_path / "ckpt")
    again = np.concatenate(predict_queries(loaded, split.val))
    np.testing.assert_allclose(again, probs, atol=1e-6)

    write_log(tmp_path / "log.json", {"offline": result})
    log = json.loads((tmp_path / "log.json").read_text())
    assert log["runs"]["offline"]["best_step"] == result.best_step
    png = plot_runs(tmp_path / "plot.png", {"offline": result})
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_restore_replaces_later_weights(tokenizer):
    student = tiny_student(tokenizer)
    saved = student.state()
    before = student.predict(["p"], ["c"])
    with torch.no_grad():
        for param in student.model.parameters():
            param.add_(1.0)
    assert not np.allclose(student.predict(["p"], ["c"]), before)
    student.restore(saved)
    np.testing.assert_allclose(student.predict(["p"], ["c"]), before)


def test_semi_online_serves_unseen_pairs_first():
    pool = synthetic_queries(10)  # 40 pairs
    source = SemiOnlineSource(pool, pairs_per_epoch=15)
    rng = np.random.default_rng(0)
    first, second = source.epoch(0, rng), source.epoch(1, rng)
    assert not {p.key for p in first} & {p.key for p in second}
    third = source.epoch(2, rng)  # 10 unseen left, then 5 seen once
    assert len({p.key for p in first + second + third}) == 40
    assert source.stats()["distinct_pairs"] == 40


def test_fresh_sample_source_asks_for_fresh_queries_each_round():
    rounds = []

    def fetch(r: int) -> list[DistillQuery]:
        rounds.append(r)
        return synthetic_queries(3, seed=r)

    source = FreshSampleSource(fetch, rounds=2)
    rng = np.random.default_rng(0)
    assert len(source.epoch(0, rng)) == 12 and len(source.epoch(1, rng)) == 12
    assert source.epoch(2, rng) == [] and rounds == [0, 1]


def test_patience_stops_and_unlabelled_validation_selects_by_proxy(tokenizer):
    queries = synthetic_queries(30)
    split = split_by_query(queries, val_fraction=0.3, seed=0)
    val = [DistillQuery(q.id, q.prompt, q.candidates, q.teacher, None) for q in split.val]
    student = tiny_student(tokenizer)
    config = TrainConfig(epochs=50, batch_size=8, lr=0.0, eval_every=2, patience=2, warmup_steps=1)
    result = train(student, OfflineSource(split.train), val, config)  # lr 0: nothing improves
    assert result.select_metric == "proxy_bce"
    assert result.stop_reason.startswith("no improvement")
    assert result.steps == 4 and result.best_step == 0
    assert result.history[-1].golden_auroc is None


def test_training_and_construction_leave_the_callers_random_state_alone(tokenizer):
    """Seeding happens inside torch.random.fork_rng: reproducible runs, no hidden global side effect."""
    split = split_by_query(synthetic_queries(12), val_fraction=0.25, seed=0)
    config = TrainConfig(epochs=1, batch_size=8, eval_every=2, patience=0, stop_on_hacking=False, seed=3)
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    student = tiny_student(tokenizer, seed=5)
    train(student, OfflineSource(split.train), split.val, config)
    assert torch.equal(torch.rand(3), expected)
    # and the same seeds give the same student
    again = tiny_student(tokenizer, seed=5)
    train(again, OfflineSource(split.train), split.val, config)
    first, second = predict_queries(student, split.val), predict_queries(again, split.val)
    assert all(np.allclose(a, b) for a, b in zip(first, second, strict=True))
