"""Helpers every ``weaver`` command group shares: failing with a one-line error, loading candidate sets,
turning them into score matrices, and formatting numbers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NoReturn

import typer


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code`` (2: bad usage or input), no traceback."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def load_sets(path: Path) -> list[Any]:
    from models.data import DataError, load_candidate_sets

    if path.is_dir():
        found = sorted(path.glob("*.jsonl"))[:3]
        hint = f": one of {', '.join(str(f) for f in found)}" if found else ""
        fail(f"{path} is a directory; give a candidate-set file (JSON Lines){hint}")
    try:
        return load_candidate_sets(path)
    except DataError as exc:
        fail(str(exc))


def score_cache(file: Path, verifiers: str | None, cache: Path | None) -> Path | None:
    """The score cache a command reads and fills: ``cache`` when given, else ``.cache/scores-<file>.jsonl``
    whenever verifiers are computed (answer agreement alone is free), so eval, fit, cascade and replay on
    one file share the scores a slow verifier (the judge) computed once."""
    if cache is None and verifiers not in (None, "answer_agreement"):
        return Path(".cache") / f"scores-{file.stem}.jsonl"
    return cache


def build_queries(sets: list[Any], verifiers: str | None, cache: Path | None) -> tuple[list[Any], str]:
    """Score matrices for each set: precomputed scores when present, else computed verifiers.

    Returns the QueryScores list and a sentence saying where the scores came from.
    """
    import numpy as np

    from models.aggregators import QueryScores
    from models.answers import agreement_shares, extract_answer

    answers = [tuple(extract_answer(c.text) for c in cs.candidates) for cs in sets]
    names: list[str] = []
    for cs in sets:
        for name in cs.score_names():
            if name not in names:
                names.append(name)
    if verifiers is None and names:
        matrices = [cs.score_matrix(names) for cs in sets]
        source = f"precomputed scores in the file ({len(names)} verifiers)"
    elif verifiers is None or verifiers == "answer_agreement":
        names = ["answer_agreement"]
        matrices = [np.array(agreement_shares(a), dtype=float)[:, None] for a in answers]
        source = "answer agreement computed from extracted final answers"
    else:
        from workers.offline import score_candidate_sets

        names, matrices = score_candidate_sets(sets, verifiers, cache_path=cache)
        source = f"verifiers {', '.join(names)} (cache: {cache})"
    queries = [
        QueryScores(matrix=m, verifier_names=tuple(names), answers=a, task=cs.task)
        for cs, m, a in zip(sets, matrices, answers, strict=True)
    ]
    return queries, source


def fmt(value: float | None, pct: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.1f}" if pct else f"{value:.3f}"


def nan_labels(n: int) -> Any:
    import numpy as np

    return np.full(n, np.nan)


def jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
