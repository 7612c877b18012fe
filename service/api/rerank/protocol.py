"""Cohere/Jina-style rerank schemas, plus the ``verification`` extension."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict, Field

from service.api.verification import RerankVerification, VerificationReport


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    text: str


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, description="accepted for compatibility; the service has one ensemble")
    query: str = Field(min_length=1)
    documents: list[str | DocumentIn] = Field(min_length=1)
    top_n: int | None = Field(None, ge=1, description="results returned (default: all)")
    return_documents: bool = False
    verification: RerankVerification | None = None

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class DocumentOut(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int = Field(description="position of the document in the request")
    relevance_score: float | None = Field(description="the aggregator's score (P(correct) for weaver)")
    document: DocumentOut | None = Field(None, exclude_if=lambda v: v is None)


class RerankResponse(BaseModel):
    id: str = Field(default_factory=lambda: f"rerank-{uuid.uuid4().hex}")
    model: str
    results: list[RerankResult]
    verification: VerificationReport
