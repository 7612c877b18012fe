"""Rerank: score client-supplied documents with the verifier ensemble; no generation.

One service (``rerank_texts``) for every face; ``faces.py`` only reshapes its outcome.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from service.api.model_names import check_model
from service.api.verification import (
    RerankVerification,
    VerificationReport,
    check_chars,
    check_selection,
    deadline,
    raise_for_job_error,
    ranked,
    report,
)
from service.errors import invalid
from service.jobs import submit_while_connected
from service.metrics import observe_result
from service.state import GatewayState
from workers.contract import CandidateResult, Job, JobResult


@dataclass(frozen=True)
class Reranked:
    """What every face is built from: the documents best first, and the diagnostics block."""

    model: str
    query: str
    texts: list[str]
    ranking: list[CandidateResult]
    verification: VerificationReport


async def build_job(
    query: str, texts: list[str], options: RerankVerification, state: GatewayState, param: str = "documents"
) -> Job:
    settings = state.settings
    if len(texts) > settings.limits.max_candidates:
        raise invalid(
            f"{len(texts)} documents exceed the limit of {settings.limits.max_candidates}", param, "limit_exceeded"
        )
    check_chars(len(query) + sum(len(t) for t in texts), settings, param)
    check_selection(options, await state.queue.catalog(), settings)
    return Job(
        kind="rerank",
        prompt=query,
        candidates=texts,
        n_candidates=len(texts),
        verifiers=options.verifiers,
        profile=options.profile,
        aggregator=options.aggregator,
        task=options.task,
        context=options.context,
        cascade=options.cascade,
        budget_s=options.budget,
        deadline=deadline(settings),
    )


async def rerank_texts(
    query: str,
    texts: list[str],
    options: RerankVerification | None,
    model: str | None,
    state: GatewayState,
    *,
    param: str = "documents",
    request: Request | None = None,
) -> Reranked:
    """Check the model name and limits, run one rerank job, return the documents ranked best first."""
    options = options or RerankVerification()
    served = await check_model(model, state)
    job = await build_job(query, texts, options, state, param)
    # a client that disconnects cancels its job, as on chat (service.jobs)
    result: JobResult = await (submit_while_connected(state.queue, job, request) if request is not None
                               else state.queue.submit(job))
    raise_for_job_error(result)
    verification = report(result, options.min_confidence, with_candidates=False)
    observe_result("rerank", result, verification.abstained)
    return Reranked(model=served, query=query, texts=texts, ranking=ranked(result), verification=verification)
