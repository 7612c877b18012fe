"""``weaver eval --plot`` writes readable PNGs; reliability bins; the CLI's one-line errors; tables that fit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.metrics import expected_calibration_error, reliability_bins
from tests.support import ROOT


def _weaver(*args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env=env)


def test_reliability_bins_by_hand() -> None:
    p = np.array([0.05, 0.15, 0.12, 0.95, np.nan])
    y = np.array([0, 1, 0, 1, 1])
    bins = reliability_bins(p, y)
    assert [(b.low, b.count) for b in bins] == [(0.0, 1), (0.1, 2), (0.9, 1)]  # empty bins and NaN left out
    assert bins[1].mean_probability == pytest.approx(0.135) and bins[1].accuracy == 0.5
    assert bins[2].high == 1.0 and bins[2].accuracy == 1.0
    # ECE is the count-weighted gap over the same bins
    assert expected_calibration_error(p, y) == pytest.approx(0.25 * 0.05 + 0.5 * 0.365 + 0.25 * 0.05)
    assert np.isnan(expected_calibration_error(np.array([np.nan]), np.array([1.0])))


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sim") / "sim.jsonl"
    result = _weaver("simulate", "-o", str(path), "--queries", "80", "--samples", "8", "--verifiers", "6")
    assert result.returncode == 0, result.stderr
    return path


def _image(path: Path) -> np.ndarray:
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(str(path))


def test_eval_plot_writes_three_nontrivial_pngs(simulated: Path, tmp_path: Path) -> None:
    out = tmp_path / "plots"
    result = _weaver("eval", str(simulated), "--plot", str(out))
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["accuracy.png", "reliability.png", "verifiers.png"]
    for name in names:
        assert f"wrote {out / name}" in result.stdout
        image = _image(out / name)
        height, width = image.shape[:2]
        assert height >= 300 and width >= 500, (name, image.shape)
        ink = (image[..., :3].mean(axis=2) < 0.9).mean()  # share of non-white pixels: axes, text, markers
        assert 0.01 < ink < 0.5, (name, ink)
    # one panel per probabilistic aggregator (weaver, its cross-fit, the other label model, supervised LR),
    # laid out in a row or a grid: wider than tall either way
    reliability = _image(out / "reliability.png")
    assert reliability.shape[1] > reliability.shape[0]


def test_eval_json_carries_the_bins_and_plot_paths(simulated: Path, tmp_path: Path) -> None:
    result = _weaver("eval", str(simulated), "--json", "--plot", str(tmp_path / "p"))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert sorted(Path(p).name for p in report["plots"]) == ["accuracy.png", "reliability.png", "verifiers.png"]
    rows = {row["name"]: row for row in report["rows"]}
    bins = rows["weaver"]["reliability"]
    assert sum(b["count"] for b in bins) == report["n_candidates"]  # every candidate is labelled here
    assert rows["first"]["reliability"] == []  # not probabilistic: no diagram


def test_eval_tables_fit_80_columns_without_cutting_numbers(simulated: Path) -> None:
    result = _weaver("eval", str(simulated), columns=80)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in result.stdout
    notes = next((i for i, line in enumerate(lines) if line.startswith(("* ", "warning:"))), len(lines))
    verifier_lines = [line for line in lines[:notes] if line.lstrip().startswith("v0")]  # warnings may name them
    accuracy_lines, rate_lines = verifier_lines[:6], verifier_lines[6:]  # two tables, one row per verifier each
    assert len(accuracy_lines) == len(rate_lines) == 6
    assert all(line.count("-") >= 1 for line in accuracy_lines)  # the 95% interval stays whole
    assert all(line.count("/") == 2 for line in rate_lines)  # TPR and FPR est/true pairs stay whole


def test_eval_on_a_directory_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text("")
    result = _weaver("eval", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "is a directory" in result.stderr and str(tmp_path / "a.jsonl") in result.stderr


def test_eval_plot_into_a_file_is_refused(simulated: Path, tmp_path: Path) -> None:
    target = tmp_path / "taken.png"
    target.write_bytes(b"x")
    result = _weaver("eval", str(simulated), "--plot", str(target))
    assert result.returncode == 2 and "is a file" in result.stderr and "Traceback" not in result.stderr


def test_models_list_without_a_store_says_no_versions_yet(tmp_path: Path) -> None:
    missing = tmp_path / "never-published"
    result = _weaver("models", "list", "--store", str(missing))
    assert result.returncode == 0 and result.stdout.strip() == (
        f"no versions yet in {missing} (the service serves its cold-start prior)")
    as_json = _weaver("models", "list", "--store", str(missing), "--json")
    assert json.loads(as_json.stdout) == {"current": None, "versions": []}
    missing_show = _weaver("models", "show", "v1", "--store", str(missing))
    assert missing_show.returncode == 2 and missing_show.stderr.startswith("error: no version store at")
    assert missing_show.stderr.strip().count("\n") == 0


def test_replay_plot_ends_where_the_headline_does(simulated: Path) -> None:
    """80 queries, refits every 30: the last refit is at 60, yet the curves run to 80 and end on the
    printed online and prequential figures."""
    from models.data import load_candidate_sets
    from models.eval_plots import build_replay_figure
    from models.online.replay import replay
    from service.cli.common import build_queries

    sets = load_candidate_sets(simulated)
    queries, _ = build_queries(sets, None, None)
    result = replay(queries, [cs.labels for cs in sets], refit_every=30)
    assert [p.seen for p in result.points] == [30, 60]
    fig = build_replay_figure(result, len(queries), "replay")
    top = fig.axes[0]
    by_label = {line.get_label().split(":")[0]: line for line in top.get_lines()}
    whole, prequential = by_label["online model, whole set"], by_label["served so far (prequential)"]
    assert list(whole.get_xdata()) == [30, 60, 80] and list(prequential.get_xdata()) == [30, 60, 80]
    assert whole.get_ydata()[-1] == pytest.approx(100 * result.online_accuracy)
    assert prequential.get_ydata()[-1] == pytest.approx(100 * result.prequential_accuracy)
    styles = {(line.get_linestyle(), line.get_marker()) for line in (whole, prequential)}
    assert len(styles) == 2  # coinciding curves stay distinguishable
