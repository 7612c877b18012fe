"""``weaver distill`` end to end on a slice of the dev set with the real MiniLM (short and slow-marked)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from service.cli import app


@pytest.mark.slow
def test_distill_cli_offline_writes_checkpoint_log_and_plot(dev_set_path, tmp_path):
    small = tmp_path / "small.jsonl"
    small.write_text("".join(dev_set_path.read_text().splitlines(keepends=True)[:24]))
    out = tmp_path / "ckpt"
    result = CliRunner().invoke(app, [
        "distill", str(small), "-o", str(out), "--max-length", "64", "--epochs", "1", "--eval-every", "2",
        "--val-fraction", "0.25", "--test-fraction", "0.25", "--plot",
    ])
    assert result.exit_code == 0, result.output
    assert "split by query: 12 train / 6 val / 6 test" in result.output
    log = json.loads((out / "monitor.json").read_text())
    history = log["runs"]["offline"]["history"]
    assert history[0]["step"] == 0 and history[-1]["golden_auroc"] is not None
    assert (out / "monitor.png").stat().st_size > 1000
    meta = json.loads((out / "distill.json").read_text())
    assert len(meta["extra"]["test_query_ids"]) == 6
    assert meta["context_features"] == ["sibling_agreement", "no_answer"]  # the default student sees siblings
    assert len(meta["context_weights"]) == 2


def test_distill_cli_rejects_unknown_context_features(dev_set_path, tmp_path):
    result = CliRunner().invoke(app, ["distill", str(dev_set_path), "-o", str(tmp_path / "x"),
                                      "--context-features", "sibling_agreement,vibes"])
    assert result.exit_code == 2
    assert "unknown context feature" in result.output


def test_distill_cli_refuses_long_offline_runs_without_force(dev_set_path, tmp_path):
    result = CliRunner().invoke(app, ["distill", str(dev_set_path), "-o", str(tmp_path / "x"), "--epochs", "30"])
    assert result.exit_code == 2
    assert "teacher hacking" in result.output
