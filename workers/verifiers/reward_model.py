"""Any Hugging Face sequence-classification reward model with a scalar head.

Scores are the raw head outputs (logits), never squashed: the label model normalizes per
verifier. Pairs go through the tokenizer's chat template when it has one (reward models are
trained on chat-formatted conversations), else as a (prompt, candidate) text pair.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from workers.model_paths import pretrained_dir
from workers.verifiers.base import Item, PairItem, Score, Scored, Verifier


class RewardModelVerifier(Verifier):
    kind = "reward_model"
    expected_cost_s = 0.5
    default_max_batch_size = 32
    default_max_wait_ms = 5.0
    default_timeout_s = 120.0

    def __init__(self, name: str, model: str, device: str = "cpu", dtype: str = "float32", max_length: int = 1024,
                 forward_batch_size: int = 8, label_index: int = 0, use_chat_template: bool = True,
                 **batching: Any) -> None:
        super().__init__(name, **batching)
        self.model_path, self.device, self.dtype = model, device, dtype
        self.max_length, self.forward_batch_size, self.label_index = max_length, forward_batch_size, label_index
        self.use_chat_template = use_chat_template
        self._model: Any = None
        self._tokenizer: Any = None

    def version_params(self) -> dict[str, object]:
        return {"model": self.model_path, "dtype": self.dtype, "max_length": self.max_length,
                "label_index": self.label_index, "chat": self.use_chat_template}

    def load(self) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        directory = pretrained_dir(self.model_path)
        self._tokenizer = AutoTokenizer.from_pretrained(directory)
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        self._model = AutoModelForSequenceClassification.from_pretrained(directory, dtype=getattr(torch, self.dtype))
        if self._model.config.pad_token_id is None:
            self._model.config.pad_token_id = self._tokenizer.pad_token_id
        self._model.to(self.device).eval()

    def _encode(self, items: Sequence[PairItem]) -> Any:
        chat = self.use_chat_template and getattr(self._tokenizer, "chat_template", None)
        if chat:
            texts = [self._tokenizer.apply_chat_template(
                [{"role": "user", "content": i.prompt}, {"role": "assistant", "content": i.candidate}],
                tokenize=False) for i in items]
            return self._tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                                   max_length=self.max_length, add_special_tokens=False)
        return self._tokenizer([i.prompt for i in items], [i.candidate for i in items], return_tensors="pt",
                               padding=True, truncation="longest_first", max_length=self.max_length)

    def score_sync(self, items: Sequence[Item]) -> list[Score | Scored]:
        import torch

        if self._model is None:
            self.load()
        pairs = [item for item in items if isinstance(item, PairItem)]
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i].prompt) + len(pairs[i].candidate))
        scores = [math.nan] * len(pairs)
        for start in range(0, len(order), self.forward_batch_size):
            chunk = order[start: start + self.forward_batch_size]
            enc = self._encode([pairs[i] for i in chunk]).to(self.device)
            with torch.inference_mode():
                logits = self._model(**enc).logits.float()
            for i, value in zip(chunk, logits[:, self.label_index].tolist(), strict=True):
                scores[i] = float(value)
        return list(scores)
