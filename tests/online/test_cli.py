"""``weaver models list|show|rollback`` and ``weaver online replay --plot``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from models.aggregators import QueryScores
from models.online import DirectoryModelStore, fit_window, records_from_matrices, version_info
from service.cli import app

runner = CliRunner(env={"COLUMNS": "200"})


def _store(tmp_path: Path, queries: list[QueryScores]) -> tuple[DirectoryModelStore, list[str]]:
    store = DirectoryModelStore(tmp_path / "versions")
    versions = []
    for seq in (1, 2):
        chunk = queries[(seq - 1) * 150: seq * 150]
        model = fit_window(records_from_matrices([q.matrix for q in chunk], chunk[0].verifier_names), by_task=False)
        store.put(model, version_info(model, seq, "refit", len(chunk)))
        store.set_current(model.version)
        versions.append(model.version)
    return store, versions


def test_models_list_show_rollback(tmp_path: Path, dev_scored: tuple[list[QueryScores], list[np.ndarray]]) -> None:
    store, versions = _store(tmp_path, dev_scored[0])
    listed = runner.invoke(app, ["models", "list", "--store", str(store.root), "--json"])
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.output)
    assert data["current"] == versions[1]
    assert [v["version"] for v in data["versions"]] == versions
    table = runner.invoke(app, ["models", "list", "--store", str(store.root)])
    assert "v1" in table.output and "v2" in table.output
    shown = runner.invoke(app, ["models", "show", "v1", "--store", str(store.root)])
    assert shown.exit_code == 0, shown.output
    assert versions[0] in shown.output and "answer_agreement" in shown.output
    rolled = runner.invoke(app, ["models", "rollback", versions[0][:8], "--store", str(store.root)])
    assert rolled.exit_code == 0, rolled.output
    assert DirectoryModelStore(store.root).current() == versions[0]
    missing = runner.invoke(app, ["models", "show", "v9", "--store", str(store.root)])
    assert missing.exit_code == 2


def test_replay_command_writes_plot(tmp_path: Path, dev_set_path: Path) -> None:
    plot = tmp_path / "replay.png"
    result = runner.invoke(app, ["online", "replay", str(dev_set_path), "--refit-every", "50", "--plot", str(plot),
                                 "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert [r["seen"] for r in summary["refits"]] == [50, 100, 150, 200, 250, 300]
    assert abs(summary["online_accuracy"] - summary["offline_accuracy"]) <= 0.01
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
