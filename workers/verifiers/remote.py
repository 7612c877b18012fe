"""A verifier served elsewhere over HTTP.

Protocols:
- ``vllm_score``: vLLM ``POST /score`` (cross-encoder / reward scoring), pairwise lists;
- ``vllm_classify``: vLLM ``POST /classify``; the score is ``probs[label_index]`` (default the last
  label: the positive class of a binary classifier);
- ``vllm_pooling``: vLLM ``POST /pooling`` (reward heads); the score is the first pooled value;
- ``tei_rerank``: Hugging Face TEI ``POST /rerank`` (one query, many texts; raw scores);
- ``openai_judge``: an OpenAI-compatible chat server asked the yes/no judge question (logprobs).
One batch becomes one request per protocol call (TEI: one per distinct prompt, concurrently);
requests retry with backoff and time out (see ``workers.verifiers.http``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any, Literal

import httpx

from workers.verifiers.base import Item, PairItem, Score, Scored, Verifier
from workers.verifiers.http import auth_headers, post_json
from workers.verifiers.lm_judge import LMJudgeVerifier

Protocol = Literal["vllm_score", "vllm_classify", "vllm_pooling", "tei_rerank", "openai_judge"]


def _pair_text(item: PairItem, separator: str) -> str:
    return f"{item.prompt}{separator}{item.candidate}"


class RemoteVerifier(Verifier):
    kind = "remote"
    default_max_batch_size = 64
    default_max_wait_ms = 5.0
    default_timeout_s = 60.0

    def __init__(self, name: str, base_url: str, protocol: Protocol = "vllm_score", model: str | None = None,
                 api_key_env: str | None = None, request_timeout_s: float = 30.0, retries: int = 3,
                 backoff_s: float = 0.2, label_index: int = -1, separator: str = "\n\n", **extra: Any) -> None:
        batching = {k: extra.pop(k) for k in ("max_batch_size", "max_wait_ms", "timeout_s") if k in extra}
        super().__init__(name, **batching)
        self.base_url, self.protocol, self.model = base_url.rstrip("/"), protocol, model
        self.api_key_env, self.request_timeout_s, self.retries, self.backoff_s = (
            api_key_env, request_timeout_s, retries, backoff_s)
        self.label_index, self.separator = label_index, separator
        self._client: httpx.AsyncClient | None = None
        self._judge: LMJudgeVerifier | None = None
        if protocol == "openai_judge":
            self._judge = LMJudgeVerifier(name, model=model or "", backend="openai", base_url=self.base_url,
                                          api_key_env=api_key_env, request_timeout_s=request_timeout_s,
                                          retries=retries, **extra)
        elif extra:
            raise TypeError(f"unknown parameters for remote/{protocol}: {', '.join(sorted(extra))}")

    def version_params(self) -> dict[str, object]:
        judge = self._judge.version_params() if self._judge else None
        return {"url": self.base_url, "protocol": self.protocol, "model": self.model,
                "label_index": self.label_index, "judge": judge}

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.base_url, timeout=self.request_timeout_s,
                                             headers=auth_headers(self.api_key_env))
        return self._client

    async def _post(self, path: str, payload: dict[str, Any]) -> Any:
        if self.model is not None:
            payload = {"model": self.model, **payload}
        return await post_json(self._http(), path, payload, retries=self.retries, backoff_s=self.backoff_s)

    async def score(self, items: Sequence[Item], executor: Executor | None = None) -> list[Score | Scored]:
        pairs = [item for item in items if isinstance(item, PairItem)]
        if self._judge is not None:
            return await self._judge.score(pairs, executor)
        if self.protocol == "vllm_score":
            body = await self._post("/score", {"text_1": [p.prompt for p in pairs],
                                               "text_2": [p.candidate for p in pairs]})
            return _by_index(body["data"], len(pairs), lambda d: float(d["score"]))
        if self.protocol == "vllm_classify":
            body = await self._post("/classify", {"input": [_pair_text(p, self.separator) for p in pairs]})
            return _by_index(body["data"], len(pairs), lambda d: float(d["probs"][self.label_index]))
        if self.protocol == "vllm_pooling":
            body = await self._post("/pooling", {"input": [_pair_text(p, self.separator) for p in pairs]})
            return _by_index(body["data"], len(pairs), lambda d: float(_first(d["data"])))
        if self.protocol == "tei_rerank":
            return await self._tei_rerank(pairs)
        raise ValueError(f"unknown remote protocol {self.protocol!r}")

    async def _tei_rerank(self, pairs: Sequence[PairItem]) -> list[Score | Scored]:
        by_prompt: dict[str, list[int]] = {}
        for i, pair in enumerate(pairs):
            by_prompt.setdefault(pair.prompt, []).append(i)
        scores: list[Score | Scored] = [float("nan")] * len(pairs)

        async def one(prompt: str, indices: list[int]) -> None:
            body = await self._post("/rerank", {"query": prompt, "texts": [pairs[i].candidate for i in indices],
                                                "raw_scores": True, "truncate": True})
            for entry in body:
                scores[indices[int(entry["index"])]] = float(entry["score"])

        await asyncio.gather(*(one(p, idx) for p, idx in by_prompt.items()))
        return scores

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._judge is not None:
            await self._judge.aclose()


def _first(value: Any) -> float:
    while isinstance(value, list):
        value = value[0]
    return float(value)


def _by_index(data: list[dict[str, Any]], n: int, pick: Any) -> list[Score | Scored]:
    if len(data) != n:
        raise ValueError(f"server returned {len(data)} results for {n} inputs")
    ordered = sorted(data, key=lambda d: int(d.get("index", 0))) if all("index" in d for d in data) else data
    return [pick(d) for d in ordered]
