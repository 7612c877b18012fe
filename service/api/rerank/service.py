"""Rerank: score client-supplied documents with the verifier ensemble; no generation."""

from __future__ import annotations

from service.api.rerank.protocol import DocumentOut, RerankRequest, RerankResponse, RerankResult
from service.api.verification import (
    RerankVerification,
    check_chars,
    check_selection,
    deadline,
    raise_for_job_error,
    ranked,
    report,
)
from service.errors import invalid
from service.metrics import observe_result
from service.state import GatewayState
from workers.contract import Job, JobResult


async def build_job(request: RerankRequest, state: GatewayState) -> Job:
    settings = state.settings
    options = request.verification or RerankVerification()
    texts = request.texts()
    if len(texts) > settings.limits.max_candidates:
        raise invalid(
            f"{len(texts)} documents exceed the limit of {settings.limits.max_candidates}",
            "documents",
            "limit_exceeded",
        )
    check_chars(len(request.query) + sum(len(t) for t in texts), settings, "documents")
    check_selection(options, await state.queue.catalog(), settings)
    return Job(
        kind="rerank",
        prompt=request.query,
        candidates=texts,
        n_candidates=len(texts),
        verifiers=options.verifiers,
        profile=options.profile,
        aggregator=options.aggregator,
        task=options.task,
        context=options.context,
        deadline=deadline(settings),
    )


def build_response(request: RerankRequest, result: JobResult, model: str) -> RerankResponse:
    options = request.verification or RerankVerification()
    texts = request.texts()
    top = ranked(result)[: request.top_n or len(texts)]
    results = [
        RerankResult(
            index=c.index,
            relevance_score=c.score,
            document=DocumentOut(text=texts[c.index]) if request.return_documents else None,
        )
        for c in top
    ]
    return RerankResponse(
        model=model, results=results, verification=report(result, options.min_confidence, with_candidates=False)
    )


async def rerank(request: RerankRequest, state: GatewayState) -> RerankResponse:
    job = await build_job(request, state)
    result = await state.queue.submit(job)
    raise_for_job_error(result)
    response = build_response(request, result, request.model or state.settings.served_model_name)
    observe_result("rerank", result, response.verification.abstained)
    return response
