"""Offline scoring for `weaver eval/fit --verifiers`: profiles, the JSONL score cache, the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from models.data import load_candidate_sets, parse_candidate_set
from workers.config import WorkerConfig
from workers.offline import resolve_verifier_spec, score_candidate_sets

SETS = [parse_candidate_set({"id": f"q{i}", "prompt": f"What is {i} + 2?", "candidates": [
    {"text": f"{i} + 2 = <<{i}+2={i + 2}>>{i + 2}\nA: {i + 2}"},
    {"text": f"{i} + 2 = {i + 3}\nA: {i + 3}"},
    {"text": f"It is {i + 2}.\nA: {i + 2}"}]}) for i in range(5)]


def test_spec_is_a_profile_or_a_list_of_names() -> None:
    config = WorkerConfig.default()
    assert resolve_verifier_spec("cheap", config) == ["answer_agreement", "math_check"]
    assert resolve_verifier_spec("math_check, answer_agreement", config) == ["math_check", "answer_agreement"]
    with pytest.raises(ValueError, match="unknown verifiers"):
        resolve_verifier_spec("math_check,nope", config)


def test_scores_and_cached_rerun(tmp_path: Path) -> None:
    cache = tmp_path / "scores.jsonl"
    timings: dict[str, float] = {}
    names, matrices = score_candidate_sets(SETS, "cheap", cache_path=cache, progress=False, timings=timings)
    assert names == ["answer_agreement", "math_check"] and set(timings) == set(names)
    assert len(matrices) == 5 and all(m.shape == (3, 2) for m in matrices)
    assert matrices[0][:, 0] == pytest.approx([0.5, 0.0, 0.5])
    assert matrices[0][:, 1] == pytest.approx([1.0, 0.5, 1.0])
    lines = cache.read_text().splitlines()
    assert len(lines) == 5 + 15  # one group row per set for agreement, one row per candidate for math_check
    again_names, again = score_candidate_sets(SETS, "cheap", cache_path=cache, progress=False)
    assert again_names == names and all(np.array_equal(a, b, equal_nan=True) for a, b in zip(matrices, again,
                                                                                               strict=True))
    assert cache.read_text().splitlines() == lines  # nothing rescored


def test_weaver_eval_cli_with_the_cheap_profile(dev_set_path: Path, tmp_path: Path) -> None:
    """The CI-sized real run: 319 GSM8K dev queries x 4 candidates through the cheap verifiers."""
    from typer.testing import CliRunner

    from service.cli import app

    cache = tmp_path / "scores.jsonl"
    result = CliRunner().invoke(app, ["eval", str(dev_set_path), "--verifiers", "cheap", "--cache", str(cache),
                                      "--json"])
    assert result.exit_code == 0, result.output
    import json

    report = json.loads(result.stdout)  # progress and timings go to stderr
    assert {r["name"] for r in report["verifier_rows"]} == {"answer_agreement", "math_check"}
    sets = load_candidate_sets(dev_set_path)
    rows = cache.read_text().splitlines()
    expected = len(sets) + sum(len(cs.candidates) for cs in sets)
    assert expected - 5 <= len(rows) <= expected  # identical (prompt, candidate) pairs are scored once
    names, matrices = score_candidate_sets(sets, "cheap", cache_path=cache, progress=False)
    assert not any(math.isnan(v) for m in matrices for v in m[:, 1])  # every GSM8K solution is checkable
