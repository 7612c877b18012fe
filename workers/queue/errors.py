"""Typed queue failures. The gateway maps each to one HTTP status (429, 503, 504)."""

from __future__ import annotations


class QueueError(Exception):
    """Base class: the queue could not answer a job."""


class QueueFull(QueueError):
    """The queue holds its maximum number of jobs; the client should retry later."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueueUnavailable(QueueError):
    """The queue backend (Redis) cannot be reached, or the queue is shutting down."""


class JobDeadlineExceeded(QueueError):
    """The job's deadline passed before its result arrived (or before a worker could start it)."""


class IdempotencyMismatch(QueueError):
    """An Idempotency-Key already names a different request (HTTP 422: the client reused a key)."""
