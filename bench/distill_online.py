"""What online data from the CPU generator costs and adds, next to the dev pool it would replace.

    HF_HUB_OFFLINE=1 python bench/distill_online.py [--rounds 3] [--prompts-per-round 8] [--candidates 4] \
        [--max-tokens 192] [--train] [--plot docs/distill_online.png]

1. Teacher: Weaver fitted label-free on the dev set's ``--profile`` scores (non-test queries; the same
   split by query as ``bench/distill.py``).
2. Online data: ``--rounds`` rounds of fresh GSM8K-train prompts (never a dev prompt) go through a
   Worker — SmolLM2-135M generator + the ``--profile`` verifiers, the path ``weaver distill --mode
   online`` uses — and are scored by the teacher. Prints the wall time per prompt and the candidates'
   label and teacher statistics beside the dev pool's.
3. ``--train``: two context students from the same start and the same number of steps: ``online``
   (round r trains on round r's fresh queries only) and ``semi-online`` (the dev training queries, as
   many unseen pairs per epoch as a round holds). Both are evaluated on the dev test queries.
   The student never generates, so collecting the rounds first and then training on them round by
   round gives the same data as interleaving; only the wall clock differs (both are reported).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.distill import accuracy, argmax_picks, cached_scores, data_dir  # noqa: E402
from models.aggregators import WeaverAggregator  # noqa: E402
from models.data import load_candidate_sets  # noqa: E402
from models.distill.dataset import DistillQuery, build_distill_queries, split_by_query, teacher_posteriors  # noqa: E402
from models.distill.features import DEFAULT_CONTEXT_FEATURES  # noqa: E402
from models.distill.regimes import OnlineSource, SemiOnlineSource  # noqa: E402
from models.distill.report import plot_runs, write_log  # noqa: E402
from models.distill.student import CrossEncoderStudent  # noqa: E402
from models.distill.trainer import TrainConfig, TrainResult, predict_queries, train  # noqa: E402
from models.metrics import auroc  # noqa: E402
from models.weaver import WeaverModel  # noqa: E402
from workers.config import WorkerConfig  # noqa: E402
from workers.contract import SamplingParams  # noqa: E402
from workers.distill_online import OnlineCollector, read_prompts  # noqa: E402
from workers.entry import Worker  # noqa: E402


def pool_row(name: str, queries: list[DistillQuery]) -> str:
    labels = np.concatenate([q.labels for q in queries if q.labels is not None])
    teacher = np.concatenate([q.teacher for q in queries])
    any_correct = np.mean([q.labels is not None and np.nanmax(q.labels) == 1 for q in queries])
    return (f"{name:30s} {labels.size:10d} {100 * np.nanmean(labels):9.1f} {100 * any_correct:13.1f} "
            f"{teacher.mean():12.3f} {100 * (teacher >= 0.5).mean():14.1f} {auroc(teacher, labels):14.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts-per-round", type=int, default=8)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=192)
    parser.add_argument("--profile", default="cheap", help="teacher verifiers (a workers profile)")
    parser.add_argument("--scores-cache", type=Path, default=None)
    parser.add_argument("--train", action="store_true", help="also train online vs semi-online students")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--eval-every", type=int, default=4)
    parser.add_argument("--test-fraction", type=float, default=0.3)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log", type=Path, default=Path(".cache/bench-distill-online.json"))
    parser.add_argument("--plot", type=Path, default=Path(".cache/bench-distill-online.png"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)

    dev = load_candidate_sets(data_dir() / "gsm8k_gpt3_dev.jsonl")
    scored, note = cached_scores(args.scores_cache, dev, args.profile)
    split = split_by_query(build_distill_queries(dev, [np.zeros(len(cs.candidates)) for cs in dev]),
                           args.val_fraction, args.test_fraction, args.seed)
    test_ids = {q.id for q in split.test}
    teacher = WeaverModel.fit([q.matrix for q, cs in zip(scored, dev, strict=True) if cs.id not in test_ids],
                              scored[0].verifier_names)
    by_id = {q.id: q for q in build_distill_queries(dev, teacher_posteriors(teacher, scored))}
    train_q, val_q, test_q = ([by_id[q.id] for q in part] for part in (split.train, split.val, split.test))
    print(f"teacher: Weaver {teacher.version} on {note}; dev split {len(train_q)}/{len(val_q)}/{len(test_q)}")

    default = WorkerConfig.default()
    members = default.profiles[args.profile]
    config = WorkerConfig.model_validate({
        "generation": {**(default.generation or {}), "model": "smollm2-135m-instruct"},
        "verifiers": [s.model_dump() for s in default.verifiers if s.name in members],
        "profiles": {args.profile: members}, "cache": {"memory_size": 0},
    })
    prompts = read_prompts(data_dir() / "gsm8k_train.jsonl", exclude=[cs.prompt for cs in dev])
    collector = OnlineCollector(Worker.from_config(config), prompts, teacher, args.profile, args.candidates,
                                SamplingParams(temperature=0.8, max_tokens=args.max_tokens), seed=args.seed,
                                seed_jobs=False)
    start = time.perf_counter()
    collector.start()
    loaded = time.perf_counter() - start
    rounds: list[list[DistillQuery]] = []
    round_s: list[float] = []
    try:
        for r in range(args.rounds):
            start = time.perf_counter()
            rounds.append(collector.collect(r, args.prompts_per_round))
            round_s.append(time.perf_counter() - start)
            print(f"  round {r}: {len(rounds[-1])} prompts in {round_s[-1]:.1f} s", flush=True)
    finally:
        collector.close()
    fresh = [q for batch in rounds for q in batch]
    n_prompts = max(len(fresh), 1)
    print(f"\nworker start (generator + verifiers load): {loaded:.1f} s")
    print(f"{len(fresh)} prompts x {args.candidates} candidates ({args.max_tokens} new tokens max, T=0.8) in "
          f"{sum(round_s):.1f} s = {sum(round_s) / n_prompts:.1f} s per prompt; failed prompts: "
          f"{collector.stats['failed_prompts']}")
    print(f"\n{'pool':30s} {'candidates':>10s} {'correct %':>9s} {'any correct %':>13s} {'teacher mean':>12s} "
          f"{'teacher>=0.5 %':>14s} {'teacher AUROC':>14s}")
    print(pool_row("dev train (GPT-3 candidates)", train_q))
    print(pool_row("online (SmolLM2-135M)", fresh))

    extra: dict[str, Any] = {"rounds_s": round_s, "load_s": loaded, "stats": collector.stats, "args": vars(args)}
    if not args.train:
        write_log(args.log, {}, extra)
        return

    pairs_per_round = max(1, round(np.mean([sum(len(q.candidates) for q in b) for b in rounds])))
    cfg = TrainConfig(epochs=args.rounds, batch_size=args.batch_size, lr=args.lr, eval_every=args.eval_every,
                      patience=0, stop_on_hacking=False, seed=args.seed)
    sources = {"online": OnlineSource(lambda r: rounds[r], args.rounds),
               "semi-online": SemiOnlineSource(train_q, pairs_per_epoch=pairs_per_round)}
    results: dict[str, TrainResult] = {}
    weaver = WeaverAggregator(teacher)
    scores_by_id = {cs.id: q for q, cs in zip(scored, dev, strict=True)}
    weaver_acc = accuracy(test_q, [weaver.rank(scores_by_id[q.id]).selected for q in test_q])
    rows = []
    for name, source in sources.items():
        student = CrossEncoderStudent.from_base(None, max_length=args.max_length, seed=args.seed,
                                                context_features=DEFAULT_CONTEXT_FEATURES)
        start = time.perf_counter()
        results[name] = result = train(student, source, val_q, cfg)
        seconds = time.perf_counter() - start
        probs = predict_queries(student, test_q)
        acc = accuracy(test_q, argmax_picks(probs))
        labels = np.concatenate([q.labels for q in test_q if q.labels is not None])
        rows.append((name, result.steps, result.source["distinct_pairs"], seconds, acc, acc / weaver_acc,
                     auroc(np.concatenate(probs), labels), result.best_step,
                     [f"{f.kind}@{f.step}" for f in result.detector.flags]))
    print(f"\nContext students, equal steps; evaluated on the {len(test_q)} dev test queries "
          f"(full Weaver {100 * weaver_acc:.1f} %)")
    print(f"{'regime':12s} {'steps':>5s} {'pairs':>6s} {'train s':>8s} {'sel. acc':>9s} {'retention':>9s} "
          f"{'AUROC':>6s} {'restored':>8s}  flags")
    for name, steps, pairs, seconds, acc, ret, auc, best, flags in rows:
        print(f"{name:12s} {steps:5d} {pairs:6.0f} {seconds:8.0f} {100 * acc:8.1f}% {ret:9.3f} {auc:6.3f} "
              f"{best:8d}  {', '.join(flags) or '-'}")
    extra["rows"] = [dict(zip(("regime", "steps", "distinct_pairs", "train_s", "selection", "retention", "auroc",
                                "best_step", "flags"), r, strict=True)) for r in rows]
    write_log(args.log, results, extra)
    plot_runs(args.plot, results, title="GSM8K dev held-out: online (SmolLM2 candidates) vs semi-online (GPT-3)")
    print(f"\nwrote {args.log} and {args.plot}")


if __name__ == "__main__":
    main()
