"""``weaver fit``, ``eval``, ``cascade`` and ``online replay`` share one score cache per file by default, so a slow
verifier's scores computed by one command are read by the next instead of recomputed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from service.cli.common import score_cache
from tests.support import ROOT


def test_default_cache_only_where_verifiers_are_computed() -> None:
    data = Path("data/dev.jsonl")
    assert score_cache(data, "cpu-default", None) == Path(".cache/scores-dev.jsonl")
    assert score_cache(data, "cpu-default", Path("mine.jsonl")) == Path("mine.jsonl")
    assert score_cache(data, None, None) is None  # the file's own scores
    assert score_cache(data, "answer_agreement", None) is None  # computed from the answers, nothing to keep


def test_fit_fills_the_cache_eval_reads(tmp_path: Path) -> None:
    data = tmp_path / "tiny.jsonl"
    with data.open("w") as f:
        for i in range(6):
            candidates = [{"text": f"{i} + 1 = {i + 1}\n#### {i + 1}", "correct": True},
                          {"text": f"{i} + 1 = {i + 2}\n#### {i + 2}", "correct": False},
                          {"text": f"so it is {i + 1}\n#### {i + 1}", "correct": True}]
            f.write(json.dumps({"id": f"q{i}", "prompt": f"What is {i} + 1?", "candidates": candidates}) + "\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}

    def weaver(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True, text=True,
                              cwd=tmp_path, timeout=300, env=env)

    fitted = weaver("fit", str(data), "--verifiers", "answer_agreement,math_check", "-o", "model.json")
    assert fitted.returncode == 0, fitted.stderr
    cache = tmp_path / ".cache" / "scores-tiny.jsonl"
    assert "cache: .cache/scores-tiny.jsonl" in fitted.stdout
    written = cache.read_text().splitlines()
    per_verifier = [json.loads(line)["key"].split("@")[0] for line in written]
    assert per_verifier.count("math_check") == 6 * 3  # one score per candidate
    assert per_verifier.count("answer_agreement") == 6  # one list per candidate set

    evaluated = weaver("eval", str(data), "--verifiers", "answer_agreement,math_check", "--resamples", "0",
                       "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert cache.read_text().splitlines() == written  # every score came from the cache: nothing appended
