"""``weaver distill``: train a cross-encoder on Weaver's posteriors, monitored for teacher hacking."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from models.distill.dataset import TeacherSplit
    from models.distill.trainer import TrainResult

MODES = ("offline", "semi-online", "fresh-samples")
DEPRECATED_MODES = {"online": "fresh-samples"}  # the regime's old name; "online" now means refits from traffic
OFFLINE_PASS_WARNING = 3
OFFLINE_EPOCH_CAP = 5


def distill(
    file: Annotated[Path, typer.Argument(help="Candidate sets (JSON Lines): the training pool and held-out queries")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Checkpoint folder to write")] = Path("distilled"),
    mode: Annotated[str, typer.Option(help="offline | semi-online | fresh-samples")] = "offline",
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
    prompts: Annotated[Path | None, typer.Option(help="fresh-samples: prompts file, e.g. gsm8k_train.jsonl")] = None,
    worker_config: Annotated[Path | None, typer.Option(help="fresh-samples: worker YAML")] = None,
    rounds: Annotated[int, typer.Option(help="fresh-samples: rounds of new prompts")] = 3,
    prompts_per_round: Annotated[int, typer.Option(help="fresh-samples: new prompts per round")] = 16,
    candidates: Annotated[int, typer.Option(help="fresh-samples: candidates sampled per prompt")] = 4,
    base: Annotated[str | None, typer.Option(help="HF encoder name or path (default: all-MiniLM-L6-v2)")] = None,
    max_length: Annotated[int, typer.Option(help="Tokens per (query, candidate) pair")] = 256,
    context_features: Annotated[str, typer.Option(
        help="Sibling features added to the encoder's logit by a learned linear head (comma-separated: "
             "sibling_agreement, no_answer), or 'none' for a pure pairwise cross-encoder")
    ] = "sibling_agreement,no_answer",
    context_lr: Annotated[float, typer.Option(help="Learning rate of the context head's weights")] = 0.05,
    epochs: Annotated[int, typer.Option(help="Epochs (offline, semi-online); fresh-samples: one pass a round")] = 3,
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
    from models.distill.student import CrossEncoderStudent
    from models.distill.trainer import TrainConfig, train
    from service.cli.common import build_queries, load_sets

    mode = _check_mode(mode, epochs, force)
    features = _context_features(context_features)
    sets = load_sets(file)
    queries, source_note = build_queries(sets, verifiers, cache)
    typer.echo(f"scores: {source_note}")
    split = _teacher_split(sets, queries, teacher, val_fraction, test_fraction, seed)
    close: Callable[[], None] = lambda: None  # noqa: E731
    if mode == "fresh-samples":
        source, close = _fresh_sample_source(split, sets, prompts, worker_config, verifiers, candidates,
                                             rounds, prompts_per_round, seed)
        epochs = rounds
    else:
        source = _pool_source(mode, split, pool, pairs_per_epoch, verifiers, cache)

    student = CrossEncoderStudent.from_base(base, max_length=max_length, seed=seed, context_features=features)
    student.meta.teacher_version = split.teacher.version
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, eval_every=eval_every, patience=patience,
                         label_weight=label_weight, stop_on_deviation=stop_on_deviation, seed=seed,
                         context_lr=context_lr)
    try:
        result = train(student, source, split.val, config, on_eval=_print_progress)
    finally:
        close()
    _save_and_report(student, result, mode, split, output, file, source_note, plot)


def _check_mode(mode: str, epochs: int, force: bool) -> str:
    """The regime's name (old names mapped, with a warning); offline epochs capped against teacher hacking."""
    from service.cli.common import fail

    if mode in DEPRECATED_MODES:
        typer.echo(f"warning: --mode {mode} is now called {DEPRECATED_MODES[mode]}", err=True)
        mode = DEPRECATED_MODES[mode]
    if mode not in MODES:
        fail(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "offline" and epochs > OFFLINE_EPOCH_CAP and not force:
        fail(f"{epochs} offline epochs replay every pair {epochs} times, the regime where teacher hacking "
              f"appears; use at most {OFFLINE_EPOCH_CAP}, --mode semi-online, or --force")
    if mode == "offline" and epochs > OFFLINE_PASS_WARNING:
        typer.echo(f"warning: {epochs} passes over the same pairs (> {OFFLINE_PASS_WARNING}); watch the detector",
                   err=True)
    return mode


def _context_features(spec: str) -> tuple[str, ...]:
    from models.distill.features import check_feature_names
    from service.cli.common import fail

    if spec.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(check_feature_names([n.strip() for n in spec.split(",") if n.strip()]))
    except ValueError as exc:
        fail(f"--context-features: {exc}")


def _teacher_split(sets: list[Any], queries: list[Any], teacher: Path | None, val_fraction: float,
                   test_fraction: float, seed: int) -> TeacherSplit:
    """Split by query; the teacher is the given artifact, else Weaver fitted label-free on the training queries."""
    from models.distill.dataset import teacher_and_split
    from models.weaver import WeaverModel

    model = WeaverModel.load(teacher) if teacher is not None else None
    split = teacher_and_split(sets, queries, val_fraction, test_fraction, seed, teacher=model, fit_on_val=False)
    report = split.teacher.report
    typer.echo(f"teacher: Weaver {split.teacher.version} ({report.n_kept}/{report.n_verifiers} verifiers); "
               f"split by query: {len(split.train)} train / {len(split.val)} val / {len(split.test)} test")
    return split


def _pool_source(mode: str, split: TeacherSplit, pool: Path | None, pairs_per_epoch: int | None,
                 verifiers: str | None, cache: Path | None) -> Any:
    """offline: the training queries replayed; semi-online: unseen pairs first from the training split or ``pool``."""
    from models.distill.dataset import build_distill_queries, teacher_posteriors
    from models.distill.regimes import OfflineSource, SemiOnlineSource
    from service.cli.common import build_queries, load_sets

    if mode == "offline":
        return OfflineSource(split.train)
    pool_set = split.train
    if pool is not None:
        held = {q.prompt for q in split.val + split.test}
        pool_sets = [cs for cs in load_sets(pool) if cs.prompt not in held]  # never train on held-out prompts
        pool_queries, _ = build_queries(pool_sets, verifiers, cache)
        pool_set = build_distill_queries(pool_sets, teacher_posteriors(split.teacher, pool_queries))
    n_pairs = sum(len(q.candidates) for q in pool_set)
    return SemiOnlineSource(pool_set, pairs_per_epoch or max(1, n_pairs // 4))


def _fresh_sample_source(split: TeacherSplit, sets: list[Any], prompts: Path | None, worker_config: Path | None,
                         verifiers: str | None, candidates: int, rounds: int, prompts_per_round: int,
                         seed: int) -> tuple[Any, Callable[[], None]]:
    """Rounds of new prompts generated and verified by a Worker, scored by the teacher; returns (source, close)."""
    from models.distill.regimes import FreshSampleSource
    from service.cli.common import fail

    if prompts is None:
        fail("--mode fresh-samples needs --prompts (e.g. ../shared/data/gsm8k_train.jsonl)")
        raise AssertionError  # _fail exits
    try:
        from workers.distill_fresh import FreshSampleCollector
    except ImportError as exc:
        fail(f"--mode fresh-samples needs the workers package (generation + verifiers): {exc}")
    collector = FreshSampleCollector.from_files(prompts, worker_config, split.teacher, verifiers=verifiers,
                                                candidates=candidates, seed=seed,
                                                exclude_prompts={cs.prompt for cs in sets})

    def close() -> None:
        typer.echo(f"fresh-sample data: {json.dumps(collector.stats)}")
        collector.close()

    return FreshSampleSource(lambda r: collector.collect(r, prompts_per_round), rounds), close


def _print_progress(point: Any, report: Any) -> None:
    golden = "" if point.golden_auroc is None else (
        f" | golden AUROC {point.golden_auroc:.3f} sel {point.golden_selection:.3f} BCE {point.golden_bce:.4f}")
    typer.echo(f"step {point.step:5d} ep {point.epoch:5.2f} train {point.train_loss:.4f} | proxy BCE "
               f"{point.proxy_bce:.4f} top1 {point.proxy_top1:.3f}{golden}"
               + "".join(f"  [{f.kind}]" for f in report.flags if f.confirmed_at == point.step))


def _save_and_report(student: Any, result: TrainResult, mode: str, split: TeacherSplit, output: Path, file: Path,
                     source_note: str, plot: bool) -> None:
    from models.distill.report import plot_runs, write_log

    student.meta.extra = {"mode": mode, "best_step": result.best_step, "stop_reason": result.stop_reason,
                          "test_query_ids": [q.id for q in split.test]}
    student.save(output)
    log = write_log(output / "monitor.json", {mode: result},
                    {"file": str(file), "teacher_version": split.teacher.version, "scores": source_note,
                     "split": {"train": len(split.train), "val": len(split.val), "test": len(split.test)}})
    typer.echo(f"stopped: {result.stop_reason}; restored step {result.best_step} (by {result.select_metric}); "
               f"{result.steps} steps in {result.seconds:.1f} s; exposure {json.dumps(result.source)}")
    for flag in result.detector.flags:
        typer.echo(f"flag {flag.kind} at step {flag.step}: {flag.detail}")
    typer.echo(f"wrote {output} and {log}")
    if plot:
        typer.echo(f"wrote {plot_runs(output / 'monitor.png', {mode: result})}")


def register(main: typer.Typer) -> None:
    """Add ``weaver distill`` to the main CLI."""
    main.command(name="distill")(distill)
