"""Reading candidate sets and Weaver score files; bad input names the line and the field."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from models.data import DataError, load_candidate_sets
from tests.support import ROOT

GOOD = {"id": "q1", "prompt": "2+2?", "candidates": [{"text": "A: 4", "correct": True}, {"text": "A: 5"}],
        "reference": "4"}


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "sets.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_reads_canonical_format(tmp_path: Path) -> None:
    sets = load_candidate_sets(_write(tmp_path, [json.dumps(GOOD)]))
    assert sets[0].id == "q1" and sets[0].candidates[0].correct is True and sets[0].candidates[1].correct is None
    assert sets[0].reference == "4"


@pytest.mark.parametrize(("line", "expected"), [
    ('{"id": "q1", "prompt": "x", "candidates": [', ":2: malformed JSON"),
    (json.dumps({"id": "q1", "candidates": [{"text": "a"}]}), ":2: field 'prompt': Field required"),
    (json.dumps({"id": "q1", "prompt": "x", "candidates": [{"text": 3}]}), ":2: field 'candidates.0.text'"),
    (json.dumps({"id": "q1", "prompt": "x", "candidates": []}), ":2: field 'candidates'"),
    (json.dumps({"id": "q1", "prompt": "x", "candidates": [{"text": "a", "correct": "maybe"}]}),
     "field 'candidates.0.correct'"),
    (json.dumps([1, 2]), ":2: expected a JSON object"),
])
def test_bad_input_names_line_and_field(tmp_path: Path, line: str, expected: str) -> None:
    path = _write(tmp_path, [json.dumps(GOOD), line])
    with pytest.raises(DataError, match=expected.replace(".", r"\.").replace("(", r"\(")):
        load_candidate_sets(path)


def test_cli_reports_bad_input_without_traceback(tmp_path: Path) -> None:
    path = _write(tmp_path, [json.dumps(GOOD), '{"id": 1, "prompt": "x"}'])
    result = subprocess.run([sys.executable, "-m", "service.cli", "eval", str(path)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert "sets.jsonl:2: field 'candidates': Field required" in result.stderr
    assert "Traceback" not in result.stderr


def test_reads_weaver_score_rows(tmp_path: Path) -> None:
    row = {
        "instruction": "What is 2+2?",
        "samples": ["4", "5", "4"],
        "answer_correct": [True, False, True],
        "answer": "4",
        "GRM_scores": [1.5, -0.2, 0.7],
        "Llama-70B_verdicts": [[1.0], [0.0], [None]],
        "Qwen-PRM_step_scores": [[0.1, 0.2], [0.3], [0.4]],
        "weaver_scores": [0.9, 0.1, 0.8],
    }
    (sets,) = load_candidate_sets(_write(tmp_path, [json.dumps(row)]))
    assert sets.prompt == "What is 2+2?" and sets.reference == "4"
    assert sets.score_names() == ["GRM_scores", "Llama-70B_verdicts"]  # no leaked weaver_scores, no _step
    matrix = sets.score_matrix(sets.score_names())
    assert matrix[0].tolist() == [1.5, 1.0] and math.isnan(matrix[2, 1])
    assert [c.correct for c in sets.candidates] == [True, False, True]


def test_weaver_row_with_mismatched_lengths(tmp_path: Path) -> None:
    row = {"samples": ["a", "b"], "answer_correct": [True], "x_scores": [1, 2]}
    with pytest.raises(DataError, match=":1: field 'answer_correct'"):
        load_candidate_sets(_write(tmp_path, [json.dumps(row)]))


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no candidate sets"):
        load_candidate_sets(_write(tmp_path, [""]))
