"""Online weak supervision: keep refitting the label model on the score matrices the service computes.

The Weaver label model reads no labels, so every verified request is training data for it. This package is the
pure part (no Redis, no web server), one module a job:

- ``records``: the score-log record and a bounded in-memory ring;
- ``refit``: the refit policy, the window aligned onto one verifier set, guardrails, drift, one refit;
- ``store``: versions, the served-version pointer and its pin, in memory or in a directory;
- ``learner``: the embedded learner that ties them together, and the cold-start prior;
- ``feedback``: online accuracy from labelled traffic (never read by a refit); ``replay``: offline replays.

``workers.online`` runs it embedded (a thread) or distributed (Redis Streams, a lease lock, pub/sub).
"""

from __future__ import annotations

from models.online.learner import ColdStart, OnlineConfig, OnlineLearner
from models.online.records import ScoreRecord, ScoreRing, records_from_matrices
from models.online.refit import (
    Drift,
    GuardrailConfig,
    Outcome,
    RefitOutcome,
    RefitPolicy,
    drift,
    estimated_accuracies,
    fit_aligned,
    fit_window,
    guardrail_reasons,
    positive_rates,
    refit,
    window_matrices,
)
from models.online.store import (
    DirectoryModelStore,
    MemoryModelStore,
    ModelStore,
    PinPolicy,
    Pointer,
    VersionInfo,
    VersionNotFound,
    next_sequence,
    pin_allows,
    resolve_version,
    rollback,
    version_info,
)

__all__ = [
    "ColdStart",
    "DirectoryModelStore",
    "Drift",
    "GuardrailConfig",
    "MemoryModelStore",
    "ModelStore",
    "OnlineConfig",
    "OnlineLearner",
    "Outcome",
    "PinPolicy",
    "Pointer",
    "RefitOutcome",
    "RefitPolicy",
    "ScoreRecord",
    "ScoreRing",
    "VersionInfo",
    "VersionNotFound",
    "drift",
    "estimated_accuracies",
    "fit_aligned",
    "fit_window",
    "guardrail_reasons",
    "next_sequence",
    "pin_allows",
    "positive_rates",
    "records_from_matrices",
    "refit",
    "resolve_version",
    "rollback",
    "version_info",
    "window_matrices",
]
