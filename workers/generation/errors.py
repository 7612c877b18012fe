"""Errors a generation backend raises when it cannot return candidates at all.

A backend that returns *some* candidates never raises: it says in ``GenerationOutput.reason`` how many came
back and why. These exceptions are for job-level failures (the worker turns them into an error result).
"""

from __future__ import annotations


class GenerationError(RuntimeError):
    """The backend could not produce any candidate (engine dead, endpoint unreachable, ...)."""


class PromptTooLongError(GenerationError, ValueError):
    """The rendered prompt leaves no room for a single new token in the model's context window."""


class BackendUnavailableError(GenerationError, ImportError):
    """The backend's optional dependency is not installed (e.g. ``pip install .[vllm]``)."""
