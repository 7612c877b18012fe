"""``weaver cascade``: replay the verifier cascade on scored candidate sets, accuracy against compute.

Scores are read like ``weaver eval`` reads them (the file's precomputed scores, or ``--verifiers`` through
the score cache). Verifier costs (seconds per candidate) come from, in order: ``--costs`` overrides; the
assumed table for ``weaver simulate --regime realistic`` files (``models.cascade_replay.SIMULATED_COSTS``,
used when ``<file>.truth.json`` says the regime is realistic); a measurement on this machine
(``--measure-costs K``: each verifier built from the worker configuration, loaded, warmed up on one
candidate set, then timed on the next sets, K candidates at least, in batches of its configured size).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from service.cli.common import build_queries, fail, fmt, jsonable, load_sets, nan_labels, score_cache
from service.cli.core import LABEL_MODEL_HELP

DEFAULT_CONFIDENCES = "0.8,0.9,0.95,0.99,0.999"
DEFAULT_MAX_CHANGES = "0.005,0.01,0.02,0.05"
DEFAULT_MARGINS = "0.5,0.7,off"
DEFAULT_BUDGETS = "none,60%,40%,25%"


def parse_costs(text: str | None) -> dict[str, float]:
    """``name=seconds,name=seconds`` -> a dict; a bad item is a usage error."""
    out: dict[str, float] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        try:
            seconds = float(value)
        except ValueError:
            seconds = float("nan")
        if not sep or not name.strip() or not seconds >= 0:
            fail(f"--costs: {item.strip()!r} is not name=seconds (seconds per candidate, >= 0)")
        out[name.strip()] = seconds
    return out


def parse_floats(text: str, option: str, off: float | None = None) -> list[float]:
    values = []
    for item in text.split(","):
        item = item.strip()
        if off is not None and item == "off":
            values.append(off)
            continue
        try:
            values.append(float(item))
        except ValueError:
            fail(f"{option}: {item!r} is not a number{' or off' if off is not None else ''}")
    if not values:
        fail(f"{option}: give at least one value")
    return values


def parse_budgets(text: str, full_cost_s: float) -> list[float | None]:
    """``none``, seconds per candidate (``0.5`` or ``0.5s``) or a share of the full ensemble's cost (``40%``)."""
    out: list[float | None] = []
    for item in text.split(","):
        item = item.strip()
        try:
            if item == "none":
                out.append(None)
            elif item.endswith("%"):
                out.append(float(item[:-1]) / 100 * full_cost_s)
            else:
                out.append(float(item.removesuffix("s")))
        except ValueError:
            fail(f"--budgets: {item!r} is not none, seconds per candidate or a percentage of the full cost")
    return out


def simulated_costs(file: Path) -> dict[str, float] | None:
    """The assumed costs when ``file`` was written by ``weaver simulate --regime realistic``."""
    from models.cascade_replay import SIMULATED_COSTS

    truth = file.with_suffix(file.suffix + ".truth.json")
    if not truth.exists():
        return None
    try:
        regime = json.loads(truth.read_text()).get("regime")
    except (OSError, ValueError):
        return None
    return dict(SIMULATED_COSTS) if regime == "realistic" else None


def measure_costs(sets: list[Any], names: list[str], k: int) -> dict[str, float]:
    """Seconds per candidate of each verifier on this machine, on at least ``k`` candidates after a warm-up."""
    import asyncio

    from workers.config import WorkerConfig
    from workers.verifiers import GroupItem, PairItem, build_verifier

    if len(sets) < 2:
        fail("--measure-costs needs at least two candidate sets (one to warm up on)")
    timed, count = [], 0
    for cs in sets[1:]:
        if count >= k:
            break
        timed.append(cs)
        count += len(cs.candidates)
    config = WorkerConfig.default()
    out: dict[str, float] = {}
    for name in names:
        verifier = build_verifier(config.spec(name))
        verifier.load()

        async def run(part: list[Any], v: Any = verifier) -> None:
            if v.granularity == "group":
                items: list[Any] = [GroupItem(cs.prompt, tuple(c.text for c in cs.candidates),
                                              getattr(cs, "context", None) or {}) for cs in part]
            else:
                items = [PairItem(cs.prompt, c.text, getattr(cs, "context", None) or {})
                         for cs in part for c in cs.candidates]
            for start in range(0, len(items), v.max_batch_size):
                await v.score(items[start:start + v.max_batch_size])

        asyncio.run(run(sets[:1]))  # warm-up: first-call costs (lazy imports, graph builds) are not per candidate
        start = time.perf_counter()
        asyncio.run(run(timed))
        out[name] = (time.perf_counter() - start) / max(count, 1)
        asyncio.run(verifier.aclose())
        typer.echo(f"cost {name}: {out[name]:.5f} s per candidate ({count} candidates)", err=True)
    return out


def cascade_cmd(
    file: Annotated[Path, typer.Argument(help="Labelled candidate sets (JSON Lines)")],
    verifiers: Annotated[str | None, typer.Option(
        help="Verifiers: a profile (e.g. cpu-default) or comma-separated names, read through the score cache "
             "as `weaver eval` does. Default: the file's precomputed scores")] = None,
    cache: Annotated[Path | None, typer.Option(help="Score cache file (default: .cache/scores-<file>.jsonl)")] = None,
    costs: Annotated[str | None, typer.Option(
        help="Seconds per candidate, name=seconds,... (overrides measured or assumed costs)")] = None,
    measure_costs_k: Annotated[int, typer.Option(
        "--measure-costs", help="Measure each verifier's seconds per candidate on this machine on this many "
                                "candidates (after a warm-up set) when --costs does not give it; 0: never")] = 16,
    max_change: Annotated[str, typer.Option(
        help="Lookahead rule (the served default, 0.01): settle when the verifiers not yet run would change the "
             "answer with at most this probability, simulated from the label model; values to sweep, or "
             "'off'")] = DEFAULT_MAX_CHANGES,
    confidence: Annotated[str, typer.Option(
        help="Threshold rule: settle thresholds on P(top answer group) to sweep")] = DEFAULT_CONFIDENCES,
    margin: Annotated[str, typer.Option(
        help="Settle thresholds on the top group's lead over the runner-up to sweep ('off': never)")] = DEFAULT_MARGINS,
    budgets: Annotated[str, typer.Option(
        help="Per-candidate budgets to sweep: none, seconds, or a percentage of the full ensemble's "
             "per-candidate cost")] = DEFAULT_BUDGETS,
    label_model: Annotated[str, typer.Option(help=LABEL_MODEL_HELP)] = "weaver-v2",
    plot: Annotated[Path | None, typer.Option(help="Write cascade.png (accuracy vs compute) into this directory")]
    = None,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap over queries")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables")] = False,
) -> None:
    """Accuracy and verifier compute of the cascade (a sweep of settle rules and budgets) against fixed policies.

    The label model is fitted label-free on all queries with every verifier (as `weaver eval` does); each
    policy then ranks with the verifiers it ran, the others abstaining, exactly as the worker serves it.
    """
    from models.adaptive import MARGIN_OFF
    from models.cascade_replay import best_within, build_table, fit_label_model, sweep
    from models.label_models import LABEL_MODEL_NAMES

    if label_model not in LABEL_MODEL_NAMES:
        fail(f"unknown label model {label_model!r}; choose one of {', '.join(LABEL_MODEL_NAMES)}")
    if plot is not None and plot.exists() and not plot.is_dir():
        fail(f"--plot {plot} is a file; give a directory to write the PNG into")
    max_changes = [] if max_change.strip() == "off" else parse_floats(max_change, "--max-change")
    confidences = parse_floats(confidence, "--confidence")
    margins = parse_floats(margin, "--margin", off=MARGIN_OFF)
    overrides = parse_costs(costs)
    sets = load_sets(file)
    cache = score_cache(file, verifiers, cache)
    queries, source = build_queries(sets, verifiers, cache)
    names = list(queries[0].verifier_names)
    cost_table, cost_source = _costs(file, sets, names, overrides, verifiers, measure_costs_k)
    labels = [cs.labels if cs.labels is not None else nan_labels(len(cs.candidates)) for cs in sets]
    model = fit_label_model(queries, label_model)
    table = build_table(queries, model, cost_table, labels)
    fixed, cascades = sweep(table, confidences, margins, parse_budgets(budgets, table.full_cost), seed, max_changes)
    full = fixed[-1]
    best = best_within(cascades, full)
    written = None
    if plot is not None:
        from models.cascade_plots import cascade_figure

        written = cascade_figure(fixed, cascades, plot / "cascade.png",
                                 f"{file.name}: {len(queries)} queries; {label_model}; costs: {cost_source}")
    if as_json:
        payload = {
            "file": str(file), "n_queries": len(queries), "scores": source, "label_model": label_model,
            "costs": cost_table, "costs_source": cost_source, "stages": [list(s) for s in table.stages],
            "full_cost_s_per_candidate": table.full_cost,
            "policies": [_policy_json(p) for p in fixed + cascades],
            "best_within_0_5_points_at_40_percent": best.name if best else None,
        }
        if written is not None:
            payload["plot"] = str(written)
        typer.echo(json.dumps(jsonable(payload), indent=2))
        return
    _print(file, len(queries), source, cost_table, cost_source, table.stages, fixed, cascades, best)
    if written is not None:
        typer.echo(f"wrote {written}")


def _costs(file: Path, sets: list[Any], names: list[str], overrides: dict[str, float], verifiers: str | None,
           k: int) -> tuple[dict[str, float], str]:
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        fail(f"--costs names verifiers these scores do not have: {', '.join(unknown)} (verifiers: {', '.join(names)})")
    table: dict[str, float] = {}
    sources = []
    assumed = simulated_costs(file)
    if assumed is not None:
        table.update({n: assumed[n] for n in names if n in assumed})
        sources.append("assumed for the simulator")
    missing = [n for n in names if n not in table and n not in overrides]
    if missing and verifiers is not None and k > 0:
        table.update(measure_costs(sets, missing, k))
        sources.append(f"measured on this machine ({k} candidates)")
    table.update(overrides)
    if overrides:
        sources.append("--costs")
    missing = [n for n in names if n not in table]
    if missing:
        fail(f"no cost for {', '.join(missing)}: give --costs name=seconds,... (seconds per candidate), or "
             f"--verifiers with --measure-costs K to measure them on this machine")
    return table, ", ".join(sources)


def _policy_json(p: Any) -> dict[str, Any]:
    return {
        "name": p.name, "kind": p.kind, "max_change": p.max_change, "confidence": p.confidence,
        "margin": None if p.margin is None or p.margin > 1 else p.margin,  # null: off (or a fixed policy)
        "budget_s": p.budget_s,
        "accuracy": {"mean": p.accuracy.mean, "low": p.accuracy.low, "high": p.accuracy.high},
        "compute_s": p.compute_s, "compute_share": p.compute_share, "agreement_with_full": p.agreement,
        "mean_stages": p.mean_stages, "stop_reasons": p.stop_reasons,
    }


def _print(file: Path, n_queries: int, source: str, costs: dict[str, float], cost_source: str,
           stages: Any, fixed: list[Any], cascades: list[Any], best: Any) -> None:
    from rich.console import Console

    from models.cascade_plots import frontier
    from service.cli.tables import fitted_table

    out = Console()
    out.print(f"[bold]{file}[/]: {n_queries} queries; scores: {source}")
    stage_text = "; ".join(f"{i}: {', '.join(f'{n} {costs[n]:.4g}' for n in s)}" for i, s in enumerate(stages, 1))
    out.print(f"stages (seconds per candidate; costs {cost_source}): {stage_text}")
    front = {id(p) for p in frontier(cascades)}
    rows = []
    for p in fixed + cascades:
        if p.kind == "cascade":
            name = "cascade" + ("*" if id(p) in front else "")
            if p.max_change is not None:
                rule = f"P(change) <= {p.max_change:g}"
            else:
                rule = f"conf {p.confidence:g}, margin {'off' if p.margin > 1 else f'{p.margin:g}'}"
            budget = "none" if p.budget_s is None else f"{p.budget_s:.3g}"
            reasons = "/".join(str(p.stop_reasons.get(k, 0)) for k in ("settled", "budget", "exhausted"))
        else:
            name = "full" if p is fixed[-1] else f"first-{fixed.index(p) + 1}"
            rule, budget, reasons = "-", "-", "-"
        rows.append([name, rule, budget, fmt(p.accuracy.mean, True),
                     f"{fmt(p.accuracy.low, True)}-{fmt(p.accuracy.high, True)}", fmt(p.compute_share, True),
                     fmt(p.agreement, True), reasons])
    out.print(fitted_table("Selection accuracy (%, bootstrap 95% CI over queries), verifier compute (% of full)",
                           ["policy", "rule", "budget s", "acc", "95% CI", "compute", "agrees",
                            "stops s/b/e"], rows, left=("policy",)))
    out.print("first-k: the first k stages on every query; full: every stage (the full ensemble); "
              "* on the cascade frontier (no cascade is both cheaper and more accurate); rule: P(change) <= x is "
              "the lookahead (the served default), conf/margin the threshold rule; budget: seconds per candidate; "
              "agrees: same answer as the full ensemble; stops: settled/budget/exhausted (queries)")
    full = fixed[-1]
    if best is not None:
        out.print(f"cheapest cascade within 0.5 points of the full ensemble at <= 40 % of its compute: {best.name} "
                  f"({fmt(best.accuracy.mean, True)} % vs {fmt(full.accuracy.mean, True)} %, "
                  f"{fmt(best.compute_share, True)} % compute)")
    else:
        out.print("no cascade of this sweep is within 0.5 points of the full ensemble at <= 40 % of its compute")


def register(main: typer.Typer) -> None:
    """Add ``weaver cascade`` to the main CLI."""
    main.command(name="cascade")(cascade_cmd)
