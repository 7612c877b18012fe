"""``weaver models list|show|rollback`` and ``weaver online replay --plot``."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import redis
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
    assert "now serving v1" in rolled.output and "pinned" in rolled.output
    pointer = DirectoryModelStore(store.root).pointer()
    assert pointer is not None and (pointer.version, pointer.source, pointer.pinned) == (versions[0], "rollback", True)
    listed = runner.invoke(app, ["models", "list", "--store", str(store.root)])
    assert "serving v1" in listed.output and "rollback, pinned" in listed.output
    unpinned = runner.invoke(app, ["models", "unpin", "--store", str(store.root)])
    assert unpinned.exit_code == 0 and "unpinned; serving v1" in unpinned.output
    assert not DirectoryModelStore(store.root).pointer().pinned  # type: ignore[union-attr]
    assert "nothing pinned" in runner.invoke(app, ["models", "unpin", "--store", str(store.root)]).output
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


def test_replay_plot_covers_the_headline_range(dev_scored: tuple[list[QueryScores], list[np.ndarray]]) -> None:
    """The plotted curves end where the headline figures are measured (every query), and each verifier
    has its own marker, so coinciding curves do not hide one another."""
    import matplotlib.pyplot as plt

    from models.eval_plots import build_replay_figure
    from models.online.replay import replay

    queries, labels = dev_scored
    result = replay(queries, labels, refit_every=50)
    assert result.points[-1].seen < len(queries)  # the last refit comes before the last query
    fig = build_replay_figure(result, len(queries))
    try:
        top, bottom = fig.axes[:2]
        by_label = {line.get_label().split(":")[0]: line for line in top.lines}
        whole, prequential = by_label["online model, whole set"], by_label["served so far (prequential)"]
        assert whole.get_xdata()[-1] == prequential.get_xdata()[-1] == len(queries)
        assert prequential.get_ydata()[-1] == 100 * result.prequential_accuracy
        assert whole.get_ydata()[-1] == 100 * result.online_accuracy
        assert bottom.get_xlim()[1] >= len(queries)
        accuracy_lines = [line for line in bottom.lines if line.get_label().endswith("est. accuracy")]
        assert len(accuracy_lines) == len(result.points[-1].estimated_accuracy) >= 2
        assert len({line.get_marker() for line in accuracy_lines}) == len(accuracy_lines)
        assert all(line.get_xdata()[-1] == len(queries) for line in bottom.lines)
    finally:
        plt.close(fig)


@pytest.mark.redis
def test_models_list_names_the_prefixes_that_hold_versions(
    redis_client: redis.Redis, live_redis_url: str, dev_scored: tuple[list[QueryScores], list[np.ndarray]],
) -> None:
    from workers.online.keys import OnlineKeys
    from workers.online.store import RedisModelStore

    queries = dev_scored[0]
    prefix = f"test-cli-{uuid.uuid4().hex[:8]}"
    model = fit_window(records_from_matrices([q.matrix for q in queries[:100]], queries[0].verifier_names),
                       by_task=False)
    RedisModelStore(redis_client, OnlineKeys(prefix)).publish(model, version_info(model, 0, "refit", 100))
    try:
        empty = runner.invoke(app, ["models", "list", "--store", live_redis_url, "--prefix", "nothing-here"])
        assert empty.exit_code == 0, empty.output
        assert "no versions under prefix 'nothing-here'" in empty.output and repr(prefix) in empty.output
        found = runner.invoke(app, ["models", "list", "--store", live_redis_url, "--prefix", prefix])
        assert "serving v1" in found.output and "(refit, since" in found.output
        missing = runner.invoke(app, ["models", "rollback", "v1", "--store", live_redis_url,
                                      "--prefix", "nothing-here"])
        assert missing.exit_code == 2 and repr(prefix) in missing.output
    finally:
        for key in redis_client.scan_iter(f"{prefix}:*"):
            redis_client.delete(key)
