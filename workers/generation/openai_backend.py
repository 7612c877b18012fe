"""Any OpenAI-compatible chat-completions endpoint: a ``vllm serve`` fleet, SGLang, a hosted API.

One request with ``n`` when the server honours it; otherwise (or when told to) N parallel requests with
``n=1``. In ``auto`` mode a short answer (fewer choices than asked) is detected, the missing candidates are
fetched in parallel, and later calls fan out directly. Transient failures (connection errors, timeouts,
408/409/429/5xx) are retried with exponential backoff and jitter, honouring ``Retry-After``.
Per-candidate completion token counts come from the choice's logprobs (one entry per token) when the
server returns them, else from ``usage`` when it covers a single choice; never estimated.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from workers.contract import ChatMessage, SamplingParams
from workers.generation.base import GeneratedCandidate, GenerationBackend, GenerationOutput, replicate_greedy
from workers.generation.errors import GenerationError

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


class OpenAISettings(BaseModel):
    """The ``generation:`` block of the worker config for ``backend: openai``."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    backend: Literal["openai"] = "openai"
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "default"  # the served model name
    api_key: str | None = None  # else read from the environment variable below
    api_key_env: str = "OPENAI_API_KEY"
    n_mode: Literal["auto", "native", "parallel"] = "auto"
    max_parallel: int = Field(16, ge=1)  # concurrent requests when fanning out
    timeout_s: float = Field(120.0, gt=0)  # per HTTP request
    connect_timeout_s: float = Field(10.0, gt=0)
    max_retries: int = Field(3, ge=0)
    backoff_s: float = Field(0.5, ge=0)  # first retry delay; doubles each retry, with jitter
    backoff_max_s: float = Field(8.0, ge=0)
    request_logprobs: bool = True  # per-candidate token counts; turned off automatically if the server refuses
    probe_on_start: bool = True  # GET /models in start(): fail early on a wrong URL or key
    headers: dict[str, str] = Field(default_factory=dict)
    extra_body: dict[str, Any] = Field(default_factory=dict)  # e.g. {"top_k": 20} for vLLM servers


class _RequestFailed(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Response:
    candidates: list[GeneratedCandidate]
    prompt_tokens: int
    completion_tokens: int
    attempts: int


@dataclass
class _Tally:
    candidates: list[GeneratedCandidate] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    attempts: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, response: _Response) -> None:
        self.candidates.extend(response.candidates)
        self.prompt_tokens = self.prompt_tokens or response.prompt_tokens
        self.completion_tokens += response.completion_tokens
        self.requests += 1
        self.attempts += response.attempts


class OpenAIBackend(GenerationBackend):
    name = "openai"

    def __init__(self, settings: OpenAISettings) -> None:
        self.settings = settings
        self.model = settings.model
        self._client: httpx.AsyncClient | None = None
        self.native_n: bool | None = {"native": True, "parallel": False}.get(settings.n_mode)  # None: not yet known
        self._logprobs = settings.request_logprobs

    async def start(self) -> None:
        if self._client is not None:
            return
        s = self.settings
        headers = {"Content-Type": "application/json", **s.headers}
        api_key = s.api_key or os.environ.get(s.api_key_env)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.AsyncClient(
            base_url=s.base_url.rstrip("/") + "/", headers=headers,
            timeout=httpx.Timeout(s.timeout_s, connect=s.connect_timeout_s),
            limits=httpx.Limits(max_connections=max(s.max_parallel, 4)))
        if s.probe_on_start:
            try:
                await self._send("GET", "models", None)
            except _RequestFailed as exc:
                await self.close()
                raise GenerationError(f"OpenAI-compatible endpoint {s.base_url} is not usable: {exc}") from exc

    def ready(self) -> bool:
        return self._client is not None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def generate(self, messages: list[ChatMessage], n: int, sampling: SamplingParams) -> GenerationOutput:
        if n < 1:
            raise ValueError("n must be >= 1")
        if self._client is None:
            raise GenerationError("openai backend used before start()")
        started = time.perf_counter()
        if sampling.temperature == 0.0 and n > 1:
            # greedy samples are identical (and vLLM servers reject n > 1 with greedy): decode once, copy
            return replicate_greedy(await self.generate(messages, 1, sampling), n)
        tally = _Tally()
        notes: list[str] = []
        if self.native_n is not False:
            try:
                tally.add(await self._complete(messages, n, sampling, seed=sampling.seed))
            except _RequestFailed as exc:
                # some servers reject n > 1 outright; in auto mode that is a cue to fan out, not a failure
                if not (self.settings.n_mode == "auto" and n > 1 and exc.status in {400, 422}):
                    raise GenerationError(f"{self.settings.base_url}: {exc}") from exc
                notes.append(f"the server rejected n={n} ({exc}); sent {n} requests with n=1 instead")
                self.native_n = False
            else:
                returned = len(tally.candidates)
                if returned < n and self.settings.n_mode == "auto":
                    if self.native_n is None:
                        logger.info("%s returned %d of %d choices: it ignores n; fanning out from now on",
                                    self.settings.base_url, returned, n)
                    self.native_n = False
                    notes.append(f"the server returned {returned} of {n} choices; fetched the rest in parallel")
                elif returned >= n > 1:
                    self.native_n = True
        missing = n - len(tally.candidates)
        if missing > 0 and self.native_n is False:
            await self._fan_out(messages, missing, sampling, tally, first_index=len(tally.candidates))
        if not tally.candidates:
            raise GenerationError(f"no candidates from {self.settings.base_url}: {'; '.join(tally.errors)}")
        reason = None
        if len(tally.candidates) != n:
            why = "; ".join(tally.errors) or "the server returned fewer choices than n (n_mode: native)"
            reason = f"{len(tally.candidates)} of {n} candidates came back from {self.settings.base_url}: {why}"
        extras: dict[str, object] = {"requests": tally.requests, "attempts": tally.attempts,
                                     "completion_tokens_total": tally.completion_tokens,
                                     "generate_s": time.perf_counter() - started, "native_n": self.native_n}
        if notes:
            extras["notes"] = notes
        return GenerationOutput(candidates=tally.candidates[:n], requested=n, prompt_tokens=tally.prompt_tokens,
                                reason=reason, extras=extras)

    async def _fan_out(self, messages: list[ChatMessage], count: int, sampling: SamplingParams, tally: _Tally,
                       first_index: int) -> None:
        """``count`` single-choice requests, at most ``max_parallel`` in flight; failures are tallied, not raised."""
        gate = asyncio.Semaphore(self.settings.max_parallel)

        async def one(i: int) -> _Response:
            # distinct seeds, or a seeded request would come back as N copies of one sample
            seed = None if sampling.seed is None else sampling.seed + first_index + i
            async with gate:
                return await self._complete(messages, 1, sampling, seed=seed)

        results = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
        for result in results:
            if isinstance(result, _Response):
                tally.add(result)
            elif isinstance(result, _RequestFailed):
                tally.errors.append(str(result))
            else:
                raise result

    async def _complete(self, messages: list[ChatMessage], n: int, sampling: SamplingParams,
                        seed: int | None) -> _Response:
        body: dict[str, Any] = {
            "model": self.settings.model,
            "messages": [m.model_dump(exclude_none=True) for m in messages],
            "n": n, "temperature": sampling.temperature, "top_p": sampling.top_p, "max_tokens": sampling.max_tokens,
            **self.settings.extra_body,
        }
        if seed is not None:
            body["seed"] = seed
        if sampling.stop:
            body["stop"] = sampling.stop
        if self._logprobs:
            body["logprobs"] = True
        try:
            payload, attempts = await self._send("POST", "chat/completions", body)
        except _RequestFailed as exc:
            if not (self._logprobs and exc.status in {400, 422} and "logprob" in str(exc).lower()):
                raise
            logger.info("%s refuses logprobs; per-candidate token counts only for n=1", self.settings.base_url)
            self._logprobs = False
            body.pop("logprobs")
            payload, attempts = await self._send("POST", "chat/completions", body)
        return self._parse(payload, attempts)

    def _parse(self, payload: Any, attempts: int) -> _Response:
        try:
            choices = sorted(payload["choices"], key=lambda c: c.get("index", 0))
            usage = payload.get("usage") or {}
            total = int(usage.get("completion_tokens") or 0)
            candidates = []
            for choice in choices:
                message = choice.get("message") or {}
                content = (choice.get("logprobs") or {}).get("content")
                if content is not None:
                    tokens = len(content)
                elif len(choices) == 1:
                    tokens = total
                else:
                    tokens = 0  # unknown per choice; the total is in extras["completion_tokens_total"]
                candidates.append(GeneratedCandidate(text=message.get("content") or "",
                                                     finish_reason=choice.get("finish_reason"),
                                                     completion_tokens=tokens))
            return _Response(candidates, int(usage.get("prompt_tokens") or 0), total, attempts)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _RequestFailed(f"malformed chat completion: {type(exc).__name__}: {exc}") from exc

    async def _send(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[Any, int]:
        """One call with retries; returns (parsed JSON, attempts). Raises _RequestFailed when it gives up."""
        assert self._client is not None
        s = self.settings
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                response = await self._client.request(method, path, json=body)
                if response.status_code < 400:
                    return response.json(), attempt
                error = _RequestFailed(f"HTTP {response.status_code}: {_error_message(response)}",
                                       response.status_code)
                retryable = response.status_code in RETRY_STATUSES
                retry_after = _retry_after(response)
            except httpx.TimeoutException as exc:
                error, retryable = _RequestFailed(f"timed out ({type(exc).__name__})"), True
            except httpx.TransportError as exc:
                error, retryable = _RequestFailed(f"{type(exc).__name__}: {exc}"), True
            except ValueError as exc:  # a 2xx body that is not JSON
                error, retryable = _RequestFailed(f"invalid JSON in response: {exc}"), False
            if not retryable or attempt > s.max_retries:
                if attempt > 1:
                    error.args = (f"{error.args[0]} (after {attempt} attempts)",)
                raise error
            delay = min(s.backoff_max_s, s.backoff_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            if retry_after is not None:
                delay = min(max(delay, retry_after), s.backoff_max_s)
            await asyncio.sleep(delay)


def _error_message(response: httpx.Response) -> str:
    try:
        payload = response.json()
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(payload, dict) and payload.get("detail"):
            return str(payload["detail"])
    except ValueError:
        pass
    return response.text[:300]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
