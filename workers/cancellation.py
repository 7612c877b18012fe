"""Why a job was abandoned, and the counters of abandoned work.

A job lives exactly as long as someone waits for its answer and never past its deadline. Whoever stops
waiting names the reason by cancelling with it (``task.cancel(msg=reason)``); the queue and the worker
read it back with ``reason_of`` to label the counters below. Shared by the gateway and the worker
processes, so it depends on prometheus-client alone.
"""

from __future__ import annotations

import asyncio
from typing import Literal, cast, get_args

from prometheus_client import Counter

CancelReason = Literal["deadline", "disconnect", "shutdown", "superseded"]
REASONS: tuple[str, ...] = get_args(CancelReason)

JOBS_CANCELLED = Counter(
    "weaver_jobs_cancelled_total",
    "Jobs stopped before they finished because nobody waits for them any more",
    ["reason"],
)
CANCELLED_TOKENS = Counter(
    "weaver_cancelled_generation_tokens_total",
    "Tokens generated for candidates whose job was cancelled (wasted compute)",
)
for _reason in REASONS:  # export every series from the start, so rate() works from the first cancellation
    JOBS_CANCELLED.labels(_reason)


class _Shutdown:
    """Set once the process begins shutting down: cancellations without an explicit reason are 'shutdown'."""

    started = False


SHUTDOWN = _Shutdown()


def reason_of(exc: BaseException | None, default: CancelReason = "disconnect") -> CancelReason:
    """The reason carried by a CancelledError (its message), else 'shutdown' while shutting down, else default."""
    if isinstance(exc, asyncio.CancelledError) and exc.args and exc.args[0] in REASONS:
        return cast(CancelReason, exc.args[0])
    return "shutdown" if SHUTDOWN.started else default


def count_cancelled(reason: CancelReason) -> None:
    JOBS_CANCELLED.labels(reason).inc()
