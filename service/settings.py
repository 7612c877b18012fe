"""Gateway settings: one YAML file plus ``WEAVER_...`` environment overrides (pydantic-settings).

Precedence: explicit arguments > environment (``WEAVER_PORT``, ``WEAVER_LIMITS__MAX_CANDIDATES``) > YAML
file (``--config`` or ``WEAVER_CONFIG``) > defaults. Nothing is built at import; there are no default
secrets: API keys come only from ``WEAVER_API_KEYS`` (comma-separated) or ``api_keys_file``.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from workers.online.settings import OnlineSettings

# Small enough that a request without max_tokens answers within 30 s with the embedded CPU default
# (SmolLM2-135M, 4 candidates) on two cores (docs/lifecycle.md); GPU deployments raise it (WEAVER_DEFAULT_MAX_TOKENS).
DEFAULT_MAX_TOKENS = 64
_CONFIG_FILE: ContextVar[str | None] = ContextVar("weaver_config_file", default=None)


class LimitSettings(BaseModel):
    """Request limits, enforced before any work starts."""

    model_config = ConfigDict(extra="forbid")

    max_candidates: int = Field(16, ge=1, description="most candidates per chat request / documents per rerank")
    max_chars: int = Field(32_000, ge=1, description="most characters of prompt plus candidates in one request")
    max_verifiers: int = Field(16, ge=1, description="most verifiers named in one request")
    max_body_bytes: int = Field(1_000_000, ge=1, description="largest accepted request body")
    max_tokens: int = Field(1024, ge=1, description="largest max_tokens per sampled candidate")
    max_header_bytes: int = Field(16_384, ge=1024, description="largest request line plus headers (h11)")
    header_timeout_s: float = Field(10.0, gt=0, description="time a connection gets to send its request headers")


class QueueSettings(BaseModel):
    """The job queue (in-process in embedded mode, a Redis Stream in distributed mode)."""

    model_config = ConfigDict(extra="forbid")

    max_depth: int = Field(64, ge=1, description="jobs waiting or running before new ones get 429")
    retry_after_s: float = Field(1.0, gt=0, description="Retry-After sent with a 429 for a full queue")
    concurrency: int = Field(8, ge=1, description="jobs one worker runs at once (lets verifiers batch)")
    prefix: str = Field("weaver", min_length=1, description="Redis key prefix (isolates deployments)")
    visibility_timeout_s: float = Field(30.0, gt=0, description="idle time after which a job is reclaimed")
    result_ttl_s: int = Field(300, ge=1, description="how long results and reply lists live in Redis")
    max_attempts: int = Field(3, ge=1, description="runs of one job before it is answered with an error")
    shutdown_grace_s: float = Field(30.0, ge=0, description="time in-flight jobs get to finish on shutdown")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WEAVER_", env_nested_delimiter="__", extra="forbid")

    host: str = Field("127.0.0.1", description="interface to bind")
    port: int = Field(8000, ge=0, le=65535, description="port to bind")
    redis_url: str | None = Field(None, description="Redis URL: set = distributed gateway, unset = embedded")
    worker_config: Path | None = Field(None, description="worker YAML (embedded mode); default: the CPU set")
    served_model_name: str = Field("weaver", description="model id listed by /v1/models and accepted by requests")
    request_timeout_s: float = Field(120.0, gt=0, description="deadline of every job; past it: 504")
    default_n_candidates: int = Field(4, ge=1, description="candidates sampled when the request does not say")
    default_max_tokens: int = Field(
        DEFAULT_MAX_TOKENS, ge=1, description="max_tokens per candidate when the request does not say"
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="accepted API keys (env: comma-separated); empty = no auth"
    )
    api_keys_file: Path | None = Field(None, description="file with one API key per line (a mounted Secret)")
    protect_ops_endpoints: bool = Field(False, description="require a key for /metrics, /healthz, /readyz too")
    public_docs: bool = Field(False, description="serve /docs, /redoc, /openapi.json without a key when keys are set")
    forwarded_allow_ips: str = Field(
        "127.0.0.1,::1", description="proxies whose X-Forwarded-For names the client (rate-limit buckets, logs)")
    rate_limit_per_minute: int | None = Field(
        None, ge=1, description="requests per minute per API key (per client address when no keys); unset = off")
    log_level: str = Field("info", description="uvicorn / service log level")
    limits: LimitSettings = Field(default_factory=LimitSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    online: OnlineSettings = Field(default_factory=OnlineSettings)  # online weak supervision (refits, feedback)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def mode(self) -> str:
        return "distributed" if self.redis_url else "embedded"

    def resolved_api_keys(self) -> list[str]:
        """Keys from the environment/YAML and from ``api_keys_file`` (blank lines and # comments skipped)."""
        keys = [k.get_secret_value() for k in self.api_keys]
        if self.api_keys_file is not None:
            for line in self.api_keys_file.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    keys.append(line)
        return keys

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _CONFIG_FILE.get() or os.environ.get("WEAVER_CONFIG")
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from ``config_file`` (or ``WEAVER_CONFIG``), the environment, then ``overrides``."""
    if config_file is not None and not config_file.exists():
        raise FileNotFoundError(f"config file not found: {config_file}")
    token = _CONFIG_FILE.set(str(config_file) if config_file is not None else None)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    finally:
        _CONFIG_FILE.reset(token)
