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
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(loc) or None
    message = first.get("msg", "invalid value")
    if param:
        message = f"{param}: {message}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error(s))"
    code = "invalid_json" if first.get("type") == "json_invalid" else "invalid_value"
    return APIError(400, message, param=param, code=code)


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
