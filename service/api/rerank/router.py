"""HTTP for the rerank faces: /v1/rerank (Cohere v1, Jina, vLLM), /v2/rerank (Cohere v2), /rerank (TEI, Infinity)."""

from __future__ import annotations

from typing import TypeVar

from fastapi import APIRouter, Depends, Request, Response

from service.api.rerank import faces
from service.api.rerank.protocol import (
    CohereV2RerankRequest,
    CohereV2RerankResponse,
    InfinityRerankResponse,
    RerankRequest,
    RerankResponse,
    RootRerankRequest,
    TEIRank,
    TEIRerankRequest,
)
from service.api.verification import RerankVerification, VerificationReport, verification_header
from service.deps import StateDep, require_api_key
from service.errors import ERROR_RESPONSES, NOT_FOUND
from service.jobs import require_loaded

T = TypeVar("T")
router = APIRouter(tags=["rerank"], dependencies=[Depends(require_api_key), Depends(require_loaded)])
RESPONSES = {**ERROR_RESPONSES, 404: NOT_FOUND}


def _label(request: Request, options: RerankVerification | None) -> None:
    request.state.aggregator = options.aggregator if options else "weaver"


def _answer(http: Response, outcome: tuple[T, VerificationReport]) -> T:
    body, verification = outcome
    http.headers.update(verification_header(verification))
    return body


@router.post(
    "/v1/rerank",
    response_model=RerankResponse,
    responses=RESPONSES,
    summary="Score and rank client-supplied documents (Cohere v1 / Jina / vLLM shape)",
)
async def rerank_v1(body: RerankRequest, state: StateDep, request: Request, http: Response) -> RerankResponse:
    _label(request, body.verification)
    return _answer(http, await faces.cohere_v1(body, state, request))


@router.post(
    "/v2/rerank",
    response_model=CohereV2RerankResponse,
    responses=RESPONSES,
    summary="Score and rank client-supplied documents (Cohere v2 shape)",
)
async def rerank_v2(
    body: CohereV2RerankRequest, state: StateDep, request: Request, http: Response
) -> CohereV2RerankResponse:
    _label(request, body.verification)
    return _answer(http, await faces.cohere_v2(body, state, request))


@router.post(
    "/rerank",
    response_model=list[TEIRank] | InfinityRerankResponse,
    responses=RESPONSES,
    summary="TEI (`texts` -> list of {index, score}) or Infinity (`documents` -> results with string documents)",
)
async def rerank_root(
    body: RootRerankRequest, state: StateDep, request: Request, http: Response
) -> list[TEIRank] | InfinityRerankResponse:
    _label(request, body.verification)
    if isinstance(body, TEIRerankRequest):
        return _answer(http, await faces.tei(body, state, request))
    return _answer(http, await faces.infinity(body, state, request))
