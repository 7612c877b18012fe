"""The worker serves a label model v2 artifact through the ordinary ``weaver`` aggregator."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.weaver_v2 import WeaverV2Model
from tests.workers.test_entry import CANDIDATES, cheap_config, rerank
from workers.config import AggregationConfig
from workers.entry import Worker


def fitted_v2(seed: int = 0) -> WeaverV2Model:
    """Label-free fit on synthetic answer groups scored by the two cheap verifiers."""
    rng = np.random.default_rng(seed)
    matrices, answers = [], []
    for _ in range(120):
        truth = rng.random(4) < 0.5  # right candidates share the answer 7; wrong ones scatter
        labels = ["7" if t else str(rng.choice(["1", "2", "3", "4", "5", "6"])) for t in truth]
        shares = [(labels.count(a) - 1) / 3 for a in labels]
        math_ok = np.where(truth, rng.choice([1.0, 0.75], 4, p=[0.9, 0.1]), rng.choice([1.0, 0.5], 4, p=[0.4, 0.6]))
        matrices.append(np.column_stack([shares, math_ok]))
        answers.append(tuple(labels))
    return WeaverV2Model.fit(matrices, ("answer_agreement", "math_check"), answers)


async def test_v2_artifact_from_config_pools_answer_groups(tmp_path: Path) -> None:
    model = fitted_v2()
    path = tmp_path / "v2.json"
    model.save(path)
    worker = Worker.from_config(cheap_config(aggregation=AggregationConfig(weaver_model=str(path))))
    await worker.start()
    try:
        result = await worker.run(rerank())
        assert result.status == "ok", result.error
        assert result.aggregator == "weaver" and result.aggregator_version == model.version
        assert "label model v2" in result.aggregator_note
        answers = [c.answer for c in result.candidates]
        assert answers[result.selected_index] == "18"  # the two candidates agreeing on 18 (GOOD, ALSO_GOOD)
        same = [c.score for c in result.candidates if c.answer == "18"]
        assert len(same) == 2 and same[0] == same[1]  # one answer group, one posterior
        assert sum(c.score for c in result.candidates if c.answer != "18") + same[0] <= 1 + 1e-9
        assert all(d.estimated_accuracy is not None for d in result.diagnostics)
        assert len(result.candidates) == len(CANDIDATES)
    finally:
        await worker.close()
