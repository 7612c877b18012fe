"""Thin adapters: each client family's request in, ``rerank_texts`` once, that family's response out."""

from __future__ import annotations

import math
import re

from fastapi import Request

from service.api.rerank.protocol import (
    UNSUPPORTED,
    ApiVersion,
    BilledUnits,
    CohereMeta,
    CohereV2RerankRequest,
    CohereV2RerankResponse,
    CohereV2RerankResult,
    DocumentOut,
    InfinityRerankResponse,
    InfinityRerankResult,
    RerankRequest,
    RerankResponse,
    RerankResult,
    TEIRank,
    TEIRerankRequest,
    Usage,
)
from service.api.rerank.service import Reranked, rerank_texts
from service.api.verification import VerificationReport
from service.errors import invalid
from service.state import GatewayState

_PIECE = re.compile(r"\w+|[^\w\s]")
_EPS = 1e-6
DOCUMENTS_PER_SEARCH_UNIT = 100  # Cohere bills one search unit per query and up to 100 documents


def refuse_unsupported(body: RerankRequest | CohereV2RerankRequest) -> None:
    for name, why in UNSUPPORTED.items():
        if getattr(body, name, None) is not None:
            raise invalid(f"{name} is not supported: {why}", name, "unsupported_parameter")


def score(value: float | None, raw: bool = False) -> float | None:
    """The aggregator score as sent (a probability for weaver); ``raw`` gives its log-odds, the scale TEI
    and Infinity call raw (their scores are sigmoids of logits). Non-finite scores become null."""
    if value is None or not math.isfinite(value):
        return None
    if raw and 0.0 <= value <= 1.0:
        p = min(max(value, _EPS), 1 - _EPS)
        return math.log(p / (1 - p))
    return value


def usage(out: Reranked) -> Usage:
    pieces = len(_PIECE.findall(out.query)) + sum(len(_PIECE.findall(t)) for t in out.texts)
    return Usage(prompt_tokens=pieces, total_tokens=pieces)


def cohere_meta(out: Reranked, version: str) -> CohereMeta:
    units = max(1, math.ceil(len(out.texts) / DOCUMENTS_PER_SEARCH_UNIT))
    return CohereMeta(api_version=ApiVersion(version=version), billed_units=BilledUnits(search_units=units))


def _top(out: Reranked, top_n: int | None) -> list[tuple[int, float | None]]:
    return [(c.index, c.score) for c in out.ranking[: top_n or len(out.texts)]]


async def cohere_v1(
    body: RerankRequest, state: GatewayState, request: Request | None = None
) -> tuple[RerankResponse, VerificationReport]:
    """Cohere v1, Jina and vLLM: ``document: {text}`` when asked, ``meta`` and ``usage`` both present."""
    refuse_unsupported(body)
    out = await rerank_texts(body.query, body.texts(), body.verification, body.model, state, request=request)
    results = [
        RerankResult(
            index=i,
            relevance_score=score(s, body.raw_scores),
            document=DocumentOut(text=out.texts[i]) if body.return_documents else None,
        )
        for i, s in _top(out, body.top_n)
    ]
    response = RerankResponse(
        model=out.model, results=results, meta=cohere_meta(out, "1"), usage=usage(out), verification=out.verification
    )
    return response, out.verification


async def cohere_v2(
    body: CohereV2RerankRequest, state: GatewayState, request: Request | None = None
) -> tuple[CohereV2RerankResponse, VerificationReport]:
    refuse_unsupported(body)
    out = await rerank_texts(body.query, body.texts(), body.verification, body.model, state, request=request)
    results = [
        CohereV2RerankResult(
            index=i,
            relevance_score=score(s),
            document=DocumentOut(text=out.texts[i]) if body.return_documents else None,
        )
        for i, s in _top(out, body.top_n)
    ]
    response = CohereV2RerankResponse(
        model=out.model, results=results, meta=cohere_meta(out, "2"), verification=out.verification
    )
    return response, out.verification


async def tei(
    body: TEIRerankRequest, state: GatewayState, request: Request | None = None
) -> tuple[list[TEIRank], VerificationReport]:
    """TEI answers a bare list, best first; the ``verification`` block travels as a header only."""
    out = await rerank_texts(body.query, body.texts, body.verification, None, state, param="texts", request=request)
    ranks = [
        TEIRank(index=i, score=score(s, body.raw_scores), text=out.texts[i] if body.return_text else None)
        for i, s in _top(out, None)
    ]
    return ranks, out.verification


async def infinity(
    body: RerankRequest, state: GatewayState, request: Request | None = None
) -> tuple[InfinityRerankResponse, VerificationReport]:
    """Infinity's ``/rerank``: like Cohere v1, but ``document`` is the plain string."""
    refuse_unsupported(body)
    out = await rerank_texts(body.query, body.texts(), body.verification, body.model, state, request=request)
    results = [
        InfinityRerankResult(
            index=i, relevance_score=score(s, body.raw_scores), document=out.texts[i] if body.return_documents else None
        )
        for i, s in _top(out, body.top_n)
    ]
    response = InfinityRerankResponse(model=out.model, results=results, usage=usage(out), verification=out.verification)
    return response, out.verification
