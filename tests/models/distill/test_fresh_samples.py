"""Fresh-sample distillation data: new prompts through the real generator (SmolLM2) and verifiers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.distill.regimes import FreshSampleSource
from models.weaver import WeaverModel
from workers.config import WorkerConfig
from workers.contract import SamplingParams
from workers.distill_fresh import FreshSampleCollector, read_prompts


def test_read_prompts_parses_gsm8k_references_and_excludes_held_out(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [{"question": "What is 2+2?", "answer": "2+2=4\n#### 4"},
            {"question": "What is 3+3?", "answer": "#### 6"},
            {"prompt": "Held out?", "reference": "1"}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    prompts = read_prompts(path, exclude=["held OUT?"])
    assert [(p.prompt, p.reference) for p in prompts] == [("What is 2+2?", "4"), ("What is 3+3?", "6")]


@pytest.mark.slow
def test_collector_generates_scores_and_never_reuses_a_prompt(tmp_path):
    default = WorkerConfig.default()
    config = WorkerConfig.model_validate({
        # the generation backend names its packaged model by alias (default_config.yaml uses a pkg:// path)
        "generation": {**default.generation, "model": "smollm2-135m-instruct", "max_batch_size": 4},
        "verifiers": [s.model_dump() for s in default.verifiers if s.name in ("answer_agreement", "math_check")],
        "profiles": {"cheap": ["answer_agreement", "math_check"]}, "cache": {"memory_size": 0},
    })
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps({"question": f"Tom has {i} apples and buys 2 more. How many now?",
                                          "answer": f"#### {i + 2}"}) for i in range(3)))
    rng = np.random.default_rng(0)
    teacher = WeaverModel.fit([np.column_stack([rng.choice([0.5, 1.0], 2), rng.random(2)]) for _ in range(30)],
                              ["answer_agreement", "math_check"])
    from workers.entry import Worker

    collector = FreshSampleCollector(Worker.from_config(config), read_prompts(path), teacher, "cheap", candidates=2,
                                sampling=SamplingParams(temperature=0.8, max_tokens=32))
    collector.start()
    try:
        source = FreshSampleSource(lambda r: collector.collect(r, 2), rounds=2)
        first = source.epoch(0, rng)
        second = source.epoch(1, rng)
    finally:
        collector.close()
    assert len(first) == 4 and len(second) == 2  # 3 prompts: 2 in round 0, the last one in round 1
    assert not {p.prompt for p in first} & {p.prompt for p in second}
    for pair in first + second:
        assert 0.0 <= pair.teacher <= 1.0 and pair.label in (0.0, 1.0)
    assert collector.stats["prompts"] == 3 and collector.stats["generation_s"] > 0
