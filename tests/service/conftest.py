"""Fixtures for gateway tests."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def prefix() -> str:
    return f"weaver-test-{uuid.uuid4().hex[:10]}"
