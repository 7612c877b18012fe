"""What online data from the CPU generator costs and looks like, next to the dev pool it would replace.

    HF_HUB_OFFLINE=1 python bench/distill_online.py [--prompts 8] [--candidates 4] [--max-tokens 192]

Fresh GSM8K-train prompts go through a Worker (SmolLM2-135M generator + the ``cheap`` verifiers,
the path ``weaver distill --mode online`` uses) and are scored by Weaver fitted label-free on the
dev set's cheap scores. Prints the wall time per prompt and the candidates' label and teacher
statistics beside the dev pool's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.distill import data_dir, score_with_worker  # noqa: E402
from models.data import load_candidate_sets  # noqa: E402
from models.distill.dataset import teacher_posteriors  # noqa: E402
from models.weaver import WeaverModel  # noqa: E402
from workers.config import WorkerConfig  # noqa: E402
from workers.contract import SamplingParams  # noqa: E402
from workers.distill_online import OnlineCollector, read_prompts  # noqa: E402
from workers.entry import Worker  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=192)
    parser.add_argument("--profile", default="cheap")
    args = parser.parse_args()

    dev = load_candidate_sets(data_dir() / "gsm8k_gpt3_dev.jsonl")
    queries, _ = asyncio.run(score_with_worker(dev, args.profile))
    teacher = WeaverModel.fit([q.matrix for q in queries], queries[0].verifier_names)
    dev_teacher = np.concatenate(teacher_posteriors(teacher, queries))
    dev_labels = np.concatenate([cs.labels for cs in dev if cs.labels is not None])

    default = WorkerConfig.default()
    members = default.profiles[args.profile]
    config = WorkerConfig.model_validate({
        "generation": {**(default.generation or {}), "model": "smollm2-135m-instruct"},
        "verifiers": [s.model_dump() for s in default.verifiers if s.name in members],
        "profiles": {args.profile: members}, "cache": {"memory_size": 0},
    })
    prompts = read_prompts(data_dir() / "gsm8k_train.jsonl", exclude=[cs.prompt for cs in dev])
    collector = OnlineCollector(Worker.from_config(config), prompts, teacher, args.profile, args.candidates,
                                SamplingParams(temperature=0.8, max_tokens=args.max_tokens))
    start = time.perf_counter()
    collector.start()
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    fresh = collector.collect(0, args.prompts)
    wall = time.perf_counter() - start
    collector.close()
    labels = np.concatenate([q.labels for q in fresh if q.labels is not None])
    posts = np.concatenate([q.teacher for q in fresh])
    any_correct = np.mean([q.labels is not None and q.labels.max() == 1 for q in fresh])
    print(f"worker start (generator + verifiers load): {loaded:.1f} s")
    print(f"{len(fresh)} prompts x {args.candidates} candidates in {wall:.1f} s = {wall / max(len(fresh), 1):.1f} s "
          f"per prompt (generation {collector.stats['generation_s']:.1f} s, verification "
          f"{collector.stats['verification_s']:.2f} s summed over concurrent jobs)")
    print(f"{'pool':28s} {'candidates':>10s} {'correct %':>9s} {'any correct %':>13s} {'teacher mean':>12s} "
          f"{'teacher>=0.5 %':>14s}")
    print(f"{'dev (GPT-3 candidates)':28s} {dev_labels.size:10d} {100 * dev_labels.mean():9.1f} "
          f"{100 * np.mean([cs.labels.max() == 1 for cs in dev if cs.labels is not None]):13.1f} "
          f"{dev_teacher.mean():12.3f} {100 * (dev_teacher >= 0.5).mean():14.1f}")
    print(f"{'online (SmolLM2-135M, T=0.8)':28s} {labels.size:10d} {100 * labels.mean():9.1f} "
          f"{100 * any_correct:13.1f} {posts.mean():12.3f} {100 * (posts >= 0.5).mean():14.1f}")


if __name__ == "__main__":
    main()
