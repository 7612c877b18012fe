"""Training loop: soft binary cross-entropy on teacher probabilities, monitored and early-stopped.

Every ``eval_every`` optimizer steps the student is scored on held-out queries (split by query);
the detector re-reads the whole history, and the loop stops on a teacher-hacking flag, on a proxy
deviation (when ``stop_on_deviation``), or when the selection metric has not improved for
``patience`` evaluations. The best checkpoint is then restored: best golden AUROC when the held-out
queries are labelled with both outcomes, otherwise best proxy BCE before the first deviation flag.
AUROC rather than golden BCE because a reranker is used for its ranking: golden BCE also charges
the student for the teacher's calibration, and on a miscalibrated teacher it prefers the untrained
student (P = 0.5 everywhere) to one that ranks well.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from models.distill.dataset import DistillQuery, Pair
from models.distill.detector import DetectorConfig, DetectorReport, detect
from models.distill.monitor import EvalPoint, held_out_metrics
from models.distill.regimes import DataSource
from models.distill.student import CrossEncoderStudent

SelectBy = Literal["golden", "proxy"]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    batch_size: int = 16
    lr: float = 5e-5
    context_lr: float = 0.05  # the context head's few weights need far bigger steps than the encoder
    weight_decay: float = 0.01
    warmup_steps: int = 10
    grad_clip: float = 1.0
    eval_every: int = 10  # optimizer steps between held-out evaluations
    patience: int = 4  # evaluations without improvement before stopping (0 = never)
    select_by: SelectBy = "golden"  # falls back to proxy when held-out queries have no labels
    stop_on_hacking: bool = True
    stop_on_deviation: bool = False
    label_weight: float = 0.0  # mix ground truth into the target where labels exist (beyond the paper)
    max_steps: int | None = None
    eval_batch_size: int = 64
    seed: int = 0
    detector: DetectorConfig = field(default_factory=DetectorConfig)


@dataclass
class TrainResult:
    history: list[EvalPoint]
    detector: DetectorReport
    best_step: int
    select_metric: str
    stop_reason: str
    steps: int
    seconds: float
    source: dict[str, float]
    config: TrainConfig

    @property
    def best(self) -> EvalPoint:
        return next(p for p in self.history if p.step == self.best_step)

    def to_json(self) -> dict[str, Any]:
        return {
            "best_step": self.best_step, "select_metric": self.select_metric, "stop_reason": self.stop_reason,
            "steps": self.steps, "seconds": round(self.seconds, 3), "source": self.source,
            "config": asdict(self.config), "detector": self.detector.to_json(),
            "history": [p.to_json() for p in self.history],
        }


def predict_queries(
    student: CrossEncoderStudent, queries: Sequence[DistillQuery], batch_size: int = 64
) -> list[np.ndarray]:
    """Student P(correct) per candidate, one array per query (one batched pass over all pairs)."""
    prompts = [q.prompt for q in queries for _ in q.candidates]
    texts = [c for q in queries for c in q.candidates]
    names = student.context_features
    context = np.concatenate([q.context_for(names) for q in queries]) if names and queries else None
    flat = student.predict(prompts, texts, batch_size=batch_size, context=context)
    out, start = [], 0
    for q in queries:
        out.append(flat[start:start + len(q.candidates)])
        start += len(q.candidates)
    return out


def train(
    student: CrossEncoderStudent,
    source: DataSource,
    val: Sequence[DistillQuery],
    config: TrainConfig | None = None,
    on_eval: Callable[[EvalPoint, DetectorReport], None] | None = None,
) -> TrainResult:
    """Train ``student`` on ``source`` and restore its best checkpoint; returns the monitored history.

    Dropout draws from torch's global generator (its modules take no generator), so the run seeds it inside
    ``torch.random.fork_rng``: training is reproducible and the caller's random state is left untouched.
    """
    config = config or TrainConfig()
    if not val:
        raise ValueError("held-out queries are required for monitoring (split by query first)")
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        return _train(student, source, val, config, on_eval)


def _train(
    student: CrossEncoderStudent,
    source: DataSource,
    val: Sequence[DistillQuery],
    config: TrainConfig,
    on_eval: Callable[[EvalPoint, DetectorReport], None] | None,
) -> TrainResult:
    rng = np.random.default_rng(config.seed)
    model = student.model
    model.train()
    optimizer = torch.optim.AdamW(student.parameter_groups(config.lr, config.context_lr),
                                  lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, config.warmup_steps))
    )
    loss_fn = torch.nn.BCEWithLogitsLoss()
    labelled = any(q.labels is not None for q in val)
    known = {float(v) for q in val if q.labels is not None for v in q.labels if not math.isnan(v)}
    select_metric = "golden_auroc" if config.select_by == "golden" and known >= {0.0, 1.0} else "proxy_bce"
    sign = -1.0 if select_metric == "golden_auroc" else 1.0  # minimise sign * metric

    history: list[EvalPoint] = []
    report = detect([], [])
    best_value, best_step, best_state = math.inf, 0, student.state()
    stale = 0
    step, pairs_seen = 0, 0
    window_losses: list[float] = []
    stop_reason = "completed"
    start = time.perf_counter()

    def evaluate(epoch: float) -> str | None:
        nonlocal best_value, best_step, best_state, stale, report, window_losses
        metrics = held_out_metrics(val, predict_queries(student, val, config.eval_batch_size))
        point = EvalPoint(step=step, pairs_seen=pairs_seen, epoch=round(epoch, 4),
                          train_loss=float(np.mean(window_losses)) if window_losses else float("nan"),
                          **metrics)  # type: ignore[arg-type]
        window_losses = []
        history.append(point)
        report = detect([p.step for p in history], [p.proxy_bce for p in history],
                        [p.golden_auroc for p in history] if labelled else None,
                        [p.golden_bce for p in history] if labelled else None, config.detector)
        deviation = report.first("proxy_deviation")
        raw = getattr(point, select_metric)
        value = None if raw is None or math.isnan(raw) else sign * raw
        eligible = select_metric != "proxy_bce" or deviation is None or point.step < deviation.step
        if value is not None and eligible and value < best_value:
            best_value, best_step, best_state, stale = value, point.step, student.state(), 0
        else:
            stale += 1
        if on_eval is not None:
            on_eval(point, report)
        if config.stop_on_hacking and report.first("teacher_hacking") is not None:
            return "teacher_hacking"
        if config.stop_on_deviation and deviation is not None:
            return "proxy_deviation"
        if config.patience and stale >= config.patience:
            return f"no improvement of {select_metric} in {config.patience} evaluations"
        return None

    reason = evaluate(0.0)
    epoch = 0
    while reason is None and epoch < config.epochs:
        pairs = source.epoch(epoch, rng)
        if not pairs:
            stop_reason = "data source exhausted"
            break
        n_batches = math.ceil(len(pairs) / config.batch_size)
        for b in range(n_batches):
            batch: list[Pair] = pairs[b * config.batch_size:(b + 1) * config.batch_size]
            target = torch.tensor([_target(p, config.label_weight) for p in batch], dtype=torch.float32)
            logits = student.logits([p.prompt for p in batch], [p.candidate for p in batch],
                                    _context(batch, student.context_features))
            loss = loss_fn(logits.float(), target)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            pairs_seen += len(batch)
            window_losses.append(float(loss.detach()))
            if step % config.eval_every == 0:
                reason = evaluate(epoch + (b + 1) / n_batches)
                if reason is not None:
                    break
            if config.max_steps is not None and step >= config.max_steps:
                reason = f"max_steps {config.max_steps} reached"
                break
        epoch += 1
    if reason is None and (not history or history[-1].step != step):
        reason = evaluate(float(epoch))
    if reason is not None:
        stop_reason = reason
    student.restore(best_state)
    model.eval()
    return TrainResult(history, report, best_step, select_metric, stop_reason, step,
                       time.perf_counter() - start, source.stats(), config)


def _context(batch: Sequence[Pair], names: Sequence[str]) -> np.ndarray | None:
    if not names:
        return None
    return np.array([[p.context[n] for n in names] for p in batch], dtype=float)


def _target(pair: Pair, label_weight: float) -> float:
    if label_weight > 0 and not math.isnan(pair.label):
        return (1 - label_weight) * pair.teacher + label_weight * pair.label
    return pair.teacher
