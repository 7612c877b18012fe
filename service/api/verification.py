"""What chat and rerank share: the ``verification`` request options, the diagnostics block, and the
checks that run before a job is queued (limits, verifier names, profiles)."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.errors import APIError, invalid, job_error
from service.settings import Settings
from workers.contract import (
    AggregatorName,
    CandidateResult,
    ComputeInfo,
    GenerationInfo,
    JobResult,
    VerifierDiagnostics,
)
from workers.queue.base import Catalog


class RerankVerification(BaseModel):
    """How candidates are verified and combined."""

    model_config = ConfigDict(extra="forbid")
    verifiers: list[str] | None = Field(None, description="verifier names; default: the configured default set")
    profile: str | None = Field(None, description="a named verifier set from the worker config")
    aggregator: AggregatorName = "weaver"
    min_confidence: float | None = Field(None, ge=0.0, le=1.0, description="below it the answer is an abstention")
    task: str | None = Field(None, description="task name for per-task label models")
    context: dict[str, Any] = Field(default_factory=dict, description="verifier inputs, e.g. {'tests': [...]}")
    cascade: bool | None = Field(None, description=(
        "run verifiers from cheap to expensive and stop once the label model's choice is settled; "
        "default: the worker's configuration (on)"))
    budget: float | None = Field(None, ge=0.0, description=(
        "verifier compute the cascade may spend, in seconds per candidate (each verifier's measured cost); "
        "default: the worker's configuration (no cap)"))

    @model_validator(mode="after")
    def _one_selection(self) -> RerankVerification:
        if self.verifiers is not None and self.profile is not None:
            raise ValueError("give either verifiers or profile, not both")
        if self.verifiers is not None and not self.verifiers:
            raise ValueError("verifiers must not be empty (omit it for the default set)")
        return self


class ChatVerification(RerankVerification):
    n_candidates: int | None = Field(None, ge=1, description="candidates to sample; default from settings")
    return_candidates: bool = Field(False, description="include every candidate with its score and rank")
    adaptive_n: bool | None = Field(None, description=(
        "sample candidates in rounds (2, 4, 8, ... up to n_candidates) and stop once the choice is settled; "
        "default: the worker's configuration (off)"))


class VerificationReport(BaseModel):
    """The extension block: what was selected, how sure, and what every verifier said."""

    job_id: str
    selected_index: int | None
    confidence: float | None
    margin: float | None
    abstained: bool
    min_confidence: float | None
    aggregator: str
    aggregator_version: str
    note: str
    verifiers: list[VerifierDiagnostics]
    candidates: list[CandidateResult] | None = None
    generation: GenerationInfo | None = None
    compute: ComputeInfo | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    worker: str = ""


def check_selection(options: RerankVerification, catalog: Catalog, settings: Settings) -> None:
    """Reject unknown verifiers/profiles (naming the available ones) and too many verifiers."""
    if not catalog.ready and not catalog.available:
        why = "; ".join(f"{k}: {v}" for k, v in catalog.errors.items()) or "no worker is ready"
        raise APIError(503, f"no ready worker: {why}", type="service_unavailable", code="not_ready")
    if options.verifiers is not None:
        if len(options.verifiers) > settings.limits.max_verifiers:
            raise invalid(
                f"{len(options.verifiers)} verifiers requested; the limit is {settings.limits.max_verifiers}",
                "verification.verifiers",
                "limit_exceeded",
            )
        unknown = [name for name in options.verifiers if name not in catalog.available]
        if unknown:
            raise invalid(
                f"unknown verifier(s) {', '.join(map(repr, unknown))}; available: {', '.join(catalog.available)}",
                "verification.verifiers",
                "unknown_verifier",
            )
    if options.profile is not None and options.profile not in catalog.profiles:
        raise invalid(
            f"unknown profile {options.profile!r}; available: {', '.join(catalog.profiles) or '(none)'}",
            "verification.profile",
            "unknown_profile",
        )


def check_chars(total: int, settings: Settings, param: str) -> None:
    if total > settings.limits.max_chars:
        raise invalid(
            f"request has {total} characters; the limit is {settings.limits.max_chars}", param, "limit_exceeded"
        )


def deadline(settings: Settings) -> float:
    return time.time() + settings.request_timeout_s


def raise_for_job_error(result: JobResult) -> None:
    """A job-level failure reported by the worker becomes an API error with a fitting status."""
    if result.status != "ok":
        raise job_error(result.error_type, result.error)


def selection_confidence(result: JobResult) -> float | None:
    """P(correct) when the aggregator gives one, else the selected candidate's aggregator score."""
    if result.confidence is not None and math.isfinite(result.confidence):
        return result.confidence
    selected = next((c for c in result.candidates if c.index == result.selected_index), None)
    return selected.score if selected is not None and math.isfinite(selected.score) else None


def is_abstention(result: JobResult, min_confidence: float | None) -> bool:
    if min_confidence is None:
        return False
    confidence = selection_confidence(result)
    return confidence is None or confidence < min_confidence


def report(result: JobResult, min_confidence: float | None, *, with_candidates: bool) -> VerificationReport:
    return VerificationReport(
        job_id=result.id,
        selected_index=result.selected_index,
        confidence=result.confidence,
        margin=result.margin,
        abstained=is_abstention(result, min_confidence),
        min_confidence=min_confidence,
        aggregator=result.aggregator,
        aggregator_version=result.aggregator_version,
        note=result.aggregator_note,
        verifiers=result.diagnostics,
        candidates=result.candidates if with_candidates else None,
        generation=result.generation,
        compute=result.compute,
        timings=result.timings,
        worker=result.worker,
    )


def ranked(result: JobResult) -> list[CandidateResult]:
    return sorted(result.candidates, key=lambda c: c.rank)


VERIFICATION_HEADER = "X-Weaver-Verification"


def verification_header(block: VerificationReport) -> dict[str, str]:
    """A compact copy of the ``verification`` block as one response header (ASCII JSON), for clients that
    keep response headers but drop unknown body fields (LangChain's ``include_response_headers=True``,
    TEI clients whose list body has no room for it). Per-verifier rows keep name, kept, estimated accuracy
    and error; the per-candidate arrays stay in the body only."""
    summary = {
        "job_id": block.job_id,
        "selected_index": block.selected_index,
        "confidence": _finite(block.confidence),
        "margin": _finite(block.margin),
        "abstained": block.abstained,
        "min_confidence": block.min_confidence,
        "aggregator": block.aggregator,
        "aggregator_version": block.aggregator_version,
        "note": block.note[:200],
        "compute": None if block.compute is None else {
            "candidates": block.compute.candidates_generated, "verifiers_run": block.compute.verifiers_run,
            "stop_reason": block.compute.stop_reason, "sampling_stop_reason": block.compute.sampling_stop_reason},
        "verifiers": [
            {"name": v.name, "kept": v.kept, "estimated_accuracy": _finite(v.estimated_accuracy),
             "error": None if v.error is None else v.error[:120]}
            for v in block.verifiers
        ],
    }
    return {VERIFICATION_HEADER: json.dumps(summary, separators=(",", ":"), ensure_ascii=True, allow_nan=False)}


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
