"""HTTP for /v1/rerank."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from service.api.rerank.protocol import RerankRequest, RerankResponse
from service.api.rerank.service import rerank
from service.deps import StateDep, require_api_key
from service.errors import ERROR_RESPONSES

router = APIRouter(prefix="/v1", tags=["rerank"], dependencies=[Depends(require_api_key)])


@router.post(
    "/rerank",
    response_model=RerankResponse,
    responses=ERROR_RESPONSES,
    summary="Score and rank client-supplied documents with the verifier ensemble (Cohere/Jina shape)",
)
async def rerank_documents(body: RerankRequest, state: StateDep, request: Request) -> RerankResponse:
    request.state.aggregator = body.verification.aggregator if body.verification else "weaver"
    return await rerank(body, state)
