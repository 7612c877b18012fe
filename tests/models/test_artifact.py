"""The fitted model is a versioned JSON artifact that scores without the fit data; labels never matter."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from models.aggregators import QueryScores, WeaverAggregator
from models.data import load_candidate_sets, write_candidate_sets
from models.simulate import simulate
from models.weaver import ARTIFACT_FORMAT, WeaverModel
from service.cli.common import build_queries


def test_round_trip_scores_identically(tmp_path: Path) -> None:
    sim = simulate(60, 20, 6, seed=3)
    matrices = [cs.score_matrix(sim.verifier_names) for cs in sim.sets]
    tasks = ["alpha" if i % 2 else "beta" for i in range(60)]
    model = WeaverModel.fit(matrices, sim.verifier_names, tasks=tasks)
    assert set(model.by_task) == {"alpha", "beta"}
    path = tmp_path / "model.json"
    model.save(path)
    data = json.loads(path.read_text())
    assert data["format"] == ARTIFACT_FORMAT
    for key in ("verifier_names", "normalization", "thresholds", "class_balance", "tpr", "fpr", "fit_report"):
        assert key in data
    loaded = WeaverModel.load(path)
    assert loaded.version == model.version
    for task in ("alpha", "beta", None):
        q = QueryScores(matrices[0], sim.verifier_names, task=task)
        assert np.array_equal(WeaverAggregator(loaded).rank(q).scores, WeaverAggregator(model).rank(q).scores)
    assert WeaverAggregator(loaded).rank(QueryScores(matrices[0], sim.verifier_names, task="alpha")).note \
        == "task model alpha"


def test_edited_artifact_is_rejected(tmp_path: Path) -> None:
    sim = simulate(20, 10, 4, seed=0)
    model = WeaverModel.fit([cs.score_matrix(sim.verifier_names) for cs in sim.sets], sim.verifier_names)
    data = model.to_json()
    data["class_balance"] = 0.9
    with pytest.raises(ValueError, match="version"):
        WeaverModel.from_json(data)
    with pytest.raises(ValueError, match="format"):
        WeaverModel.from_json({"format": "pickle"})


def test_no_code_path_reads_labels(tmp_path: Path) -> None:
    """Scrambling or deleting every label leaves the fitted model and every selection unchanged."""
    sim = simulate(80, 12, 8, seed=5)
    original = tmp_path / "a.jsonl"
    write_candidate_sets(original, sim.sets)
    rng = random.Random(0)
    scrambled_lines = []
    for line in original.read_text().splitlines():
        obj = json.loads(line)
        for cand in obj["candidates"]:
            choice = rng.choice([True, False, None])
            if choice is None:
                cand.pop("correct", None)
            else:
                cand["correct"] = choice
        scrambled_lines.append(json.dumps(obj))
    scrambled = tmp_path / "b.jsonl"
    scrambled.write_text("\n".join(scrambled_lines) + "\n")

    outputs = []
    for path in (original, scrambled):
        queries, _ = build_queries(load_candidate_sets(path), None, None)
        model = WeaverModel.fit([q.matrix for q in queries], queries[0].verifier_names)
        agg = WeaverAggregator(model)
        outputs.append((model.version, [agg.rank(q).order.tolist() for q in queries]))
    assert outputs[0] == outputs[1]
