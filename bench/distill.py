"""Distilled cross-encoder vs full Weaver on the GSM8K dev set (train on part, evaluate on held-out queries).

    HF_HUB_OFFLINE=1 python bench/distill.py [--verifiers cheap] [--epochs 4] [--plot docs/distill_curves.png]

1. Score the dev candidates with the verifiers (``--verifiers``: a workers profile; without the
   workers package, answer agreement), split BY QUERY into train / val / test, fit Weaver label-free
   on the non-test queries: that is the teacher.
2. Train MiniLM-L6 cross-encoders from the same start under equal step budgets: ``offline`` (a fixed
   pool of 1/E of the training queries, replayed E epochs) and ``semi-online`` (all training queries,
   each epoch drawing as many pairs as the offline pool holds, unseen first).
3. On the test queries: selection accuracy of each student, of the cascade (threshold chosen on val),
   and of full Weaver; retention = student / Weaver. Verification wall time per request (one query,
   all its candidates) for the cross-encoder, the cascade and the full ensemble, measured in this run.
Prints a table; writes the monitor curves (proxy and golden) of both regimes to one PNG.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from models.aggregators import MajorityVoteAggregator, QueryScores, WeaverAggregator  # noqa: E402
from models.data import CandidateSet, load_candidate_sets  # noqa: E402
from models.distill.cascade import CascadeRule  # noqa: E402
from models.distill.dataset import DistillQuery, TeacherSplit, teacher_and_split  # noqa: E402
from models.distill.features import DEFAULT_CONTEXT_FEATURES  # noqa: E402
from models.distill.regimes import OfflineSource, SemiOnlineSource  # noqa: E402
from models.distill.report import plot_runs, write_log  # noqa: E402
from models.distill.student import CrossEncoderStudent  # noqa: E402
from models.distill.trainer import TrainConfig, TrainResult, predict_queries, train  # noqa: E402
from models.metrics import auroc  # noqa: E402
from models.weaver import WeaverModel  # noqa: E402


def data_dir() -> Path:
    env = os.environ.get("WEAVER_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def worker_config(profiles: dict[str, list[str]], checkpoint: Path | None, margin: float) -> Any:
    """The default CPU worker's verifiers (no generator, no score cache), plus the cross-encoder when given."""
    from workers.config import WorkerConfig

    base = WorkerConfig.default()
    wanted = {n for members in profiles.values() for n in members}
    specs = [spec.model_dump() for spec in base.verifiers if spec.name in wanted]
    if checkpoint is not None:
        specs.append({"name": "distilled", "type": "cross_encoder", "params": {"model": str(checkpoint)},
                      "max_wait_ms": 0})
    return WorkerConfig.model_validate({
        "name": "bench-distill", "verifiers": specs, "profiles": profiles,
        "aggregation": {"cascade_min_margin": margin}, "cache": {"memory_size": 0},
    })


async def score_with_worker(sets: list[CandidateSet], profile: str) -> tuple[list[QueryScores], str]:
    """Raw verifier scores for every candidate through the Worker entry (the serving path)."""
    from models.answers import extract_answer
    from workers.config import WorkerConfig
    from workers.contract import Job
    from workers.entry import Worker

    profiles = WorkerConfig.default().profiles
    members = profiles[profile] if profile in profiles else [n.strip() for n in profile.split(",") if n.strip()]
    worker = Worker.from_config(worker_config({profile: members}, None, 0.0))
    await worker.start()
    try:
        errors = worker.readiness_errors()
        if errors:
            raise RuntimeError(f"verifiers failed to load: {errors}")
        results = await asyncio.gather(*(worker.run(Job(
            kind="rerank", prompt=cs.prompt, candidates=[c.text for c in cs.candidates], profile=profile,
            aggregator="mean")) for cs in sets))
    finally:
        await worker.close()
    queries = []
    for cs, result in zip(sets, results, strict=True):
        if result.status != "ok":
            raise RuntimeError(f"{cs.id}: {result.error}")
        matrix = np.array([[np.nan if v is None else v for v in row] for row in result.scores], dtype=float)
        queries.append(QueryScores(matrix, tuple(result.verifier_names),
                                   tuple(extract_answer(c.text) for c in cs.candidates), cs.task))
    label = f"workers profile {profile!r} ({', '.join(members)})" if profile in profiles else ", ".join(members)
    return queries, label


async def time_requests(sets: list[CandidateSet], profiles: dict[str, list[str]], checkpoint: Path, margin: float,
                        weaver: WeaverModel) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Per-request verification + aggregation wall time through one Worker, paths interleaved per query."""
    from workers.contract import Job
    from workers.entry import Worker

    worker = Worker.from_config(worker_config(profiles, checkpoint, margin))
    await worker.start()
    times: dict[str, list[float]] = {}
    notes: dict[str, str] = {}
    try:
        errors = worker.readiness_errors()
        usable = {p: m for p, m in profiles.items() if not any(f"verifier:{n}" in errors for n in m)}
        for profile in set(profiles) - set(usable):
            notes[f"ensemble {profile}"] = f"skipped: {errors}"
        worker.set_weaver_model(weaver)
        jobs = [("cross-encoder", "cross_encoder", None)]
        for profile in usable:
            jobs += [(f"ensemble {profile} + Weaver", "weaver", profile), (f"cascade -> {profile}", "cascade", profile)]

        def job(cs: CandidateSet, aggregator: str, profile: str | None) -> Job:
            return Job(kind="rerank", prompt=cs.prompt, candidates=[c.text for c in cs.candidates],
                       profile=profile, aggregator=aggregator)  # type: ignore[arg-type]

        for _label, aggregator, profile in jobs:  # warm-up: first batch of every verifier
            await worker.run(job(sets[0], aggregator, profile))
        for cs in sets:
            for label, aggregator, profile in jobs:
                result = await worker.run(job(cs, aggregator, profile))
                if result.status != "ok":
                    raise RuntimeError(f"{label}: {result.error}")
                times.setdefault(label, []).append(result.timings["verification"] + result.timings["aggregation"])
                if aggregator == "cascade":
                    times.setdefault(f"{label} fallbacks", []).append(
                        float(result.aggregator_note.startswith("cascade: full")))
    finally:
        await worker.close()
    return times, notes


def cached_scores(path: Path | None, sets: list[CandidateSet], profile: str,
                  verifier_cache: Path | None = None) -> tuple[list[QueryScores], str]:
    """Teacher scores through the Worker, reused from ``path`` when it holds the same profile and sets.

    Scoring the dev set with the ``cpu-default`` judge takes many minutes on a CPU; the cache lets
    training-side changes be re-benchmarked without paying for it again. ``verifier_cache``: score through
    ``workers.offline`` (the batchers ``weaver eval --verifiers`` uses) with that JSON Lines score cache
    instead, so one scoring run serves both commands.
    """
    import json

    from models.answers import extract_answer

    key = {"profile": profile, "ids": [cs.id for cs in sets], "n": [len(cs.candidates) for cs in sets]}
    if path is not None and path.exists():
        saved = json.loads(path.read_text())
        if saved["key"] == key:
            queries = [QueryScores(np.array(m, dtype=float), tuple(saved["names"]),
                                   tuple(extract_answer(c.text) for c in cs.candidates), cs.task)
                       for m, cs in zip(saved["matrices"], sets, strict=True)]
            return queries, saved["note"] + f" (cached in {path})"
    if verifier_cache is not None:
        from service.cli.common import build_queries  # what `weaver eval --verifiers` scores with

        queries, note = build_queries(sets, profile, verifier_cache)
    else:
        queries, note = asyncio.run(score_with_worker(sets, profile))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        matrices = [[[None if np.isnan(v) else float(v) for v in row] for row in q.matrix] for q in queries]
        path.write_text(json.dumps({"key": key, "names": list(queries[0].verifier_names), "note": note,
                                    "matrices": matrices}))
    return queries, note


def accuracy(queries: list[DistillQuery], picks: list[int]) -> float:
    return float(np.mean([q.labels is not None and q.labels[i] == 1 for q, i in zip(queries, picks, strict=True)]))


def argmax_picks(scores: list[np.ndarray]) -> list[int]:
    return [int(np.argmax(s)) for s in scores]


def cascade_picks(student: list[np.ndarray], weaver: list[int], rule: CascadeRule) -> tuple[list[int], float]:
    """The cross-encoder's pick, or Weaver's (with its tie-break) where the rule falls back."""
    out, fallbacks = [], 0
    for s, w in zip(student, weaver, strict=True):
        fallback, _ = rule.decide(s)
        fallbacks += fallback
        out.append(w if fallback else int(np.argmax(s)))
    return out, fallbacks / max(len(student), 1)


def choose_rule(student: list[np.ndarray], weaver: list[int], queries: list[DistillQuery],
                target: float) -> CascadeRule:
    """The cheapest margin threshold whose val selection reaches ``target`` x Weaver's (labels of val only)."""
    weaver_acc = accuracy(queries, weaver)
    for margin in (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.01):
        rule = CascadeRule(min_margin=margin, min_confidence=0.0)
        picks, _ = cascade_picks(student, weaver, rule)
        if accuracy(queries, picks) >= target * weaver_acc:
            return rule
    return CascadeRule(min_margin=1.01, min_confidence=0.0)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--profile", default="cheap",
                        help="teacher verifiers: a workers profile, or verifier names separated by commas")
    parser.add_argument("--scores-cache", type=Path, default=None,
                        help="JSON file keeping the teacher's verifier scores between runs")
    parser.add_argument("--verifier-cache", type=Path, default=None,
                        help="score through workers.offline with this JSON Lines score cache (the one `weaver eval "
                             "--verifiers PROFILE` fills, e.g. .cache/scores-gsm8k_gpt3_dev.jsonl)")
    parser.add_argument("--students", default="pairwise,context",
                        help="student kinds: pairwise (query, candidate) only; context adds the sibling features")
    parser.add_argument("--regimes", default="offline,semi-online")
    parser.add_argument("--context-lr", type=float, default=TrainConfig.context_lr)
    parser.add_argument("--timing-profiles", default="cheap,cpu-default",
                        help="full ensembles to time against (workers profiles, comma-separated)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a loaded 2-core box)")
    parser.add_argument("--checkpoint", type=Path, default=Path(".cache/bench-distill-ckpt"))
    parser.add_argument("--base", default=None)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--eval-every", type=int, default=4)
    parser.add_argument("--test-fraction", type=float, default=0.3)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--retention-target", type=float, default=0.95)
    parser.add_argument("--timing-queries", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=None, help="cap optimizer steps per regime (smoke runs)")
    parser.add_argument("--log", type=Path, default=Path(".cache/bench-distill.json"))
    parser.add_argument("--plot", type=Path, default=Path(".cache/bench-distill.png"))
    return parser.parse_args()


def train_students(args: argparse.Namespace, split: TeacherSplit) -> tuple[dict[str, TrainResult],
                                                                            dict[str, CrossEncoderStudent]]:
    """Every (student kind, regime) from the same start under equal step budgets."""
    train_q, val_q = split.train, split.val
    rng = np.random.default_rng(args.seed)
    offline_pool = [train_q[i] for i in rng.permutation(len(train_q))[: max(1, len(train_q) // args.epochs)]]
    pool_pairs = sum(len(q.candidates) for q in offline_pool)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, eval_every=args.eval_every,
                         patience=0, stop_on_hacking=False, seed=args.seed, max_steps=args.max_steps,
                         context_lr=args.context_lr)
    sources = {"offline": lambda: OfflineSource(offline_pool),
               "semi-online": lambda: SemiOnlineSource(train_q, pairs_per_epoch=pool_pairs)}
    kinds = {"pairwise": (), "context": DEFAULT_CONTEXT_FEATURES}
    runs = [(f"{kind}, {regime}", kinds[kind], sources[regime]())
            for kind in args.students.split(",") for regime in args.regimes.split(",")]
    results: dict[str, TrainResult] = {}
    students: dict[str, CrossEncoderStudent] = {}
    for name, features, source in runs:
        student = CrossEncoderStudent.from_base(args.base, max_length=args.max_length, seed=args.seed,
                                                context_features=features)
        start = time.perf_counter()
        results[name] = train(student, source, val_q, config, on_eval=lambda p, _r, n=name, t0=start: print(
            f"  {n} step {p.step}: proxy BCE {p.proxy_bce:.4f} top1 {p.proxy_top1:.2f} | golden AUROC "
            f"{p.golden_auroc:.3f} BCE {p.golden_bce:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True))
        students[name] = student
        r = results[name]
        print(f"{name}: {r.steps} steps in {time.perf_counter() - start:.0f} s, exposure {r.source}, "
              f"restored step {r.best_step}; flags: {[f.kind + '@' + str(f.step) for f in r.detector.flags]}")
    return results, students


Row = tuple[str, float, float | None, float | None, float | None]  # method, selection, retention, fallback, AUROC


def encoder_only_predictions(student: CrossEncoderStudent, queries: list[DistillQuery]) -> list[np.ndarray]:
    """What the encoder alone contributes: the same model with its context head switched off."""
    import torch

    assert student.context_head is not None
    saved = student.state()
    with torch.no_grad():
        student.context_head.weight.zero_()
        student.context_head.bias.zero_()
    try:
        return predict_queries(student, queries)
    finally:
        student.restore(saved)


def accuracy_rows(args: argparse.Namespace, split: TeacherSplit, scores_by_id: dict[str, QueryScores],
                  students: dict[str, CrossEncoderStudent]) -> tuple[list[Row], dict[str, CascadeRule]]:
    """Selection accuracy on the held-out test queries: teacher, majority vote, each student and its cascade."""
    weaver, val_q, test_q = split.teacher, split.val, split.test
    weaver_agg, majority = WeaverAggregator(weaver), MajorityVoteAggregator()
    weaver_rankings = [weaver_agg.rank(scores_by_id[q.id]) for q in test_q]
    weaver_test = [r.selected for r in weaver_rankings]
    weaver_val = [weaver_agg.rank(scores_by_id[q.id]).selected for q in val_q]
    weaver_acc = accuracy(test_q, weaver_test)
    majority_acc = accuracy(test_q, [majority.rank(scores_by_id[q.id]).selected for q in test_q])
    labels = np.concatenate([q.labels if q.labels is not None else np.full(len(q.candidates), np.nan)
                             for q in test_q])

    def pooled_auroc(scores: list[np.ndarray]) -> float:
        return auroc(np.concatenate(scores), labels)

    weaver_scores = [np.asarray(r.scores, dtype=float) for r in weaver_rankings]
    agreement = [q.context_for(["sibling_agreement"])[:, 0] for q in test_q]
    rows: list[Row] = [("full Weaver (teacher)", weaver_acc, 1.0, None, pooled_auroc(weaver_scores)),
                       ("majority vote (sibling agreement)", majority_acc, None, None, pooled_auroc(agreement))]
    rules: dict[str, CascadeRule] = {}
    for name, student in students.items():
        probs = predict_queries(student, test_q)
        acc = accuracy(test_q, argmax_picks(probs))
        rows.append((f"cross-encoder ({name})", acc, acc / weaver_acc, 0.0, pooled_auroc(probs)))
        if student.context_head is not None:
            print(f"{name}: context head {student.context_weights()}")
            encoder_only = encoder_only_predictions(student, test_q)
            eacc = accuracy(test_q, argmax_picks(encoder_only))
            rows.append(("  its encoder part alone (context head off)", eacc, eacc / weaver_acc, 0.0,
                         pooled_auroc(encoder_only)))
        rule = choose_rule(predict_queries(student, val_q), weaver_val, val_q, args.retention_target)
        rules[name] = rule
        picks, rate = cascade_picks(probs, weaver_test, rule)
        cacc = accuracy(test_q, picks)
        rows.append((f"cascade ({name}, margin<{rule.min_margin:g})", cacc, cacc / weaver_acc, rate, None))
    return rows, rules


def print_accuracy(rows: list[Row], n_test: int, source_note: str) -> None:
    print()
    print(f"Selection accuracy on {n_test} held-out test queries (teacher: Weaver on {source_note})")
    print(f"{'method':48s} {'sel. acc':>9s} {'retention':>9s} {'fallback':>9s} {'AUROC':>6s}")
    for label, acc, ret, fb, auc in rows:
        print(f"{label:48s} {100 * acc:8.1f}% {'-' if ret is None else f'{ret:.3f}':>9s} "
              f"{'-' if fb is None else f'{100 * fb:.0f}%':>9s} {'-' if auc is None else f'{auc:.3f}':>6s}")


def print_timing(times: dict[str, list[float]], notes: dict[str, str], profiles: dict[str, list[str]],
                 header: str) -> None:
    med = statistics.median
    print()
    print(header)
    print(f"{'path':34s} {'median ms':>10s} {'mean ms':>9s} {'CE/ensemble (median)':>21s} {'fallbacks':>9s}")
    for label, values in times.items():
        if label.endswith("fallbacks"):
            continue
        profile = label.split(" ")[1] if label.startswith("ensemble") else label.split("-> ")[-1]
        reference = times.get(f"ensemble {profile} + Weaver")
        ratio = "" if label.startswith("ensemble") or reference is None else (
            f"{med(values) / med(reference):.3f}" if label.startswith("cascade") else "")
        fb = times.get(f"{label} fallbacks")
        print(f"{label:34s} {1000 * med(values):10.2f} {1000 * statistics.mean(values):9.2f} {ratio:>21s} "
              f"{'' if fb is None else f'{100 * statistics.mean(fb):.0f}%':>9s}")
    ce = times["cross-encoder"]
    for profile in profiles:
        reference = times.get(f"ensemble {profile} + Weaver")
        if reference:
            print(f"cross-encoder / ensemble {profile}: {med(ce) / med(reference):.3f} (median), "
                  f"{statistics.mean(ce) / statistics.mean(reference):.3f} (mean)")
    for key, note in notes.items():
        print(f"{key}: {note}")


def main() -> None:
    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)

    sets = load_candidate_sets(args.data or data_dir() / "gsm8k_gpt3_dev.jsonl")
    t0 = time.perf_counter()
    queries, source_note = cached_scores(args.scores_cache, sets, args.profile, args.verifier_cache)
    print(f"scores: {source_note} ({time.perf_counter() - t0:.1f} s)")
    split = teacher_and_split(sets, queries, args.val_fraction, args.test_fraction, args.seed)
    weaver = split.teacher
    print(f"teacher: Weaver {weaver.version}, {weaver.report.n_kept}/{weaver.report.n_verifiers} verifiers kept; "
          f"split by query {len(split.train)}/{len(split.val)}/{len(split.test)} train/val/test")

    results, students = train_students(args, split)
    write_log(args.log, results, {"stage": "trained"})  # keep the curves even if a later stage fails
    scores_by_id = {cs.id: q for q, cs in zip(queries, sets, strict=True)}
    rows, rules = accuracy_rows(args, split, scores_by_id, students)

    # wall time per request, measured now through one Worker; the served student is chosen on validation
    # (golden AUROC of its restored checkpoint), never on test
    best = max(students, key=lambda n: results[n].best.golden_auroc or 0.0)
    students[best].save(args.checkpoint)
    from workers.config import WorkerConfig

    defaults = WorkerConfig.default().profiles
    profiles = {p: defaults[p] for p in args.timing_profiles.split(",") if p}
    test_ids = {q.id for q in split.test}
    timed = [s for s in sets if s.id in test_ids][: args.timing_queries]
    times, timing_notes = asyncio.run(time_requests(timed, profiles, args.checkpoint, rules[best].min_margin, weaver))

    print_accuracy(rows, len(split.test), source_note)
    print_timing(times, timing_notes, profiles,
                 f"Verification + aggregation wall time per request through the Worker entry ({len(timed)} test "
                 f"queries x {len(timed[0].candidates)} candidates, sequential, no score cache; cross-encoder = "
                 f"{best}, torch threads {args.threads})")
    extra = {"rows": [dict(zip(("method", "selection", "retention", "fallback", "auroc"), r, strict=True))
                      for r in rows],
             "timing_s": times, "timing_notes": timing_notes, "cascade_margin": rules[best].min_margin,
             "split": [len(split.train), len(split.val), len(split.test)], "scores": source_note,
             "args": vars(args)}
    write_log(args.log, results, extra)
    plot_runs(args.plot, results, title=f"GSM8K dev: offline vs semi-online, equal steps (teacher: Weaver on "
                                        f"{', '.join(queries[0].verifier_names)})")
    print(f"\nwrote {args.log} and {args.plot}")


if __name__ == "__main__":
    main()
