"""``--v2-option KEY=VALUE``: v2's ablation switches from the command line, checked by pydantic, never ignored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from models.aggregators import QueryScores
from models.evaluate import evaluate
from models.simulate_realistic import RealisticConfig, simulate_realistic
from models.v2_options import changed_options, option_names, v2_config
from models.weaver_v2 import WeaverV2Config
from tests.support import ROOT


def test_values_are_parsed_by_field_type() -> None:
    config = v2_config(["within_association=false", "max_bins=2", "smoothing=0.25", "multi_answer_tasks=code, sql",
                        "dependency-guard=0"])
    assert config == WeaverV2Config(within_association=False, max_bins=2, smoothing=0.25,
                                    multi_answer_tasks=("code", "sql"), dependency_guard=False)
    assert changed_options(config) == {"max_bins": 2, "dependency_guard": False, "within_association": False,
                                       "multi_answer_tasks": ("code", "sql"), "smoothing": 0.25}
    assert v2_config([]) == WeaverV2Config()
    assert v2_config(["max_bins=4", "max_bins=6"]).max_bins == 6  # the later one wins
    assert v2_config(["multi_answer_tasks="]).multi_answer_tasks == ()  # every task single-answer
    assert set(option_names()) >= {"answer_groups", "unique_answers", "within_query", "within_association"}


@pytest.mark.parametrize(("option", "message"), [
    ("within_associaton=false", "unknown v2 option 'within_associaton'"),
    ("within_association", "expected KEY=VALUE"),
    ("=1", "expected KEY=VALUE"),
    ("answer_groups=maybe", "answer_groups"),
    ("max_bins=two", "max_bins"),
    ("max_bins=1", "max_bins must be at least 2"),
    ("smoothing=0", "smoothing must be positive"),
    ("min_coverage=1.5", "min_coverage must be within [0, 1]"),
])
def test_bad_options_name_the_problem(option: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        v2_config([option])


def test_config_ranges_are_checked_for_every_caller() -> None:
    with pytest.raises(ValueError, match="max_iter must be at least 1"):
        WeaverV2Config(max_iter=0)


def test_evaluate_fits_every_v2_model_with_the_options() -> None:
    sim = simulate_realistic(RealisticConfig(n_queries=60, n_samples=4, seed=3))
    queries = [QueryScores(cs.score_matrix(sim.verifier_names), sim.verifier_names, a)
               for cs, a in zip(sim.sets, sim.answers, strict=True)]
    labels = [y.astype(float) for y in sim.labels]
    default = evaluate(queries, labels, folds=2, resamples=0)
    ungrouped = evaluate(queries, labels, folds=2, resamples=0, v2_config=WeaverV2Config(answer_groups=False))
    assert default.label_model_options == {}
    assert ungrouped.label_model_options == {"answer_groups": False}
    # without answer groups the members of a group are scored apart, so the posteriors (and their AUROC) move
    assert ungrouped.rows[0].name == default.rows[0].name == "weaver"
    assert ungrouped.rows[0].auroc != default.rows[0].auroc


def test_cli_fit_and_eval_take_options(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "160"}

    def weaver(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True, text=True,
                              cwd=tmp_path, timeout=300, env=env)

    made = weaver("simulate", "--regime", "realistic", "--queries", "60", "--samples", "4", "-o", "sets.jsonl")
    assert made.returncode == 0, made.stderr
    fitted = weaver("fit", "sets.jsonl", "--v2-option", "within_association=false", "--v2-option", "max_bins=3",
                    "-o", "model.json")
    assert fitted.returncode == 0, fitted.stderr
    assert "fit options changed from the default: max_bins=3, within_association=False" in fitted.stdout
    artifact = json.loads((tmp_path / "model.json").read_text())
    assert artifact["config"]["max_bins"] == 3 and artifact["config"]["within_association"] is False

    evaluated = weaver("eval", "sets.jsonl", "--v2-option", "unique_answers=false", "--resamples", "0",
                       "--folds", "2", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["label_model_options"] == {"unique_answers": False}

    for args, message in [
        (("fit", "sets.jsonl", "--v2-option", "max_bin=3"), "unknown v2 option 'max_bin'"),
        (("fit", "sets.jsonl", "--label-model", "weaver-v1", "--v2-option", "max_bins=3"), "not of weaver-v1"),
        (("eval", "sets.jsonl", "--model", "model.json", "--v2-option", "max_bins=3"), "give one of them"),
    ]:
        bad = weaver(*args)
        assert bad.returncode == 2 and message in bad.stderr, (args, bad.stderr)
        assert "Traceback" not in bad.stderr
