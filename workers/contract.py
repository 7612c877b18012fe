"""The queue contract: what a job asks for and what a worker returns.

Both sides of the queue (the gateway and the workers) speak only these models, serialized as JSON,
whether the queue is in-process or a Redis Stream. They depend on pydantic alone, so the gateway
can import them without loading any model code.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

AggregatorName = Literal["weaver", "cross_encoder", "cascade", "majority", "mean", "first"]


GREEDY_TEMPERATURE_EPS = 1e-5
MAX_STOP_STRINGS = 16  # stop sequences per request (OpenAI allows 4; vLLM and llama.cpp accept more)
MAX_STOP_CHARS = 64  # characters per stop sequence: the generator re-checks this many at each token


class SamplingParams(BaseModel):
    """Sampling parameters, with OpenAI names."""

    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(256, ge=1)
    seed: int | None = None
    stop: list[Annotated[str, StringConstraints(max_length=MAX_STOP_CHARS)]] | None = Field(
        None, max_length=MAX_STOP_STRINGS
    )

    @field_validator("temperature")
    @classmethod
    def _tiny_temperature_is_greedy(cls, value: float) -> float:
        """Below 1e-5, logits / temperature overflow to inf; such a request means greedy (as in vLLM)."""
        return 0.0 if value < GREEDY_TEMPERATURE_EPS else value


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str


class Job(BaseModel):
    """One unit of work: generate N candidates (or take the given ones), verify, aggregate."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    kind: Literal["generate", "rerank"]
    prompt: str  # the user-facing query (for chat: the rendered last user turn)
    messages: list[ChatMessage] | None = None  # full chat for generation; None for rerank
    candidates: list[str] | None = None  # given candidates (rerank)
    n_candidates: int = Field(4, ge=1)
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    verifiers: list[str] | None = None  # None: the configured default set
    profile: str | None = None  # a named verifier set from the config
    aggregator: AggregatorName = "weaver"
    task: str | None = None  # per-task label models
    context: dict[str, Any] = Field(default_factory=dict)  # verifier inputs, e.g. {"tests": [...]} for code_tests
    # unix seconds, set once by the gateway; every stage enforces it (the job is cancelled when it passes)
    deadline: float = Field(default_factory=lambda: time.time() + 300.0)
    # compute by need (workers/adaptive_job.py); None: the worker's configured default
    cascade: bool | None = None  # run verifiers in cost-ordered stages and stop once the choice is settled
    budget_s: float | None = Field(None, ge=0.0)  # verifier seconds per candidate the cascade may spend
    adaptive_n: bool | None = None  # generate: sample in rounds (2, 4, 8, ... n_candidates) until settled
    fingerprint: str | None = None  # with an Idempotency-Key: digest of the request, so a reused key is caught
    enqueued_at: float | None = None  # unix seconds, set by the queue (queue-wait metrics)

    @model_validator(mode="after")
    def _check_kind(self) -> Job:
        if self.kind == "rerank" and not self.candidates:
            raise ValueError("a rerank job needs candidates")
        if self.kind == "generate" and self.candidates:
            raise ValueError("a generate job must not carry candidates")
        return self


class CandidateResult(BaseModel):
    index: int
    text: str
    score: float  # the aggregator's score (P(correct) for probabilistic aggregators)
    rank: int  # 0 = selected
    answer: str | None = None  # extracted final answer
    finish_reason: str | None = None
    completion_tokens: int = 0


class VerifierDiagnostics(BaseModel):
    name: str
    kind: str
    version: str
    raw: list[float | None]  # per candidate; None = abstained or failed
    normalized: list[float | None]
    vote: list[int | None]  # 1 yes, 0 no, None abstain
    estimated_accuracy: float | None  # from the label model (None before a fit or when dropped)
    kept: bool  # used by the aggregator
    latency_s: float
    error: str | None = None
    notes: list[str | None] | None = None  # per candidate, why it got its score (e.g. code_tests failures)
    skipped: str | None = None  # why the verifier cascade did not run it (its scores are then abstentions)


class GenerationInfo(BaseModel):
    backend: str
    model: str
    requested: int
    returned: int
    reason: str | None = None  # why fewer than requested came back
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0


class ComputeInfo(BaseModel):
    """What a job spent on generation and verification, and why it stopped (compute by need)."""

    cascade: bool  # verifiers ran in cost-ordered stages with the settle rule between them
    adaptive_n: bool  # candidates were sampled in rounds
    candidates_requested: int
    candidates_generated: int  # for rerank: the given candidates
    rounds: list[int] = Field(default_factory=list)  # cumulative candidates after each sampling round
    stages: list[list[str]] = Field(default_factory=list)  # the cascade's stages, cheapest first
    verifiers_run: list[str] = Field(default_factory=list)
    verifiers_skipped: list[str] = Field(default_factory=list)
    verifier_calls: int = 0  # (verifier, candidate) scorings asked for, over all rounds (cache hits included)
    verifier_seconds: float = 0.0  # estimated: measured seconds per candidate x candidates scored
    full_verifier_seconds: float = 0.0  # the same estimate for every verifier on every requested candidate
    budget_s: float | None = None
    stop_reason: str = ""  # verification: settled | budget | exhausted | disabled | no_model
    sampling_stop_reason: str | None = None  # adaptive N: settled | exhausted (None without rounds)
    detail: str = ""  # the settle rule's numbers at the stop, e.g. "P(the rest would change the answer) 0.000 <= 0.01"
    sampling_detail: str = ""  # adaptive N: the rule's numbers after the last round


class JobResult(BaseModel):
    id: str
    status: Literal["ok", "error"] = "ok"
    error: str | None = None
    error_type: str | None = None
    candidates: list[CandidateResult] = Field(default_factory=list)
    selected_index: int | None = None
    confidence: float | None = None  # the selected candidate's aggregator score
    margin: float | None = None  # top-two score gap
    aggregator: str = ""
    aggregator_version: str = ""
    aggregator_note: str = ""
    verifier_names: list[str] = Field(default_factory=list)
    scores: list[list[float | None]] = Field(default_factory=list)  # candidates x verifiers, raw
    diagnostics: list[VerifierDiagnostics] = Field(default_factory=list)
    generation: GenerationInfo | None = None
    compute: ComputeInfo | None = None
    timings: dict[str, float] = Field(default_factory=dict)  # stage -> seconds
    worker: str = ""
