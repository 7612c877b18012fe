"""Redis key names, all under one prefix so deployments (and tests) never collide."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OnlineKeys:
    prefix: str = "weaver"

    @property
    def log(self) -> str:
        """The score log stream (XADD ... MAXLEN ~)."""
        return f"{self.prefix}:online:log"

    @property
    def seen(self) -> str:
        """Records ever appended (INCR with every XADD); the refit policy counts from it."""
        return f"{self.prefix}:online:seen"

    @property
    def fit_state(self) -> str:
        """Hash: seen_at_last_fit, last_fit_time, last_outcome, fitting (replica id while fitting)."""
        return f"{self.prefix}:online:fit_state"

    @property
    def lock(self) -> str:
        return f"{self.prefix}:online:refit_lock"

    def artifact(self, version: str) -> str:
        return f"{self.prefix}:models:artifact:{version}"

    @property
    def index(self) -> str:
        """Hash version -> VersionInfo JSON."""
        return f"{self.prefix}:models:index"

    @property
    def sequence(self) -> str:
        return f"{self.prefix}:models:sequence"

    @property
    def current(self) -> str:
        """The pointer: JSON {version, sequence, published_at}."""
        return f"{self.prefix}:models:current"

    @property
    def events(self) -> str:
        """Pub/sub channel announcing each new current version."""
        return f"{self.prefix}:models:events"

    def feedback_selections(self, request_id: str) -> str:
        return f"{self.prefix}:feedback:selections:{request_id}"

    def feedback_labels(self, request_id: str) -> str:
        return f"{self.prefix}:feedback:labels:{request_id}"

    @property
    def feedback_hits(self) -> str:
        return f"{self.prefix}:feedback:hits"

    @property
    def feedback_labelled(self) -> str:
        return f"{self.prefix}:feedback:labelled"
