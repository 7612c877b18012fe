"""``weaver distill``: train a cross-encoder on Weaver's posteriors, monitored for teacher hacking."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

MODES = ("offline", "semi-online", "online")
OFFLINE_PASS_WARNING = 3
OFFLINE_EPOCH_CAP = 5


def distill(
    file: Annotated[Path, typer.Argument(help="Candidate sets (JSON Lines): the training pool and held-out queries")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Checkpoint folder to write")] = Path("distilled"),
    mode: Annotated[str, typer.Option(help="offline | semi-online | online")] = "offline",
    verifiers: Annotated[str | None, typer.Option(
        help="Verifier profile or names to score candidates (default: scores in the file, else answer agreement)")
    ] = None,
    cache: Annotated[Path | None, typer.Option(help="Score cache for computed verifiers")] = None,
    teacher: Annotated[Path | None, typer.Option(
        help="Fitted Weaver artifact (default: fit label-free on the training queries)")] = None,
    pool: Annotated[Path | None, typer.Option(
        help="semi-online: a larger pre-scored pool to draw unseen pairs from (default: the training split)")] = None,
    pairs_per_epoch: Annotated[int | None, typer.Option(
        help="semi-online: pairs drawn per epoch (default: a quarter of the pool)")] = None,
    prompts: Annotated[Path | None, typer.Option(help="online: prompts file, e.g. gsm8k_train.jsonl")] = None,
    worker_config: Annotated[Path | None, typer.Option(help="online: worker YAML (generator and verifiers)")] = None,
    rounds: Annotated[int, typer.Option(help="online: rounds of fresh data")] = 3,
    prompts_per_round: Annotated[int, typer.Option(help="online: new prompts per round")] = 16,
    candidates: Annotated[int, typer.Option(help="online: candidates sampled per prompt")] = 4,
    base: Annotated[str | None, typer.Option(help="HF encoder name or path (default: all-MiniLM-L6-v2)")] = None,
    max_length: Annotated[int, typer.Option(help="Tokens per (query, candidate) pair")] = 256,
    context_features: Annotated[str, typer.Option(
        help="Sibling features added to the encoder's logit by a learned linear head (comma-separated: "
             "sibling_agreement, no_answer), or 'none' for a pure pairwise cross-encoder")
    ] = "sibling_agreement,no_answer",
    context_lr: Annotated[float, typer.Option(help="Learning rate of the context head's weights")] = 0.05,
    epochs: Annotated[int, typer.Option(help="Epochs (offline/semi-online) or passes per online round")] = 3,
    batch_size: int = 16,
    lr: float = 5e-5,
    eval_every: Annotated[int, typer.Option(help="Optimizer steps between held-out evaluations")] = 10,
    patience: Annotated[int, typer.Option(help="Evaluations without improvement before stopping (0 = off)")] = 4,
    val_fraction: Annotated[float, typer.Option(help="Share of queries held out for monitoring")] = 0.1,
    test_fraction: Annotated[float, typer.Option(help="Share of queries kept aside, never used in training")] = 0.0,
    label_weight: Annotated[float, typer.Option(help="Mix labels into targets where known (0 = pure teacher)")] = 0.0,
    stop_on_deviation: Annotated[bool, typer.Option(help="Also stop on a proxy power-law deviation")] = False,
    seed: int = 0,
    force: Annotated[bool, typer.Option(help=f"Allow more than {OFFLINE_EPOCH_CAP} offline epochs")] = False,
    plot: Annotated[bool, typer.Option("--plot", help="Write monitor.png beside the checkpoint")] = False,
) -> None:
    """Distill Weaver into a cross-encoder (query, candidate[, sibling features]) -> P(correct).

    Splits by query, never by pair.
    """
    from models.distill.dataset import build_distill_queries, split_by_query, teacher_posteriors
    from models.distill.features import check_feature_names
    from models.distill.regimes import OfflineSource, OnlineSource, SemiOnlineSource
    from models.distill.report import plot_runs, write_log
    from models.distill.student import CrossEncoderStudent
    from models.distill.trainer import TrainConfig, train
    from models.weaver import WeaverModel
    from service.cli import _fail, _load_sets, build_queries

    if mode not in MODES:
        _fail(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    try:
        features = () if context_features.strip().lower() in ("", "none") else check_feature_names(
            [n.strip() for n in context_features.split(",") if n.strip()])
    except ValueError as exc:
        _fail(f"--context-features: {exc}")
        raise
    if mode == "offline" and epochs > OFFLINE_EPOCH_CAP and not force:
        _fail(f"{epochs} offline epochs replay every pair {epochs} times, the regime where teacher hacking "
              f"appears; use at most {OFFLINE_EPOCH_CAP}, --mode semi-online, or --force")
    if mode == "offline" and epochs > OFFLINE_PASS_WARNING:
        typer.echo(f"warning: {epochs} passes over the same pairs (> {OFFLINE_PASS_WARNING}); watch the detector",
                   err=True)
    sets = _load_sets(file)
    queries, source_note = build_queries(sets, verifiers, cache)
    typer.echo(f"scores: {source_note}")
    placeholder = [[0.5] * len(cs.candidates) for cs in sets]
    import numpy as np

    split_ids = split_by_query(build_distill_queries(sets, [np.array(p) for p in placeholder]),
                               val_fraction, test_fraction, seed)
    train_ids = {q.id for q in split_ids.train}
    if teacher is not None:
        model = WeaverModel.load(teacher)
    else:
        train_queries = [q for q, cs in zip(queries, sets, strict=True) if cs.id in train_ids]
        model = WeaverModel.fit([q.matrix for q in train_queries], queries[0].verifier_names)
    posteriors = teacher_posteriors(model, queries)
    by_id = {q.id: q for q in build_distill_queries(sets, posteriors)}
    train_set = [by_id[q.id] for q in split_ids.train]
    val_set = [by_id[q.id] for q in split_ids.val]
    typer.echo(f"teacher: Weaver {model.version} ({model.report.n_kept}/{model.report.n_verifiers} verifiers); "
               f"split by query: {len(train_set)} train / {len(val_set)} val / {len(split_ids.test)} test")

    source: Any
    if mode == "offline":
        source = OfflineSource(train_set)
    elif mode == "semi-online":
        pool_set = train_set
        if pool is not None:
            pool_sets = _load_sets(pool)
            held = {q.prompt for q in split_ids.val + split_ids.test}
            pool_sets = [cs for cs in pool_sets if cs.prompt not in held]  # never train on held-out prompts
            pool_queries, _ = build_queries(pool_sets, verifiers, cache)
            pool_set = build_distill_queries(pool_sets, teacher_posteriors(model, pool_queries))
        n_pairs = sum(len(q.candidates) for q in pool_set)
        source = SemiOnlineSource(pool_set, pairs_per_epoch or max(1, n_pairs // 4))
    else:
        if prompts is None:
            _fail("--mode online needs --prompts (e.g. ../shared/data/gsm8k_train.jsonl)")
        try:
            from workers.distill_online import OnlineCollector
        except ImportError as exc:
            _fail(f"--mode online needs the workers package (generation + verifiers): {exc}")
            raise
        collector = OnlineCollector.from_files(prompts, worker_config, model, verifiers=verifiers,
                                               candidates=candidates, seed=seed,
                                               exclude_prompts={cs.prompt for cs in sets})
        source = OnlineSource(lambda r: collector.collect(r, prompts_per_round), rounds)
        epochs = rounds

    student = CrossEncoderStudent.from_base(base, max_length=max_length, seed=seed, context_features=features)
    student.meta.teacher_version = model.version
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, eval_every=eval_every, patience=patience,
                         label_weight=label_weight, stop_on_deviation=stop_on_deviation, seed=seed,
                         context_lr=context_lr)

    def progress(point: Any, report: Any) -> None:
        golden = "" if point.golden_auroc is None else (
            f" | golden AUROC {point.golden_auroc:.3f} sel {point.golden_selection:.3f} BCE {point.golden_bce:.4f}")
        typer.echo(f"step {point.step:5d} ep {point.epoch:5.2f} train {point.train_loss:.4f} | proxy BCE "
                   f"{point.proxy_bce:.4f} top1 {point.proxy_top1:.3f}{golden}"
                   + "".join(f"  [{f.kind}]" for f in report.flags if f.confirmed_at == point.step))

    try:
        result = train(student, source, val_set, config, on_eval=progress)
    finally:
        if mode == "online":
            typer.echo(f"online data: {json.dumps(collector.stats)}")
            collector.close()
    student.meta.extra = {"mode": mode, "best_step": result.best_step, "stop_reason": result.stop_reason,
                          "test_query_ids": [q.id for q in split_ids.test]}
    student.save(output)
    log = write_log(output / "monitor.json", {mode: result},
                    {"file": str(file), "teacher_version": model.version, "scores": source_note,
                     "split": {"train": len(train_set), "val": len(val_set), "test": len(split_ids.test)}})
    typer.echo(f"stopped: {result.stop_reason}; restored step {result.best_step} (by {result.select_metric}); "
               f"{result.steps} steps in {result.seconds:.1f} s; exposure {json.dumps(result.source)}")
    for flag in result.detector.flags:
        typer.echo(f"flag {flag.kind} at step {flag.step}: {flag.detail}")
    typer.echo(f"wrote {output} and {log}")
    if plot:
        typer.echo(f"wrote {plot_runs(output / 'monitor.png', {mode: result})}")
