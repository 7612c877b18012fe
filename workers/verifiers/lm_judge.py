"""A causal LM asked a yes/no question about each candidate.

score = P(yes) / (P(yes) + P(no)) for the judge's next token, where P(yes) sums the probabilities
of the configured "yes" spellings (first token of each) and likewise for "no". Two backends:
``transformers`` (a local model; batched forward passes that share each prompt's KV cache among its
candidates, explicit position ids so a score does not depend on what it was batched with) and
``openai`` (any OpenAI-compatible / vLLM server's chat completions with ``logprobs``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any, Literal

import httpx

from workers.model_paths import SMOLLM2_GGUF, load_causal_lm
from workers.verifiers.base import Item, PairItem, Score, Scored, Verifier
from workers.verifiers.http import auth_headers, post_json
from workers.verifiers.judge_prompt import (
    DEFAULT_NO,
    DEFAULT_SYSTEM,
    DEFAULT_TEMPLATE,
    DEFAULT_YES,
    defuse_special_tokens,
    render_judge_messages,
    yes_probability,
)

_SENTINEL = "\u2063WEAVER-CANDIDATE\u2063"


class LMJudgeVerifier(Verifier):
    kind = "lm_judge"
    expected_cost_s = 1.0
    default_max_batch_size = 16
    default_max_wait_ms = 10.0
    default_timeout_s = 120.0

    def __init__(self, name: str, model: str = SMOLLM2_GGUF,
                 backend: Literal["transformers", "openai"] = "transformers",
                 device: str = "cpu", dtype: str = "float32", template: str = DEFAULT_TEMPLATE,
                 system: str | None = DEFAULT_SYSTEM, yes_tokens: Sequence[str] = DEFAULT_YES,
                 no_tokens: Sequence[str] = DEFAULT_NO, max_candidate_chars: int | None = 1500,
                 max_length: int = 1024, forward_batch_size: int = 8, base_url: str | None = None,
                 api_key_env: str | None = None, request_timeout_s: float = 30.0, retries: int = 2,
                 top_logprobs: int = 20, **batching: Any) -> None:
        super().__init__(name, **batching)
        if "{candidate}" not in template or "{prompt}" not in template:
            raise ValueError("lm_judge template needs {prompt} and {candidate} placeholders")
        if backend == "openai" and not base_url:
            raise ValueError("lm_judge backend 'openai' needs base_url")
        self.model_path, self.backend, self.device, self.dtype = model, backend, device, dtype
        self.template, self.system = template, system
        self.yes_tokens, self.no_tokens = tuple(yes_tokens), tuple(no_tokens)
        self.max_candidate_chars, self.max_length = max_candidate_chars, max_length
        self.forward_batch_size = forward_batch_size
        self.base_url, self.api_key_env = base_url, api_key_env
        self.request_timeout_s, self.retries, self.top_logprobs = request_timeout_s, retries, top_logprobs
        self._model: Any = None
        self._tokenizer: Any = None
        self._yes_ids: list[int] = []
        self._no_ids: list[int] = []
        self._client: httpx.AsyncClient | None = None

    def version_params(self) -> dict[str, object]:
        return {"model": self.model_path, "backend": self.backend, "template": self.template, "system": self.system,
                "yes": self.yes_tokens, "no": self.no_tokens, "max_candidate_chars": self.max_candidate_chars,
                "max_length": self.max_length, "dtype": self.dtype}

    def _messages(self, item: PairItem) -> list[dict[str, str]]:
        prompt, candidate = item.prompt, item.candidate
        if self._tokenizer is not None:  # data must never contain the tokenizer's own control tokens
            specials = getattr(self._tokenizer, "all_special_tokens", [])
            prompt, candidate = defuse_special_tokens(prompt, specials), defuse_special_tokens(candidate, specials)
        return render_judge_messages(prompt, candidate, self.template, self.system, self.max_candidate_chars)

    # -- transformers backend ---------------------------------------------------------------
    def load(self) -> None:
        if self.backend != "transformers":
            return
        self._model, self._tokenizer = load_causal_lm(self.model_path, self.device, self.dtype)
        self._tokenizer.truncation_side = "left"  # keep the question at the end of the prompt
        self._yes_ids = self._first_token_ids(self.yes_tokens)
        self._no_ids = self._first_token_ids(self.no_tokens)
        if not self._yes_ids or not self._no_ids or set(self._yes_ids) & set(self._no_ids):
            raise ValueError(f"yes/no tokens are ambiguous for this tokenizer: {self._yes_ids} vs {self._no_ids}")

    def _first_token_ids(self, words: Sequence[str]) -> list[int]:
        ids: set[int] = set()
        for word in words:
            for variant in (word, " " + word):
                tokens = self._tokenizer.encode(variant, add_special_tokens=False)
                if tokens:
                    ids.add(tokens[0])
        return sorted(ids)

    def _render(self, item: PairItem) -> str:
        messages = self._messages(item)
        if getattr(self._tokenizer, "chat_template", None):
            return str(self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        return "\n\n".join(m["content"] for m in messages) + "\nAnswer:"

    def _split(self, item: PairItem) -> tuple[str, str]:
        """(shared prefix, candidate-specific rest) of the rendered judge prompt."""
        text = self._render(item)
        probe = self._render(PairItem(item.prompt, _SENTINEL, item.context))
        cut = probe.find(_SENTINEL)
        if cut < 0 or text[:cut] != probe[:cut]:
            return "", text
        return text[:cut], text[cut:]

    def score_sync(self, items: Sequence[Item]) -> list[Score | Scored]:
        """Siblings share their prompt: its KV cache is computed once per group and reused for every
        candidate (system prompt + problem are ~half the tokens of a judge call)."""
        if self._model is None:
            self.load()
        pairs = [item for item in items if isinstance(item, PairItem)]
        groups: dict[str, list[tuple[int, str]]] = {}
        for index, item in enumerate(pairs):
            prefix, rest = self._split(item)
            groups.setdefault(prefix, []).append((index, rest))
        scores = [math.nan] * len(pairs)
        for prefix, members in groups.items():
            members.sort(key=lambda m: len(m[1]))  # similar lengths share padding
            for start in range(0, len(members), self.forward_batch_size):
                chunk = members[start: start + self.forward_batch_size]
                for (index, _), value in zip(chunk, self._judge_chunk(prefix, [r for _, r in chunk]), strict=True):
                    scores[index] = value
        return list(scores)

    def _judge_chunk(self, prefix: str, rests: list[str]) -> list[float]:
        import copy

        import torch

        tok = self._tokenizer
        prefix_ids = tok(prefix, add_special_tokens=False)["input_ids"] if prefix else []
        budget = max(8, self.max_length - len(prefix_ids))
        tok.padding_side = "right"
        try:
            enc = tok(rests, return_tensors="pt", padding=True, truncation=True, max_length=budget,
                      add_special_tokens=False)
        finally:
            tok.padding_side = "left"
        ids, mask = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
        batch, offset = ids.shape[0], len(prefix_ids)
        decoder = self._model.get_decoder()
        with torch.inference_mode():
            cache = None
            if prefix_ids:
                prefix_tensor = torch.tensor([prefix_ids], device=self.device)
                cache = decoder(input_ids=prefix_tensor, use_cache=True).past_key_values
                cache = copy.deepcopy(cache)
                cache.batch_repeat_interleave(batch)
            full_mask = torch.cat([torch.ones(batch, offset, dtype=mask.dtype, device=self.device), mask], dim=1)
            positions = (offset + torch.arange(ids.shape[1], device=self.device)).unsqueeze(0).expand(batch, -1)
            hidden = decoder(input_ids=ids, attention_mask=full_mask, position_ids=positions, past_key_values=cache,
                             use_cache=cache is not None).last_hidden_state
            last = mask.sum(dim=1) - 1
            logits = self._model.get_output_embeddings()(hidden[torch.arange(batch), last]).float()
        logp = torch.log_softmax(logits, dim=-1)
        p_yes = torch.logsumexp(logp[:, torch.tensor(self._yes_ids)], dim=-1)
        p_no = torch.logsumexp(logp[:, torch.tensor(self._no_ids)], dim=-1)
        return [float(v) for v in torch.sigmoid(p_yes - p_no).tolist()]  # = P(yes) / (P(yes) + P(no))

    # -- OpenAI-compatible backend ------------------------------------------------------------
    async def score(self, items: Sequence[Item], executor: Executor | None = None) -> list[Score | Scored]:
        if self.backend == "transformers":
            return await super().score(items, executor)
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.base_url or "", timeout=self.request_timeout_s,
                                             headers=auth_headers(self.api_key_env))
        pairs = [item for item in items if isinstance(item, PairItem)]
        results = await asyncio.gather(*(self._judge_remote(item) for item in pairs))
        return list(results)

    async def _judge_remote(self, item: PairItem) -> float:
        assert self._client is not None
        payload = {"model": self.model_path, "messages": self._messages(item), "max_tokens": 1, "temperature": 0.0,
                   "logprobs": True, "top_logprobs": self.top_logprobs}
        body = await post_json(self._client, "/chat/completions", payload, retries=self.retries)
        content = body["choices"][0].get("logprobs", {}).get("content") or []
        if not content:
            raise ValueError("the judge server returned no logprobs (does it support logprobs=true?)")
        top = {entry["token"]: float(entry["logprob"]) for entry in content[0].get("top_logprobs", [])}
        top.setdefault(content[0]["token"], float(content[0]["logprob"]))
        return yes_probability(top, self.yes_tokens, self.no_tokens)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
