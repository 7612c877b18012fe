"""Online-learning settings (the ``online`` section of the worker/gateway config)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from models.online import ColdStart, GuardrailConfig, OnlineConfig, PinPolicy, RefitPolicy


class OnlineSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    mode: Literal["embedded", "redis"] = "embedded"
    redis_url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "weaver"
    refit_every_queries: int = Field(default=50, ge=1)
    refit_every_seconds: float = Field(default=300.0, gt=0)
    window: int = Field(default=5000, ge=1, description="newest queries a refit sees")
    by_task: bool = True
    stream_maxlen: int = Field(default=10000, ge=1, description="approximate cap of the Redis score log")
    ring_capacity: int = Field(default=10000, ge=1, description="embedded score log size")
    lock_lease_ms: int = Field(default=10000, ge=100)
    poll_s: float = Field(default=0.5, gt=0)
    cold_start: Literal["model", "mean", "majority"] = Field(
        default="mean", description="what serves before the first accepted fit; overrides every attached worker's "
        "aggregation.cold_start (model: the file cold_start_model)")
    cold_start_model: str | None = None
    pin_policy: PinPolicy = Field(
        default="hold", description="after a rollback: hold (refits never replace the pinned version; "
        "`weaver models unpin` resumes) or fresh_window (a passing refit whose whole window was logged after "
        "the rollback replaces it)")
    model_dir: str | None = Field(default=None, description="embedded version store directory (memory when null)")
    keep_versions: int = Field(default=50, ge=1)
    log_prompts: bool = False
    drift_alarm: float = Field(default=0.25, ge=0)
    min_queries: int = Field(default=30, ge=1)
    min_class_balance: float = Field(default=0.02, ge=0, le=0.5)
    max_class_balance: float = Field(default=0.98, ge=0.5, le=1)
    require_converged: bool = True
    feedback_ttl_s: int = Field(default=7 * 24 * 3600, ge=1,
                                description="redis: how long a request's selections stay open to feedback")
    feedback_capacity: int = Field(
        default=100_000, ge=1, description="embedded: newest requests whose selections stay open to feedback (the "
        "oldest are forgotten first); each costs a few hundred bytes of memory (`python bench/online.py` measures "
        "it), so the default bounds the book at a few tens of MB")

    def online_config(self) -> OnlineConfig:
        return OnlineConfig(
            policy=RefitPolicy(self.refit_every_queries, self.refit_every_seconds, self.window, self.by_task),
            guardrails=GuardrailConfig(self.min_queries, self.min_class_balance, self.max_class_balance,
                                       self.require_converged),
            cold_start=ColdStart(self.cold_start, self.cold_start_model),
            ring_capacity=self.ring_capacity,
            log_prompts=self.log_prompts,
            drift_alarm=self.drift_alarm,
            pin_policy=self.pin_policy,
        )
