"""``weaver simulate``, ``weaver fit`` and ``weaver eval``: the label model offline. Heavy imports happen inside
each command, so ``weaver fit`` never loads the web stack and ``weaver serve`` never loads evaluation code."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from service.cli.common import build_queries, fail, fmt, jsonable, load_sets, nan_labels, score_cache

if TYPE_CHECKING:
    from models.weaver_v2 import WeaverV2Config


def simulate(
    output: Annotated[Path, typer.Option("-o", "--output", help="Candidate-set JSON Lines to write")],
    regime: Annotated[str, typer.Option(
        help="independent: conditionally independent binary verifiers, no answers (the paper's regime); "
             "realistic: per-query difficulty, recurring wrong answers, drifting, correlated, adversarial and "
             "no-signal verifiers with continuous scores")] = "independent",
    queries: Annotated[int, typer.Option(help="Number of queries")] = 500,
    samples: Annotated[int | None, typer.Option(help="Candidates per query (default 100; realistic: 32)")] = None,
    verifiers: Annotated[int, typer.Option(help="Conditionally independent verifiers (independent regime)")] = 30,
    seed: int = 0,
) -> None:
    """Write a synthetic candidate-set file with known truth beside it (``<output>.truth.json``)."""
    if regime == "realistic":
        from models.simulate_realistic import RealisticConfig, simulate_realistic, write_realistic

        real = simulate_realistic(RealisticConfig(n_queries=queries, n_samples=samples or 32, seed=seed))
        truth = write_realistic(real, output)
        typer.echo(f"wrote {queries} queries x {samples or 32} candidates x {len(real.verifier_names)} verifiers "
                   f"(realistic regime) to {output}")
        typer.echo(f"truth (labels, latent parameters, class balance, oracle-informed accuracy "
                   f"{real.oracle_informed_accuracy():.3f}, any-correct {real.any_correct():.3f}) in {truth}")
        return
    if regime != "independent":
        fail(f"unknown regime {regime!r}; choose independent or realistic")
    from models.simulate import simulate as run
    from models.simulate import write_simulation

    sim = run(queries, samples or 100, verifiers, seed=seed)
    truth = write_simulation(sim, output)
    typer.echo(f"wrote {queries} queries x {samples or 100} candidates x {verifiers} verifiers to {output}")
    typer.echo(f"truth (rates, class balance, Bayes-optimal accuracy {sim.bayes_optimal_accuracy():.3f}) in {truth}")


LABEL_MODEL_HELP = "weaver-v2 (default: binned scores, answer groups, dependency guard) or weaver-v1 (binary votes)"
V2_OPTION_HELP = ("A weaver-v2 fit option as KEY=VALUE, repeatable (e.g. within_association=false, max_bins=2); "
                  "docs/label-model.md lists them with the ablation each reproduces")


def v2_config_or_fail(options: list[str] | None, label_model: str) -> WeaverV2Config | None:
    """The WeaverV2Config the --v2-option flags ask for (None: none given); a bad one ends the command."""
    if not options:
        return None
    if label_model != "weaver-v2":
        fail(f"--v2-option sets options of weaver-v2, not of {label_model}")
    from models.v2_options import v2_config

    try:
        return v2_config(options)
    except ValueError as exc:
        fail(str(exc))


def fit(
    file: Annotated[Path, typer.Argument(help="Candidate sets with scores (ours or Weaver's score files)")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Model artifact to write")] = Path("model.json"),
    by_task: Annotated[bool, typer.Option("--by-task", help="Also fit one model per `task` key")] = False,
    verifiers: Annotated[str | None, typer.Option(help="Compute these verifiers instead of reading scores")] = None,
    cache: Annotated[Path | None, typer.Option(help="Score cache file (default: .cache/scores-<file>.jsonl)")] = None,
    label_model: Annotated[str, typer.Option(help=LABEL_MODEL_HELP)] = "weaver-v2",
    v2_option: Annotated[list[str] | None, typer.Option(help=V2_OPTION_HELP)] = None,
) -> None:
    """Fit the Weaver label model on score files. No labels are read."""
    from models.label_models import LABEL_MODEL_NAMES, fit_named

    if label_model not in LABEL_MODEL_NAMES:
        fail(f"unknown label model {label_model!r}; choose one of {', '.join(LABEL_MODEL_NAMES)}")
    v2_config = v2_config_or_fail(v2_option, label_model)
    sets = load_sets(file)
    queries, source = build_queries(sets, verifiers, score_cache(file, verifiers, cache))
    tasks = [q.task for q in queries]
    model = fit_named(label_model, [q.matrix for q in queries], queries[0].verifier_names,
                      [q.answers for q in queries], tasks, by_task=by_task, v2_config=v2_config)
    model.save(output)
    rep = model.report
    typer.echo(f"scores: {source}")
    typer.echo(f"{label_model}: fitted {rep.n_kept}/{rep.n_verifiers} verifiers on {rep.n_queries} queries "
               f"({rep.n_candidates} candidates): class balance {rep.class_balance:.3f}, "
               f"{'converged' if rep.converged else 'NOT converged'} in {rep.iterations} iterations, "
               f"{rep.fit_seconds:.3f} s")
    if v2_config is not None:
        from models.v2_options import changed_options, describe_options

        typer.echo(describe_options(changed_options(v2_config)))
    within = getattr(rep, "within_query", ())
    if within:
        typer.echo(f"within-query contrasts on single-answer queries: {', '.join(within)}")
    silent = getattr(rep, "within_silent", ())
    if silent:
        typer.echo(f"no evidence within queries (no association inside them): {', '.join(silent)}")
    by_size = getattr(model, "none_by_size", None)
    if by_size is not None and by_size.size:
        sizes = sorted({k for k in (1, 2, 4, 8, 16, 32, 64) if k < by_size.size} | {by_size.size})
        typer.echo("P(no answer right) on single-answer queries, by candidates per query: "
                   + ", ".join(f"{k}: {by_size[k - 1]:.3f}" for k in sizes))
    for warning in rep.warnings:
        typer.echo(f"warning: {warning}")
    typer.echo(f"wrote {output} (version {model.version}, {len(model.by_task)} task models)")
    if by_task and label_model == "weaver-v2":
        typer.echo("note: --by-task fits per-task models for weaver-v1 only; weaver-v2 reads each query's task "
                   "to decide whether its answers are unique")


def evaluate_cmd(
    file: Annotated[Path, typer.Argument(help="Labelled candidate sets (JSON Lines)")],
    verifiers: Annotated[str | None, typer.Option(
        help="Verifiers to run: a profile (e.g. cpu-default) or comma-separated names. "
             "Default: the file's precomputed scores, else answer agreement")] = None,
    model: Annotated[Path | None, typer.Option(help="Score with this fitted model instead of fitting")] = None,
    cache: Annotated[Path | None, typer.Option(help="Score cache file (default: .cache/scores-<file>.jsonl)")] = None,
    folds: Annotated[int, typer.Option(help="Folds for cross-fitted Weaver and supervised LR")] = 5,
    plot: Annotated[Path | None, typer.Option(
        help="Write reliability.png, accuracy.png and verifiers.png into this directory")] = None,
    label_model: Annotated[str, typer.Option(help=LABEL_MODEL_HELP)] = "weaver-v2",
    resamples: Annotated[int, typer.Option(help="Bootstrap refits for the label-free estimates' intervals")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables")] = False,
    v2_option: Annotated[list[str] | None, typer.Option(help=V2_OPTION_HELP)] = None,
) -> None:
    """Selection accuracy of every aggregator, with bootstrap 95% intervals over queries."""
    from rich.console import Console

    from models import label_models
    from models.evaluate import evaluate

    if label_model not in label_models.LABEL_MODEL_NAMES:
        fail(f"unknown label model {label_model!r}; choose one of {', '.join(label_models.LABEL_MODEL_NAMES)}")
    if v2_option and model is not None:
        fail("--v2-option sets fit options, and --model scores with a model already fitted: give one of them")
    v2_config = v2_config_or_fail(v2_option, label_model)
    console = Console(stderr=True)
    sets = load_sets(file)
    cache = score_cache(file, verifiers, cache)
    if plot is not None and plot.exists() and not plot.is_dir():
        fail(f"--plot {plot} is a file; give a directory to write the PNGs into")
    with console.status("scoring candidates..."):
        queries, source = build_queries(sets, verifiers, cache)
    labels = [cs.labels if cs.labels is not None else nan_labels(len(cs.candidates)) for cs in sets]
    fitted = label_models.load(model) if model else None
    with console.status("evaluating...") as status:
        report = evaluate(queries, labels, model=fitted, folds=folds, progress=lambda m: status.update(m),
                          label_model=label_model, resamples=resamples, v2_config=v2_config)
    written: list[Path] = []
    if plot is not None:
        from models.eval_plots import write_eval_plots

        with console.status("plotting..."):
            written = write_eval_plots(report, plot)
    if as_json:
        payload = jsonable(asdict(report))
        if plot is not None:
            payload["plots"] = [str(p) for p in written]
        typer.echo(json.dumps(payload, indent=2))
        return
    print_eval_report(report, f"[bold]{file}[/]: {report.n_queries} queries, {report.n_candidates} candidates, "
                              f"{report.n_labelled_queries} labelled; scores: {source}")
    for path in written:
        typer.echo(f"wrote {path}")


def print_eval_report(report: Any, headline: str) -> None:
    """The two tables of ``weaver eval``, laid out to fit the terminal (cells wrap, numbers stay whole)."""
    from rich.console import Console

    from service.cli.tables import fitted_table

    out = Console()
    out.print(headline)
    rows = [[row.name, "yes" if row.uses_labels else "no", fmt(row.accuracy.mean, True),
             f"{fmt(row.accuracy.low, True)}-{fmt(row.accuracy.high, True)}", fmt(row.auroc), fmt(row.ece),
             row.note] for row in report.rows]
    out.print(fitted_table("Selection accuracy (%) with bootstrap 95% CI over queries",
                           ["aggregator", "labels", "accuracy", "95% CI", "AUROC", "ECE", "note"], rows,
                           left=("aggregator", "labels", "note")))
    accuracy_rows, rate_rows = [], []
    for r in report.verifier_rows:
        span = "-" if math.isnan(r.est_accuracy_low) else f"{fmt(r.est_accuracy_low)}-{fmt(r.est_accuracy_high)}"
        if r.identified is False:
            span += "*"
        accuracy_rows.append([r.name, "yes" if r.kept else f"no ({r.reason})", fmt(r.est_accuracy), span,
                              fmt(r.true_accuracy), fmt(r.auroc)])
        rate_rows.append([r.name, fmt(r.threshold), fmt(r.positive_rate), f"{fmt(r.est_tpr)}/{fmt(r.true_tpr)}",
                          f"{fmt(r.est_fpr)}/{fmt(r.true_fpr)}"])
    interval = (f" [{report.class_balance_low:.3f}, {report.class_balance_high:.3f}]"
                f"{'*' if report.class_balance_identified is False else ''}"
                if not math.isnan(report.class_balance_low) else "")
    out.print(f"Verifiers: {report.label_model} estimates (no labels) vs truth (labels); model "
              f"{report.weaver_version}, {'converged' if report.weaver_converged else 'NOT converged'} in "
              f"{report.weaver_iterations} iterations; class balance est. {report.class_balance_estimated:.3f}"
              f"{interval} / true {report.class_balance_true:.3f}")
    if report.label_model_options:
        from models.v2_options import describe_options

        out.print(describe_options(report.label_model_options))
    out.print(fitted_table("", ["verifier", "kept", "est acc", "95% interval", "true acc", "AUROC"], accuracy_rows,
                           left=("verifier", "kept")))
    out.print(fitted_table("", ["verifier", "threshold", "pos rate", "TPR est/true", "FPR est/true"], rate_rows,
                           left=("verifier",)))
    if report.class_balance_identified is False or any(r.identified is False for r in report.verifier_rows):
        out.print("* not identified by these data: the interval is wide, too few verifiers are independent, or the "
                  "estimate rests on one verifier (refitted without it, it moves by more than 0.05)")
    for warning in report.weaver_warnings:
        out.print(f"[yellow]warning:[/] {warning}")


def register(main: typer.Typer) -> None:
    """Add ``weaver simulate``, ``weaver fit`` and ``weaver eval`` to the main CLI."""
    main.command()(simulate)
    main.command()(fit)
    main.command(name="eval")(evaluate_cmd)
