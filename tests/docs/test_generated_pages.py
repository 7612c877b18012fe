"""The reference pages generated from code are current: a settings field or an API change without a regenerated
page fails here with the command that fixes it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import ROOT

GENERATORS = sorted(p.name for p in (ROOT / "docs" / "gen").glob("*.py") if p.name not in {"__init__.py", "common.py"})


@pytest.mark.parametrize("script", GENERATORS)
def test_generated_page_is_current(script: str) -> None:
    result = subprocess.run(
        [sys.executable, f"docs/gen/{script}", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr + result.stdout


def test_every_generator_is_checked() -> None:
    assert {"config_reference.py", "api_reference.py"} <= set(GENERATORS)
