"""Rerank request and response shapes, one pair per client family, all served by one rerank service.

- Cohere v1 / Jina / vLLM (``POST /v1/rerank``): ``documents`` as strings or ``{text}``; results carry
  ``document: {text}``; the response has Cohere's ``meta`` and Jina's ``usage``.
- Cohere v2 (``POST /v2/rerank``): ``model`` required, ``documents`` strings; results carry documents only
  when asked with ``return_documents`` (not in Cohere's v2 API, but LiteLLM sends it).
- TEI (``POST /rerank`` with ``texts``): a bare list of ``{index, score, text?}``.
- Infinity (``POST /rerank`` with ``documents``): results carry ``document`` as a plain string.

Every JSON face also carries the ``verification`` block (the extension clients ignore).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from service.api.verification import RerankVerification, VerificationReport


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="allow")  # Cohere v1 lets documents carry other fields
    text: str


# Parameters of the stock rerank APIs that would change what is scored; we score whole documents, so a
# request that sets one is refused (400 naming it) rather than silently answered differently.
UNSUPPORTED = {
    "rank_fields": "documents are scored on their `text` field only",
    "max_chunks_per_doc": "documents are scored whole, not in chunks (limits.max_chars bounds a request)",
    "max_tokens_per_doc": "documents are scored whole, not truncated (limits.max_chars bounds a request)",
    "relevant_spans": "relevant spans are not computed",
}


class _RerankBase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1)
    verification: RerankVerification | None = None


class _WithDocuments(_RerankBase):
    documents: list[str | DocumentIn] = Field(min_length=1)

    @field_validator("documents", mode="before")
    @classmethod
    def _documents_are_texts(cls, value: Any) -> Any:
        """One clear message instead of pydantic's per-union-member errors (``documents.0.str``)."""
        if isinstance(value, list):
            for i, doc in enumerate(value):
                if not (isinstance(doc, str) or (isinstance(doc, dict) and isinstance(doc.get("text"), str))):
                    raise ValueError(f"documents[{i}] must be a string or an object with a string `text` field")
        return value

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class RerankRequest(_WithDocuments):
    """Cohere v1 / Jina / vLLM / Infinity body."""

    model: str | None = Field(None, description="the served model id (`GET /v1/models`); default: the ensemble")
    top_n: int | None = Field(None, ge=1, description="results returned (default: all)")
    return_documents: bool | None = Field(None, description="echo each document (Cohere v1/Jina/Infinity)")
    raw_scores: bool = Field(False, description="Infinity: log-odds instead of probabilities (see docs/clients.md)")
    rank_fields: list[str] | None = None
    max_chunks_per_doc: int | None = None
    max_tokens_per_doc: int | None = None
    priority: int | None = Field(None, description="Cohere scheduling hint; accepted, jobs run in arrival order")


class CohereV2RerankRequest(_WithDocuments):
    """Cohere v2 body (``cohere.ClientV2.rerank``): ``model`` is required there, optional here."""

    model: str | None = None
    top_n: int | None = Field(None, ge=1)
    return_documents: bool | None = Field(None, description="not in Cohere's v2 API, but litellm sends it")
    max_tokens_per_doc: int | None = None
    relevant_spans: Any = None
    priority: int | None = None


class TEIRerankRequest(_RerankBase):
    """Text Embeddings Inference body (``texts``)."""

    texts: list[str] = Field(min_length=1)
    raw_scores: bool = Field(False, description="log-odds instead of probabilities")
    return_text: bool = False
    truncate: bool | None = Field(None, description="accepted; documents are never cut (limits.max_chars applies)")
    truncation_direction: Literal["left", "right", "Left", "Right"] | None = None


def _face(body: Any) -> str:
    return "<tei>" if isinstance(body, dict) and "texts" in body else "<infinity>"


# Tags in angle brackets: service/errors.py leaves them out of an error's ``param``.
RootRerankRequest = Annotated[
    Annotated[TEIRerankRequest, Tag("<tei>")] | Annotated[RerankRequest, Tag("<infinity>")],
    Discriminator(_face),
]


class DocumentOut(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int = Field(description="position of the document in the request")
    relevance_score: float | None = Field(description="the aggregator's score (P(correct) for weaver)")
    document: DocumentOut | None = Field(None, exclude_if=lambda v: v is None)


class BilledUnits(BaseModel):
    search_units: int = Field(description="one per query and 100 documents, as Cohere counts them")


class ApiVersion(BaseModel):
    version: str


class CohereMeta(BaseModel):
    api_version: ApiVersion
    billed_units: BilledUnits


class Usage(BaseModel):
    prompt_tokens: int = Field(description="word pieces (words and punctuation) of query and documents")
    total_tokens: int


def rerank_id() -> str:
    return f"rerank-{uuid.uuid4().hex}"


class RerankResponse(BaseModel):
    """Cohere v1, Jina and vLLM read the same body: ``results`` (+ ``meta`` for Cohere, ``usage`` for Jina)."""

    id: str = Field(default_factory=rerank_id)
    model: str
    results: list[RerankResult]
    meta: CohereMeta
    usage: Usage
    verification: VerificationReport


class CohereV2RerankResult(BaseModel):
    index: int
    relevance_score: float | None
    document: DocumentOut | None = Field(None, exclude_if=lambda v: v is None)


class CohereV2RerankResponse(BaseModel):
    id: str = Field(default_factory=rerank_id)
    model: str
    results: list[CohereV2RerankResult]
    meta: CohereMeta
    verification: VerificationReport


class TEIRank(BaseModel):
    index: int
    score: float | None
    text: str | None = Field(None, exclude_if=lambda v: v is None)


class InfinityRerankResult(BaseModel):
    index: int
    relevance_score: float | None
    document: str | None = Field(None, exclude_if=lambda v: v is None)


class InfinityRerankResponse(BaseModel):
    object: Literal["rerank"] = "rerank"
    id: str = Field(default_factory=rerank_id)
    model: str
    results: list[InfinityRerankResult]
    usage: Usage
    verification: VerificationReport
