"""Batched sampling with Hugging Face transformers, on CPU or GPU.

A request's N samples are N rows of one ``generate`` call. Concurrent requests with the same sampling
parameters (and no seed) are coalesced into one left-padded batch, so a busy CPU worker decodes all of
them per forward pass instead of one request after another. Generation runs in a thread, one batch at a
time (the model is not re-entrant), so the event loop stays free to serve health checks and queue I/O.

Cancellation reaches the decode loop: at every token, rows whose caller has gone (its job was cancelled)
are marked finished, and a batch whose callers are all gone stops. Stop strings are checked on each row's
newest text only, so their cost does not grow with the vocabulary (transformers' ``stop_strings`` builds
a table over the whole vocabulary per string).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from workers.cancellation import CANCELLED_TOKENS
from workers.contract import ChatMessage, SamplingParams
from workers.generation.base import GeneratedCandidate, GenerationBackend, GenerationOutput, replicate_greedy
from workers.generation.chat_prompt import load_tokenizer, render_chat
from workers.generation.errors import GenerationError, PromptTooLongError
from workers.generation.model_cache import DEFAULT_MODEL, resolve_model

logger = logging.getLogger(__name__)

class TransformersSettings(BaseModel):
    """The ``generation:`` block of the worker config for ``backend: transformers``."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    backend: Literal["transformers"] = "transformers"
    model: str = DEFAULT_MODEL  # built-in alias, a .gguf path, a model directory, or a cached hub id
    gguf_file: str | None = None  # with a directory in `model`: the GGUF file inside it
    cache_dir: str | None = None  # where GGUF conversions go (default ~/.cache/weaver/models or $WEAVER_MODEL_CACHE)
    device: str = "auto"  # auto | cpu | cuda | cuda:1 ...
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_batch_size: int = Field(32, ge=1)  # sequences decoded together in one generate call
    coalesce: bool = True  # batch concurrent requests that share sampling parameters
    num_threads: int | None = Field(None, ge=1)  # torch intra-op threads (CPU)
    chat_template: str | None = None  # overrides the tokenizer's


@dataclass
class _Request:
    prompt_ids: list[int]
    n: int
    sampling: SamplingParams
    future: asyncio.Future[GenerationOutput]

    @property
    def batch_key(self) -> tuple[object, ...] | None:
        """Requests with equal keys may share a batch; seeded requests run alone so their RNG stream is theirs."""
        if self.sampling.seed is not None:
            return None
        s = self.sampling
        return (s.temperature, s.top_p, s.max_tokens, tuple(s.stop or ()))


@dataclass
class DecodeUsage:
    """Decode compute in row-steps (one row through one forward pass; a batch costs rows x steps). A row whose
    caller has gone is marked finished but stays in its batch until the batch ends: that is waste too."""

    row_steps: int = 0  # all rows, all steps
    cancelled_row_steps: int = 0  # rows of requests that ended cancelled (before and after the cancellation)
    after_cancel_row_steps: int = 0  # of those, the steps run after the caller had gone


@dataclass
class _Row:
    request: int
    prompt_ids: list[int]


class _RowStops:
    """Per-row stopping criterion: the row's caller has gone, the whole batch is abandoned, or one of the
    stop strings appears in the row's newest text (a window of tokens wide enough to spell the longest one)."""

    def __init__(self, tokenizer: Any, prompt_width: int, stops: list[str], gone: list[Callable[[], bool]],
                 abandoned: threading.Event, usage: DecodeUsage) -> None:
        self.usage = usage
        self.tokenizer = tokenizer
        self.prompt_width = prompt_width
        self.stops = [text for text in stops if text]
        # a character may take several byte-level tokens: 4 per character bounds any spelling
        self.window = 4 * max((len(text) for text in self.stops), default=0) + 1
        self.gone = gone
        self.abandoned = abandoned

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        if self.abandoned.is_set():
            return torch.ones((input_ids.shape[0],), dtype=torch.bool, device=input_ids.device)
        done = [self.gone[i]() for i in range(input_ids.shape[0])]
        self.usage.after_cancel_row_steps += sum(done)  # these rows were computed for nobody this step
        if self.stops:
            length = input_ids.shape[1]
            start = max(self.prompt_width, length - self.window)
            for i in range(len(done)):
                if not done[i]:
                    tail = self.tokenizer.decode(input_ids[i, start:].tolist(), skip_special_tokens=True)
                    done[i] = any(text in tail for text in self.stops)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class TransformersBackend(GenerationBackend):
    name = "transformers"

    def __init__(self, settings: TransformersSettings) -> None:
        self.settings = settings
        self.model = settings.model
        self._hf_model: Any = None
        self._tokenizer: Any = None  # event-loop side: chat templates and prompt tokenization
        self._worker_tokenizer: Any = None  # generation-thread side: padding, stop strings, decoding
        self._device: Any = None
        self._eos_ids: set[int] = set()
        self._context_len: int | None = None
        self._pending: list[_Request] = []
        self._drainer: asyncio.Task[None] | None = None
        self.load_seconds: float | None = None
        self.abandoned_batches = 0  # batches cut short because every caller cancelled
        self.usage = DecodeUsage()
        self.converted = False

    # lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._hf_model is None:
            await asyncio.to_thread(self._load)

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        started = time.perf_counter()
        s = self.settings
        resolved = resolve_model(s.model, gguf_file=s.gguf_file, cache_dir=s.cache_dir)
        self.converted = resolved.converted
        if s.num_threads:
            torch.set_num_threads(s.num_threads)
        device = torch.device("cuda" if s.device == "auto" and torch.cuda.is_available() else
                              ("cpu" if s.device == "auto" else s.device))
        if s.dtype == "auto":
            dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        else:
            dtype = getattr(torch, s.dtype)
        tokenizer = load_tokenizer(resolved.path, s.chat_template)
        model: Any = AutoModelForCausalLM.from_pretrained(str(resolved.path), dtype=dtype)
        model = model.to(device).eval()
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token_id = min(self._eos_ids)
        self._context_len = getattr(model.config, "max_position_embeddings", None)
        self._tokenizer, self._hf_model, self._device = tokenizer, model, device
        # a Rust tokenizer used from two threads at once can fail ("Already borrowed"): one copy per side
        self._worker_tokenizer = copy.deepcopy(tokenizer)
        self.model = resolved.name
        self.load_seconds = time.perf_counter() - started
        logger.info("transformers backend: %s on %s (%s) loaded in %.2f s", resolved.path, device, dtype,
                    self.load_seconds)

    def ready(self) -> bool:
        return self._hf_model is not None

    async def close(self) -> None:
        for request in self._pending:
            if not request.future.done():
                request.future.set_exception(GenerationError("generation backend closed"))
        self._pending.clear()
        if self._drainer is not None:
            await asyncio.gather(self._drainer, return_exceptions=True)
        self._hf_model = None
        self._tokenizer = None

    # requests --------------------------------------------------------------------------------------
    def render_prompt(self, messages: Sequence[ChatMessage]) -> list[int]:
        """Apply the chat template and tokenize (the template carries the special tokens)."""
        if self._tokenizer is None:
            raise GenerationError("transformers backend used before start()")
        return render_chat(self._tokenizer, messages)

    async def generate(self, messages: list[ChatMessage], n: int, sampling: SamplingParams) -> GenerationOutput:
        if n < 1:
            raise ValueError("n must be >= 1")
        if sampling.temperature == 0.0 and n > 1:
            return replicate_greedy(await self.generate(messages, 1, sampling), n)
        prompt_ids = self.render_prompt(messages)
        if self._context_len is not None and len(prompt_ids) >= self._context_len:
            raise PromptTooLongError(
                f"prompt has {len(prompt_ids)} tokens; the model's context window is {self._context_len}")
        future: asyncio.Future[GenerationOutput] = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(prompt_ids, n, sampling, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        """Run pending requests batch by batch; requests arriving meanwhile join the next batch."""
        while self._pending:
            batch = self._take_batch()
            if not batch:
                continue
            abandoned = threading.Event()  # every caller of this batch went away: stop decoding early

            def on_done(_: object, batch: list[_Request] = batch, abandoned: threading.Event = abandoned) -> None:
                if all(r.future.cancelled() for r in batch):
                    abandoned.set()

            for request in batch:
                request.future.add_done_callback(on_done)
            try:
                outputs = await asyncio.to_thread(self._run_batch, batch, abandoned)
            except Exception as exc:  # noqa: BLE001 - delivered to every waiting request
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(GenerationError(f"{type(exc).__name__}: {exc}"))
                continue
            finally:
                self.abandoned_batches += abandoned.is_set()
            for request, output in zip(batch, outputs, strict=True):
                if not request.future.done():
                    request.future.set_result(output)

    def _take_batch(self) -> list[_Request]:
        self._pending = [r for r in self._pending if not r.future.done()]  # drop cancelled requests
        if not self._pending:
            return []
        first = self._pending.pop(0)
        batch = [first]
        key = first.batch_key
        if key is None or not self.settings.coalesce:
            return batch
        rows = first.n
        for request in list(self._pending):
            if request.batch_key == key and rows + request.n <= self.settings.max_batch_size:
                batch.append(request)
                rows += request.n
                self._pending.remove(request)
        return batch

    # the blocking part (worker thread) -------------------------------------------------------------
    def _run_batch(self, batch: list[_Request], abandoned: threading.Event) -> list[GenerationOutput]:
        import torch

        started = time.perf_counter()
        sampling = batch[0].sampling  # identical across the batch by construction
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)  # global RNG, but the model is used by one batch at a time
        rows = [_Row(i, request.prompt_ids) for i, request in enumerate(batch) for _ in range(request.n)]
        per_request: list[list[GeneratedCandidate]] = [[] for _ in batch]
        size = self.settings.max_batch_size
        for offset in range(0, len(rows), size):
            chunk = rows[offset:offset + size]
            if abandoned.is_set():
                break
            gone = [batch[row.request].future.cancelled for row in chunk]
            for row, candidate in zip(chunk, self._generate_rows(chunk, sampling, gone, abandoned), strict=True):
                per_request[row.request].append(candidate)
        elapsed = time.perf_counter() - started
        wasted = sum(c.completion_tokens for r, found in zip(batch, per_request, strict=True)
                     if r.future.cancelled() for c in found)
        if wasted:
            CANCELLED_TOKENS.inc(wasted)
        outputs = []
        for request, candidates in zip(batch, per_request, strict=True):
            reason = None
            if len(candidates) != request.n:  # cannot happen with generate(); checked rather than assumed
                reason = f"{len(candidates)} of {request.n} candidates came back from transformers generate"
            outputs.append(GenerationOutput(
                candidates=candidates, requested=request.n, prompt_tokens=len(request.prompt_ids), reason=reason,
                extras={"batch_requests": len(batch), "batch_rows": len(rows), "generate_s": elapsed}))
        return outputs

    def _generate_rows(self, rows: list[_Row], sampling: SamplingParams, gone: list[Callable[[], bool]],
                       abandoned: threading.Event) -> list[GeneratedCandidate]:
        import torch
        tokenizer, model = self._worker_tokenizer, self._hf_model
        if model is None:
            raise GenerationError("generation backend closed")
        encoded = tokenizer.pad({"input_ids": [row.prompt_ids for row in rows]}, padding=True, return_tensors="pt")
        input_ids = encoded["input_ids"].to(self._device)
        width = input_ids.shape[1]
        max_new = sampling.max_tokens
        if self._context_len is not None:
            max_new = max(1, min(max_new, self._context_len - width))
        greedy = sampling.temperature == 0.0
        # Start from the model's own generation defaults (top_k, repetition_penalty, suppressed tokens), as
        # vLLM does with generation_config="auto"; the request's OpenAI parameters override them.
        config = copy.deepcopy(model.generation_config)
        config.update(
            max_new_tokens=max_new,
            max_length=None,
            do_sample=not greedy,
            temperature=None if greedy else sampling.temperature,
            top_p=None if greedy else sampling.top_p,
            top_k=None if greedy else config.top_k,
            eos_token_id=sorted(self._eos_ids),
            pad_token_id=tokenizer.pad_token_id,
        )
        stops = _RowStops(tokenizer, width, sampling.stop or [], gone, abandoned, self.usage)
        with torch.inference_mode():
            output = model.generate(input_ids=input_ids, attention_mask=encoded["attention_mask"].to(self._device),
                                    generation_config=config, stopping_criteria=[stops])
        steps = output.shape[1] - width
        self.usage.row_steps += steps * len(rows)
        self.usage.cancelled_row_steps += steps * sum(g() for g in gone)
        new_tokens = output[:, width:].tolist()
        return [self._finish(tokens, sampling.stop or []) for tokens in new_tokens]

    def _finish(self, tokens: list[int], stop: list[str]) -> GeneratedCandidate:
        """Cut one row at its end (EOS, stop string or length) and count the tokens really generated."""
        end_ids = self._eos_ids | {self._worker_tokenizer.pad_token_id}
        end = next((i for i, token in enumerate(tokens) if token in end_ids), None)
        body = tokens if end is None else tokens[:end]
        text = self._decode(body)
        hits = [(text.find(s), s) for s in stop if s and s in text]
        if hits:
            position, _ = min(hits)
            # the shortest prefix whose text contains a stop string = the tokens the model actually produced
            low, high = 1, len(body)
            while low < high:
                mid = (low + high) // 2
                if any(s and s in self._decode(body[:mid]) for s in stop):
                    high = mid
                else:
                    low = mid + 1
            return GeneratedCandidate(text=text[:position], finish_reason="stop", completion_tokens=low)
        if end is not None:
            return GeneratedCandidate(text=text, finish_reason="stop", completion_tokens=end + 1)
        return GeneratedCandidate(text=text, finish_reason="length", completion_tokens=len(tokens))

    def _decode(self, tokens: list[int]) -> str:
        text: str = self._worker_tokenizer.decode(tokens, skip_special_tokens=True)
        return text
