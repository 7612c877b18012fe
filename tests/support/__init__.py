"""Helpers every test folder shares: paths, free ports, polling until a condition holds, the test Redis.

One definition each, so a fix (a longer poll, a better skip reason) reaches every test at once.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("WEAVER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
T = TypeVar("T")


def free_port() -> int:
    """A TCP port nothing listens on right now (127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], T], timeout: float, what: str = "the condition",
               ignore: tuple[type[BaseException], ...] = (), interval: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something truthy and return it; fail the test after ``timeout`` s.

    Exceptions listed in ``ignore`` (a server still starting: ``httpx.HTTPError``, ``OSError``) count as "not yet".
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except ignore:
            value = None  # type: ignore[assignment]
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def wait_until_async(predicate: Callable[[], Any], timeout: float, what: str = "the condition",
                           interval: float = 0.05) -> Any:
    """``wait_until`` for async tests: sleeps on the event loop so the code under test keeps running."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def redis_or_skip(url: str = REDIS_URL) -> str:
    """The test Redis URL, or a skip that says why when nothing answers there."""
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable at {url}: {exc}")
    return url
