"""Schemas of the catalogue and health endpoints."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "weaver-rerank"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class VerifierList(BaseModel):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    profiles: dict[str, list[str]]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    mode: str


class Readiness(BaseModel):
    ready: bool
    mode: str
    not_ready: dict[str, str]  # component -> why
    workers: int
    queue_depth: int | None = None
