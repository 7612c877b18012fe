"""One error shape (OpenAI's ``{"error": {message, type, param, code}}``) and one exception -> status mapping."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from workers.queue.errors import JobDeadlineExceeded, QueueFull, QueueUnavailable

log = logging.getLogger(__name__)


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


class APIError(Exception):
    """An error the API answers with: status, OpenAI error fields, optional headers (Retry-After)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.info = ErrorInfo(message=message, type=type, param=param, code=code)
        self.headers = headers or {}


def invalid(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


_HTTP_TYPES = {404: "not_found_error", 405: "invalid_request_error", 413: "request_too_large"}

# A job the worker answered with status "error": its error_type -> (status, OpenAI type, code).
_JOB_ERRORS: dict[str, tuple[int, str, str | None]] = {
    "invalid_request_error": (400, "invalid_request_error", "invalid_request_error"),
    "unknown_verifier": (400, "invalid_request_error", "unknown_verifier"),
    "unknown_profile": (400, "invalid_request_error", "unknown_profile"),
    "bad_request": (400, "invalid_request_error", "bad_request"),
    "deadline_exceeded": (504, "timeout_error", "deadline_exceeded"),
    "timeout_error": (504, "timeout_error", "deadline_exceeded"),
    "service_unavailable": (503, "service_unavailable", "service_unavailable"),
}


def job_error(error_type: str | None, message: str | None) -> APIError:
    """The API error for a job the worker could not complete; unknown kinds are the worker's fault (500)."""
    kind = error_type or "worker_error"
    status, type_, code = _JOB_ERRORS.get(kind, (500, "worker_error", kind))
    return APIError(status, message or "the worker could not complete the job", type=type_, code=code)


def to_api_error(exc: Exception) -> APIError:
    """The single place that decides the status and body of every failure."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, QueueFull):
        retry = str(max(1, round(exc.retry_after_s)))
        return APIError(429, str(exc), type="rate_limit_error", code="queue_full", headers={"Retry-After": retry})
    if isinstance(exc, QueueUnavailable):
        return APIError(503, str(exc), type="service_unavailable", code="queue_unavailable")
    if isinstance(exc, JobDeadlineExceeded):
        return APIError(504, str(exc), type="timeout_error", code="deadline_exceeded")
    if isinstance(exc, RequestValidationError):
        return _validation_error(exc)
    if isinstance(exc, StarletteHTTPException):
        status = exc.status_code
        code = "body_too_large" if status == 413 else None
        return APIError(status, str(exc.detail), type=_HTTP_TYPES.get(status, "invalid_request_error"), code=code)
    log.exception("unhandled error", exc_info=exc)
    return APIError(500, "internal server error", type="internal_error", code="internal_error")


def _validation_error(exc: RequestValidationError) -> APIError:
    errors = exc.errors()
    if not errors:
        return invalid("invalid request body")
    first = errors[0]
    if first.get("type") == "json_invalid":
        return _json_error(first, exc.body)
    if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
        return invalid("request body is empty; send a JSON object", code="invalid_json")
    # "<tag>" parts name the branch of a tagged union (one route, several body shapes), not a field
    loc = [str(part) for part in first.get("loc", ()) if part != "body" and not str(part).startswith("<")]
    param = ".".join(loc) or None
    message = first.get("msg", "invalid value")
    if param:
        message = f"{param}: {message}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error(s))"
    return APIError(400, message, param=param, code="invalid_value")


def _json_error(error: dict[str, Any], body: Any) -> APIError:
    """Say where the JSON breaks (line, column) and what the parser expected; no ``param``, since the
    position is not a field."""
    loc = error.get("loc", ())
    position = loc[-1] if loc and isinstance(loc[-1], int) else None
    reason = (error.get("ctx") or {}).get("error") or "invalid JSON"
    where = ""
    if position is not None:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        where = f" at line {line}, column {column} (char {position})"
    return invalid(f"request body is not valid JSON: {reason}{where}", code="invalid_json")


def error_response(err: APIError) -> JSONResponse:
    return JSONResponse(ErrorResponse(error=err.info).model_dump(), status_code=err.status, headers=err.headers)


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    return error_response(to_api_error(exc))


def install_error_handlers(app: FastAPI) -> None:
    for exc_type in (
        APIError,
        RequestValidationError,
        StarletteHTTPException,
        QueueFull,
        QueueUnavailable,
        JobDeadlineExceeded,
        Exception,
    ):
        app.add_exception_handler(exc_type, _handle)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Invalid request body",
        401: "Missing or wrong API key",
        413: "Request body too large",
        429: "Queue full or rate limit exceeded (see Retry-After)",
        503: "Queue backend unavailable",
        504: "Deadline exceeded",
    }.items()
}

NOT_FOUND: dict[str, Any] = {"model": ErrorResponse, "description": "Unknown model (`code: model_not_found`)"}
