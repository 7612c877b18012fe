"""``weaver models list|show|rollback|unpin`` (published label-model versions) and ``weaver online replay``.

A store is a directory (embedded mode's ``online.model_dir``) or a Redis URL (distributed mode). A
rollback moves the store's pointer and pins it: replicas follow the pointer (Redis: announced on
pub/sub; a directory: re-read every 0.2 s by the serving process), and refits do not replace a pinned
version unless ``online.pin_policy`` allows it; ``unpin`` lets them again.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

models_app = typer.Typer(help="Label-model versions published by online learning.", no_args_is_help=True)
online_app = typer.Typer(help="Online weak supervision tools.", no_args_is_help=True)

StoreOption = Annotated[str, typer.Option(
    "--store", envvar="WEAVER_MODEL_STORE",
    help="A version directory, or a Redis URL (redis://host:6379/0) for distributed mode")]
PrefixOption = Annotated[str, typer.Option("--prefix", envvar="WEAVER_QUEUE__PREFIX", help="Redis key prefix")]


def open_store(store: str, prefix: str = "weaver") -> Any:
    if store.startswith(("redis://", "rediss://", "unix://")):
        import redis

        from workers.online.keys import OnlineKeys
        from workers.online.store import RedisModelStore

        return RedisModelStore(redis.Redis.from_url(store), OnlineKeys(prefix))
    from models.online import DirectoryModelStore

    if not Path(store).is_dir():
        typer.echo(f"error: no version store at {store} (online learning has published no version there; "
                   "pass --store or set WEAVER_MODEL_STORE)", err=True)
        raise typer.Exit(2)
    return DirectoryModelStore(store)


def _other_prefixes(model_store: Any) -> list[str]:
    """Prefixes on the same Redis that do hold versions (when the one asked for holds none)."""
    from workers.online.store import RedisModelStore, prefixes_with_versions

    if not isinstance(model_store, RedisModelStore):
        return []
    return [p for p in prefixes_with_versions(model_store.client) if p != model_store.keys.prefix]


def _empty(model_store: Any, store: str) -> str:
    others = _other_prefixes(model_store)
    if others:
        return (f"no versions under prefix {model_store.keys.prefix!r} in {store}; versions exist under "
                f"{', '.join(repr(p) for p in others)} (pass --prefix or set WEAVER_QUEUE__PREFIX)")
    return "no versions yet (the service serves its cold-start prior)"


def _is_directory_store(store: str) -> bool:
    return not store.startswith(("redis://", "rediss://", "unix://"))


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _resolve(model_store: Any, ref: str, store: str = "") -> str:
    from models.online import VersionNotFound, resolve_version

    try:
        return resolve_version(model_store, ref)
    except (VersionNotFound, ValueError) as exc:
        hint = f"; {_empty(model_store, store)}" if not model_store.versions() else ""
        typer.echo(f"error: no unique version {ref!r} ({exc}){hint}", err=True)
        raise typer.Exit(2) from None


def _pointer_text(pointer: Any) -> str:
    if pointer is None:
        return "no version served yet (cold-start prior)"
    pin = ", pinned" if pointer.pinned else ""
    return f"serving v{pointer.sequence} {pointer.version} ({pointer.source}{pin}, since {_when(pointer.published_at)})"


@models_app.command("list")
def list_versions(store: StoreOption = ".weaver/models", prefix: PrefixOption = "weaver",
                  as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every kept version, oldest first; * marks the one being served."""
    from rich.console import Console

    from service.cli.tables import fitted_table

    if _is_directory_store(store) and not Path(store).exists():  # nothing published yet: not an error
        if as_json:
            typer.echo(json.dumps({"current": None, "versions": []}, indent=2))
        else:
            typer.echo(f"no versions yet in {store} (the service serves its cold-start prior)")
        return
    model_store = open_store(store, prefix)
    infos = model_store.versions()
    pointer = model_store.pointer()
    current = pointer.version if pointer is not None else None
    if as_json:
        typer.echo(json.dumps({"current": current, "pointer": pointer.to_json() if pointer else None,
                               "versions": [i.to_json() for i in infos]}, indent=2))
        return
    if not infos:
        typer.echo(_empty(model_store, store))
        return
    rows = [["*" if info.version == current else "", f"v{info.sequence}", info.version, _when(info.created_at),
             info.source, str(info.n_queries), "-" if info.drift is None else f"{info.drift:.3f}",
             ",".join(info.tasks), info.note] for info in infos]
    Console().print(fitted_table(f"label-model versions in {store}",
                                 ["", "seq", "version", "created", "source", "queries", "drift", "tasks", "note"],
                                 rows, left=("", "version", "created", "source", "tasks", "note")))
    typer.echo(_pointer_text(pointer))


@models_app.command("show")
def show_version(version: Annotated[str, typer.Argument(help="version hash, prefix, or sequence (v3)")],
                 store: StoreOption = ".weaver/models", prefix: PrefixOption = "weaver",
                 as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """A version's fit report: class balance, convergence, every verifier's rates."""
    from rich.console import Console
    from rich.table import Table

    model_store = open_store(store, prefix)
    full = _resolve(model_store, version, store)
    model = model_store.get(full)
    if as_json:
        typer.echo(json.dumps(model.to_json(), indent=2, default=lambda v: v.item()))
        return
    rep = model.report
    out = Console()
    out.print(f"[bold]{full}[/] {'(serving)' if model_store.current() == full else ''}: {rep.n_queries} queries, "
              f"{rep.n_candidates} candidates, class balance {rep.class_balance:.3f}, "
              f"{'converged' if rep.converged else 'NOT converged'} in {rep.iterations} iterations; "
              f"task models: {', '.join(sorted(model.by_task)) or 'none'}")
    table = Table()
    for col in ("verifier", "kept", "pos rate", "threshold", "est TPR", "est FPR", "est acc"):
        table.add_column(col, justify="left" if col in ("verifier", "kept") else "right")
    for v in rep.verifiers:
        table.add_row(v.name, "yes" if v.kept else f"no ({v.reason})", f"{v.positive_rate:.3f}",
                      f"{v.threshold:.3f}", *("-" if math.isnan(x) else f"{x:.3f}" for x in (v.tpr, v.fpr, v.accuracy)))
    out.print(table)
    for warning in rep.warnings:
        out.print(f"[yellow]warning:[/] {warning}")


@models_app.command("rollback")
def rollback_version(version: Annotated[str, typer.Argument(help="version hash, prefix, or sequence (v3)")],
                     store: StoreOption = ".weaver/models", prefix: PrefixOption = "weaver") -> None:
    """Serve a kept version again and pin it: every replica swaps within a second, and refits do not
    replace it unless online.pin_policy allows (hold: until `weaver models unpin`)."""
    from models.online import rollback

    model_store = open_store(store, prefix)
    full = _resolve(model_store, version, store)
    pointer = rollback(model_store, full)
    typer.echo(f"now serving v{pointer.sequence} ({full}), pinned: refits do not replace it until "
               "`weaver models unpin` (online.pin_policy: hold) or a refit on a window logged entirely after now "
               "(online.pin_policy: fresh_window)")


@models_app.command("unpin")
def unpin_version(store: StoreOption = ".weaver/models", prefix: PrefixOption = "weaver") -> None:
    """Let refits replace the served version again (it keeps serving until a refit passes its guardrails)."""
    model_store = open_store(store, prefix)
    before = model_store.pointer()
    if before is None:
        typer.echo(f"error: {_empty(model_store, store)}", err=True)
        raise typer.Exit(2)
    if not before.pinned:
        typer.echo(f"nothing pinned; {_pointer_text(before)}")
        return
    typer.echo(f"unpinned; {_pointer_text(model_store.unpin())}")


@online_app.command("replay")
def replay_cmd(
    file: Annotated[Path, typer.Argument(help="Labelled candidate sets (JSON Lines)")],
    refit_every: Annotated[int, typer.Option(help="Refit after this many new queries")] = 50,
    seed: Annotated[int, typer.Option(help="Seed of the random stream order")] = 0,
    window: Annotated[int | None, typer.Option(help="Refit window in queries (default: everything seen)")] = None,
    verifiers: Annotated[str | None, typer.Option(help="Verifiers to compute (profile or names); default: the "
                                                       "file's scores, else answer agreement")] = None,
    cache: Annotated[Path | None, typer.Option(help="Score cache file (default: .cache/scores-<file>.jsonl)")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG: accuracy and per-verifier estimated rates "
                                                   "against queries seen")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Stream a labelled file through the online learner one query at a time (labels only evaluate)."""
    from models.online.replay import replay
    from service.cli.common import build_queries, load_sets, score_cache

    sets = load_sets(file)
    cache = score_cache(file, verifiers, cache)
    queries, source = build_queries(sets, verifiers, cache)
    labels = [cs.labels for cs in sets]
    if any(y is None for y in labels):
        typer.echo("error: replay needs labelled candidates (`correct`) to measure accuracy", err=True)
        raise typer.Exit(2)
    result = replay(queries, labels, refit_every=refit_every, seed=seed, window=window)
    summary = {
        "file": str(file), "scores": source, "queries": len(queries), "refit_every": refit_every, "seed": seed,
        "online_accuracy": result.online_accuracy, "offline_accuracy": result.offline_accuracy,
        "prequential_accuracy": result.prequential_accuracy,
        "refits": [{"seen": p.seen, "outcome": p.outcome, "reasons": list(p.reasons), "version": p.version,
                    "whole_set_accuracy": p.whole_set_accuracy, "drift": None if math.isnan(p.drift) else p.drift,
                    "estimated_accuracy": p.estimated_accuracy} for p in result.points],
    }
    if plot is not None:
        write_replay_plot(result, plot, title=f"{file.name}: online refits every {refit_every} queries")
        summary["plot"] = str(plot)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(f"scores: {source}")
    for p in result.points:
        typer.echo(f"after {p.seen:5d} queries: {p.outcome:9s} serving {p.version}  whole-set accuracy "
                   f"{100 * p.whole_set_accuracy:.1f}%  prequential {100 * p.prequential_accuracy:.1f}%"
                   + (f"  ({'; '.join(p.reasons)})" if p.reasons else ""))
    typer.echo(f"online model: {100 * result.online_accuracy:.1f}%  offline fit on all: "
               f"{100 * result.offline_accuracy:.1f}%  prequential (served online): "
               f"{100 * result.prequential_accuracy:.1f}%")
    if plot is not None:
        typer.echo(f"wrote {plot}")


def write_replay_plot(result: Any, path: Path, title: str = "", n_queries: int | None = None) -> None:
    from models.eval_plots import replay_figure

    replay_figure(result, n_queries if n_queries is not None else len(result.order), path, title)


def register(app: typer.Typer) -> None:
    """Add ``weaver models ...`` and ``weaver online ...`` to the main CLI."""
    app.add_typer(models_app, name="models")
    app.add_typer(online_app, name="online")
