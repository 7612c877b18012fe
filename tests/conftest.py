"""Shared fixtures: the dev data directory (tests that need it skip when it is absent)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support import REDIS_URL, ROOT

TEST_REDIS_URL = REDIS_URL


def data_dir() -> Path:
    env = os.environ.get("WEAVER_DATA_DIR")
    return Path(env) if env else ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def dev_set_path() -> Path:
    path = data_dir() / "gsm8k_gpt3_dev.jsonl"
    if not path.exists():
        pytest.skip(f"dev set not found at {path} (set WEAVER_DATA_DIR to the folder holding gsm8k_gpt3_dev.jsonl)")
    return path


@pytest.fixture
def live_redis_url() -> str:
    """The test Redis URL (WEAVER_TEST_REDIS_URL), or a skip with the reason when nothing answers there."""
    try:
        redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis answering at {TEST_REDIS_URL}: {exc}")
    return TEST_REDIS_URL


@pytest.fixture
def redis_client(live_redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(live_redis_url)
    yield client
    client.close()
