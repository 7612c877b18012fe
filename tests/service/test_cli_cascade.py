"""`weaver cascade`: the offline replay of the verifier cascade from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT


def _weaver(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


@pytest.fixture(scope="module")
def realistic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("cascade") / "real.jsonl"
    result = _weaver("simulate", "--regime", "realistic", "-o", str(data), "--queries", "40", "--samples", "8")
    assert result.returncode == 0, result.stderr
    return data


def test_cascade_json_on_the_simulator(realistic: Path, tmp_path: Path) -> None:
    result = _weaver("cascade", str(realistic), "--json", "--max-change", "0.01", "--confidence", "0.9,0.99",
                     "--margin", "0.5,off", "--budgets", "none,40%", "--plot", str(tmp_path))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["costs_source"] == "assumed for the simulator" and data["n_queries"] == 40
    policies = data["policies"]
    fixed = [p for p in policies if p["kind"] == "fixed"]
    cascades = [p for p in policies if p["kind"] == "cascade"]
    assert len(fixed) == len(data["stages"]) and len(cascades) == (1 + 2 * 2) * 2
    assert [p["max_change"] for p in cascades[:1]] == [0.01] and cascades[1]["max_change"] is None
    assert fixed[-1]["name"].startswith("full ensemble") and fixed[-1]["compute_share"] == pytest.approx(1.0)
    assert all(sum(p["stop_reasons"].values()) == 40 for p in policies)
    budget = [p for p in cascades if p["budget_s"] is not None]
    assert budget and all(p["budget_s"] == pytest.approx(0.4 * data["full_cost_s_per_candidate"]) for p in budget)
    assert all(p["compute_share"] <= 0.4 + 1e-9 for p in budget)
    assert (tmp_path / "cascade.png").stat().st_size > 10_000 and data["plot"] == str(tmp_path / "cascade.png")


def test_cascade_table_and_cost_overrides(realistic: Path) -> None:
    result = _weaver("cascade", str(realistic), "--costs", "rm_large=9,judge_large=0.0001", "--confidence", "0.9",
                     "--margin", "off", "--budgets", "none")
    assert result.returncode == 0, result.stderr
    assert "judge_large 0.0001" in result.stdout and "rm_large 9" in result.stdout  # the override reorders stages
    assert "full" in result.stdout and "cascade" in result.stdout and "settled/budget/exhausted" in result.stdout


def test_cascade_usage_errors(realistic: Path, tmp_path: Path) -> None:
    bad = _weaver("cascade", str(realistic), "--costs", "nope=1")
    assert bad.returncode == 2 and "nope" in bad.stderr
    bad = _weaver("cascade", str(realistic), "--costs", "rm_large=fast")
    assert bad.returncode == 2 and "name=seconds" in bad.stderr
    bad = _weaver("cascade", str(realistic), "--budgets", "lots")
    assert bad.returncode == 2 and "--budgets" in bad.stderr
    plain = tmp_path / "plain.jsonl"  # the same scores without the simulator's truth file: no assumed costs
    plain.write_text(realistic.read_text())
    bad = _weaver("cascade", str(plain))
    assert bad.returncode == 2 and "no cost for" in bad.stderr and "--costs" in bad.stderr


def test_cascade_measures_costs_on_the_dev_set(dev_set_path: Path, tmp_path: Path) -> None:
    """The cheap verifiers, scored and timed on this machine (the judge would take minutes)."""
    result = _weaver("cascade", str(dev_set_path), "--verifiers", "answer_agreement,math_check", "--cache",
                     str(tmp_path / "scores.jsonl"), "--measure-costs", "8", "--budgets", "none", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["n_queries"] == 319 and data["costs_source"] == "measured on this machine (8 candidates)"
    assert set(data["costs"]) == {"answer_agreement", "math_check"} and all(c >= 0 for c in data["costs"].values())
    assert "cost answer_agreement:" in result.stderr
    full = [p for p in data["policies"] if p["name"].startswith("full ensemble")][0]
    assert 0.3 < full["accuracy"]["mean"] < 0.7
