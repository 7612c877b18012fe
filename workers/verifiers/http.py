"""JSON over HTTP with retries, backoff and timeouts (httpx), shared by the remote verifiers."""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

import httpx

RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


class RemoteError(RuntimeError):
    """A remote verifier call failed for good (after retries, or with a non-retryable status)."""


def auth_headers(api_key_env: str | None) -> dict[str, str]:
    """Authorization from an environment variable named in the config (keys never live in YAML)."""
    key = os.environ.get(api_key_env) if api_key_env else None
    return {"Authorization": f"Bearer {key}"} if key else {}


async def post_json(client: httpx.AsyncClient, url: str, payload: dict[str, Any], retries: int = 3,
                    backoff_s: float = 0.2, max_backoff_s: float = 5.0) -> Any:
    """POST and decode JSON; retries connection errors, timeouts, 429 and 5xx with jittered backoff."""
    for attempt in range(retries + 1):
        try:
            response = await client.post(url, json=payload)
            if response.status_code in RETRY_STATUS and attempt < retries:
                raise httpx.HTTPStatusError(f"status {response.status_code}", request=response.request,
                                            response=response)
            if response.status_code >= 400:
                raise RemoteError(f"{url} answered {response.status_code}: {response.text[:300]}")
            return response.json()
        except (httpx.TransportError, httpx.HTTPStatusError) as exc:
            if attempt >= retries:
                raise RemoteError(f"{url} failed after {retries + 1} attempts: {type(exc).__name__}: {exc}") from exc
            delay = min(max_backoff_s, backoff_s * 2**attempt) * (0.5 + random.random())
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")
