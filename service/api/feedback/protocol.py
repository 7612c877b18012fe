"""Schemas of /v1/feedback and /v1/online."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: str = Field(min_length=1, description="the job id of the request (verification.job_id)")
    candidate_index: int = Field(ge=0, description="the candidate this label is about (its index in the request)")
    correct: bool


class FeedbackResponse(BaseModel):
    object: str = "feedback"
    request_id: str
    candidate_index: int
    duplicate: bool = Field(description="this candidate was labelled before; the label was ignored")
    credited: list[str] = Field(description="aggregators whose selection this label judged")


class AggregatorAccuracy(BaseModel):
    hits: int
    labelled: int
    accuracy: float | None


class OnlineStatus(BaseModel):
    """What the online learner serves, and every aggregator's accuracy on labelled traffic."""

    mode: str
    replica: str
    serving: str | None
    sequence: int | None = Field(None, description="the served version's sequence number (None: cold start)")
    source: str = Field(description="cold_start, refit (published by a refit), rollback, or seed")
    pinned: bool = Field(False, description="a rollback pinned the served version; refits do not replace it "
                                            "unless pin_policy allows")
    pin_policy: str = "hold"
    note: str
    swapped_at: float | None
    accuracy: dict[str, AggregatorAccuracy]
    versions: list[dict[str, Any]] = Field(default_factory=list)
