"""Shared fixtures: the dev data directory (tests that need it skip when it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    env = os.environ.get("WEAVER_DATA_DIR")
    return Path(env) if env else ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def dev_set_path() -> Path:
    path = data_dir() / "gsm8k_gpt3_dev.jsonl"
    if not path.exists():
        pytest.skip(f"dev set not found at {path} (set WEAVER_DATA_DIR to the folder holding gsm8k_gpt3_dev.jsonl)")
    return path
