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


class _TrainingRun:
    """One run's mutable state: step counters, held-out history, detector report and the best checkpoint."""

    def __init__(self, student: CrossEncoderStudent, val: Sequence[DistillQuery], config: TrainConfig,
                 on_eval: Callable[[EvalPoint, DetectorReport], None] | None) -> None:
        self.student, self.val, self.config, self.on_eval = student, val, config, on_eval
        self.labelled = any(q.labels is not None for q in val)
        known = {float(v) for q in val if q.labels is not None for v in q.labels if not math.isnan(v)}
        self.select_metric = "golden_auroc" if config.select_by == "golden" and known >= {0.0, 1.0} else "proxy_bce"
        self.sign = -1.0 if self.select_metric == "golden_auroc" else 1.0  # minimise sign * metric
        self.history: list[EvalPoint] = []
        self.report = detect([], [])
        self.best_value, self.best_step, self.best_state = math.inf, 0, student.state()
        self.stale = 0
        self.step = 0
        self.pairs_seen = 0
        self.window_losses: list[float] = []

    def evaluate(self, epoch: float) -> str | None:
        """Score the held-out queries, update the detector and the best checkpoint; a reason to stop, or None."""
        metrics = held_out_metrics(self.val, predict_queries(self.student, self.val, self.config.eval_batch_size))
        point = EvalPoint(step=self.step, pairs_seen=self.pairs_seen, epoch=round(epoch, 4),
                          train_loss=float(np.mean(self.window_losses)) if self.window_losses else float("nan"),
                          **metrics)  # type: ignore[arg-type]
        self.window_losses = []
        self.history.append(point)
        history, labelled = self.history, self.labelled
        self.report = detect([p.step for p in history], [p.proxy_bce for p in history],
                             [p.golden_auroc for p in history] if labelled else None,
                             [p.golden_bce for p in history] if labelled else None, self.config.detector)
        deviation = self.report.first("proxy_deviation")
        self._keep_if_best(point, deviation)
        if self.on_eval is not None:
            self.on_eval(point, self.report)
        return self._stop_reason(deviation)

    def _keep_if_best(self, point: EvalPoint, deviation: Any) -> None:
        raw = getattr(point, self.select_metric)
        value = None if raw is None or math.isnan(raw) else self.sign * raw
        eligible = self.select_metric != "proxy_bce" or deviation is None or point.step < deviation.step
        if value is not None and eligible and value < self.best_value:
            self.best_value, self.best_step, self.best_state, self.stale = value, point.step, self.student.state(), 0
        else:
            self.stale += 1

    def _stop_reason(self, deviation: Any) -> str | None:
        config = self.config
        if config.stop_on_hacking and self.report.first("teacher_hacking") is not None:
            return "teacher_hacking"
        if config.stop_on_deviation and deviation is not None:
            return "proxy_deviation"
        if config.patience and self.stale >= config.patience:
            return f"no improvement of {self.select_metric} in {config.patience} evaluations"
        return None


def _train(
    student: CrossEncoderStudent,
    source: DataSource,
    val: Sequence[DistillQuery],
    config: TrainConfig,
    on_eval: Callable[[EvalPoint, DetectorReport], None] | None,
) -> TrainResult:
    rng = np.random.default_rng(config.seed)
    student.model.train()
    optimizer = torch.optim.AdamW(student.parameter_groups(config.lr, config.context_lr),
                                  lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, config.warmup_steps))
    )
    run = _TrainingRun(student, val, config, on_eval)
    start = time.perf_counter()
    stop_reason = "completed"
    reason = run.evaluate(0.0)
    epoch = 0
    while reason is None and epoch < config.epochs:
        pairs = source.epoch(epoch, rng)
        if not pairs:
            stop_reason = "data source exhausted"
            break
        reason = _train_epoch(run, pairs, epoch, optimizer, scheduler)
        epoch += 1
    if reason is None and (not run.history or run.history[-1].step != run.step):
        reason = run.evaluate(float(epoch))
    if reason is not None:
        stop_reason = reason
    student.restore(run.best_state)
    student.model.eval()
    return TrainResult(run.history, run.report, run.best_step, run.select_metric, stop_reason, run.step,
                       time.perf_counter() - start, source.stats(), config)


def _train_epoch(run: _TrainingRun, pairs: list[Pair], epoch: int, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler) -> str | None:
    """One pass over ``pairs`` in batches, evaluating every ``eval_every`` steps; a reason to stop, or None."""
    config, student = run.config, run.student
    loss_fn = torch.nn.BCEWithLogitsLoss()
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
        run.step += 1
        run.pairs_seen += len(batch)
        run.window_losses.append(float(loss.detach()))
        if run.step % config.eval_every == 0:
            reason = run.evaluate(epoch + (b + 1) / n_batches)
            if reason is not None:
                return reason
        if config.max_steps is not None and run.step >= config.max_steps:
            return f"max_steps {config.max_steps} reached"
    return None


def _context(batch: Sequence[Pair], names: Sequence[str]) -> np.ndarray | None:
    if not names:
        return None
    return np.array([[p.context[n] for n in names] for p in batch], dtype=float)


def _target(pair: Pair, label_weight: float) -> float:
    if label_weight > 0 and not math.isnan(pair.label):
        return (1 - label_weight) * pair.teacher + label_weight * pair.label
    return pair.teacher
