"""`weaver eval` on the real GSM8K dev set reproduces the figures the data README gives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from models.data import load_candidate_sets
from models.evaluate import evaluate
from service.cli.common import build_queries
from tests.support import ROOT


def test_dev_set_baselines_match_published_figures(dev_set_path: Path) -> None:
    sets = load_candidate_sets(dev_set_path)
    assert len(sets) == 319 and all(len(cs.candidates) == 4 for cs in sets)
    queries, _ = build_queries(sets, None, None)
    report = evaluate(queries, [cs.labels for cs in sets])
    acc = {row.name: row.accuracy.mean for row in report.rows}
    assert abs(acc["random (expected)"] - 0.393) < 0.001
    assert abs(acc["first"] - 0.404) < 0.001
    assert abs(acc["majority (ties expected)"] - 0.500) < 0.001
    assert abs(acc["oracle (any correct)"] - 0.661) < 0.001
    assert acc["weaver"] >= acc["first"]
    for row in report.rows:
        assert row.accuracy.low <= row.accuracy.mean <= row.accuracy.high


def test_eval_cli_json(dev_set_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "service.cli", "eval", str(dev_set_path), "--json"],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["n_queries"] == 319
    names = [row["name"] for row in data["rows"]]
    assert "weaver" in names and "supervised LR (5-fold by query)" in names
    assert np.isfinite(data["rows"][0]["accuracy"]["mean"])
