"""`weaver simulate` -> `weaver fit` -> `weaver eval --model` from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT


def _weaver(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def test_simulate_fit_eval(tmp_path: Path) -> None:
    data, model = tmp_path / "sim.jsonl", tmp_path / "model.json"
    result = _weaver("simulate", "-o", str(data), "--queries", "60", "--samples", "10", "--verifiers", "6")
    assert result.returncode == 0, result.stderr
    truth = json.loads((tmp_path / "sim.jsonl.truth.json").read_text())
    assert len(truth["tpr"]) == 6 and 0 < truth["bayes_optimal_accuracy"] <= 1
    result = _weaver("fit", str(data), "-o", str(model))
    assert result.returncode == 0, result.stderr
    assert "converged" in result.stdout
    artifact = json.loads(model.read_text())
    assert artifact["verifier_names"] == truth["verifier_names"]
    result = _weaver("eval", str(data), "--model", str(model), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    rows = {row["name"]: row for row in report["rows"]}
    assert rows["weaver"]["note"] == "weaver-v2; given model"  # `weaver fit` writes the default label model
    assert report["weaver_version"] == artifact["version"]
    # the label model recovers the rates it was never shown (here: as measured against the labels)
    for row in report["verifier_rows"]:
        assert abs(row["est_tpr"] - row["true_tpr"]) < 0.06 and abs(row["est_fpr"] - row["true_fpr"]) < 0.06


def test_fit_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = _weaver("fit", str(tmp_path / "nope.jsonl"))
    assert result.returncode == 2 and "no such file" in result.stderr and "Traceback" not in result.stderr
