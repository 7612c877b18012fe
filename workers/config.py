"""Worker configuration: generation backend, verifier specs, profiles, aggregation, score cache.

Loaded from YAML (``workers/default_config.yaml`` is the embedded CPU default). Environment
overrides are the gateway's job; this module only validates what it is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default_config.yaml")


class VerifierSpec(BaseModel):
    """One verifier instance: a registered ``type`` plus its parameters and batching limits."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    type: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    max_batch_size: int | None = Field(None, ge=1)  # None: the verifier type's default
    max_wait_ms: float | None = Field(None, ge=0)
    timeout_s: float | None = Field(None, gt=0)
    # batches in flight at once (remote and engine-backed verifiers benefit from >1); None: the type's default
    max_concurrency: int | None = Field(None, ge=1)


class AggregationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weaver_model: str | None = None  # path to a fitted WeaverModel artifact (JSON)
    cold_start: Literal["mean", "majority"] = "mean"  # used by "weaver" until a model exists
    # distilled cross-encoder (workers/distilled.py): its verifier name (default: the first of type cross_encoder)
    cross_encoder: str | None = None
    cascade_min_margin: float = Field(0.1, ge=0.0)  # cascade falls back to the ensemble below this top-two gap
    cascade_min_confidence: float = Field(0.0, ge=0.0, le=1.0)  # ... or below this top probability


class AdaptiveConfig(BaseModel):
    """Compute by need (workers/adaptive_job.py): server defaults; requests override cascade, budget, adaptive_n."""

    model_config = ConfigDict(extra="forbid")
    cascade: bool = Field(True, description=(
        "run verifiers in stages from cheap to expensive (measured seconds per candidate) and stop once the "
        "label model's choice is settled; without a fitted label model every verifier runs"))
    adaptive_n: bool = Field(False, description=(
        "chat: sample candidates in rounds (first_round, then doubling up to n_candidates) until settled"))
    first_round: int = Field(2, ge=1, description="candidates in adaptive N's first round")
    max_change: float | None = Field(0.01, ge=0.0, le=1.0, description=(
        "settled when the verifiers not yet run would change the answer with at most this probability, simulated "
        "from the v2 label model (models/lookahead.py); null: use confidence and margin instead"))
    confidence: float = Field(0.95, gt=0.0, le=1.0, description=(
        "settled when P(top answer group right) >= this (with a v1 label model, or with max_change null)"))
    margin: float | None = Field(None, gt=0.0, le=1.0, description=(
        "... or when it leads the best candidate outside its answer group by this; null: off (on the realistic "
        "simulator every margin criterion settled too early, docs/adaptive-compute.md)"))
    vote_confidence: float = Field(0.95, gt=0.0, le=1.0, description=(
        "without a label model, adaptive N stops when P(leading answer's share > runner-up's) >= this "
        "(Adaptive-Consistency's Beta rule)"))
    budget_s: float | None = Field(None, ge=0.0, description=(
        "verifier seconds per candidate a request may spend (the cascade skips stages past it); null: no cap"))
    cheap_stage_s: float = Field(0.005, ge=0.0, description=(
        "verifiers at most this many seconds per candidate run together in the first stage"))


class CacheConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    memory_size: int = Field(100_000, ge=0)  # LRU entries; 0 disables the in-memory cache
    redis_url: str | None = None  # when set, scores are cached in Redis instead
    redis_prefix: str = "weaver:score:"
    redis_ttl_s: int | None = Field(7 * 24 * 3600, ge=1)


class WorkerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "worker"
    generation: dict[str, Any] | None = None  # passed to workers.generation.build_backend; None: rerank only
    verifiers: list[VerifierSpec] = Field(default_factory=list)
    profiles: dict[str, list[str]] = Field(default_factory=dict)
    default_profile: str | None = None
    aggregation: AggregationConfig = Field(default_factory=AggregationConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    adaptive: AdaptiveConfig = Field(default_factory=AdaptiveConfig)
    gpu_memory_budget: float | None = Field(None, gt=0.0, le=1.0, description=(
        "fraction of the GPU's memory this worker's vLLM engines may claim together (generator + vllm_reward / "
        "vllm_judge, each its gpu_memory_utilization; unstated: vLLM's 0.9); checked at start, an engine past it "
        "is not started and readiness names it. Unset: no check"))

    @model_validator(mode="after")
    def _check_names(self) -> WorkerConfig:
        names = [v.name for v in self.verifiers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate verifier names: {', '.join(duplicates)}")
        for profile, members in self.profiles.items():
            unknown = [m for m in members if m not in names]
            if unknown:
                raise ValueError(f"profile {profile!r} names unknown verifiers: {', '.join(unknown)}")
        if self.default_profile is not None and self.default_profile not in self.profiles:
            raise ValueError(f"default_profile {self.default_profile!r} is not a profile")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> WorkerConfig:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
        return cls.model_validate(data)

    @classmethod
    def default(cls) -> WorkerConfig:
        """The embedded CPU default (``workers/default_config.yaml``)."""
        return cls.from_yaml(DEFAULT_CONFIG_PATH)

    def default_verifiers(self) -> list[str]:
        """The default profile's verifiers, else every configured verifier."""
        if self.default_profile is not None:
            return list(self.profiles[self.default_profile])
        return [v.name for v in self.verifiers]

    def spec(self, name: str) -> VerifierSpec:
        for spec in self.verifiers:
            if spec.name == name:
                return spec
        raise KeyError(name)
