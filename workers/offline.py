"""Offline scoring of candidate-set files (``weaver eval/fit --verifiers``).

Runs the configured verifiers over every (prompt, candidate) through the same batchers as the
worker, with a JSON Lines score cache keyed like the online cache (verifier name + version, prompt
hash, candidate hash), so a rerun is instant and an interrupted run resumes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from workers.batching import VerifierBatcher
from workers.cache import JsonlScoreCache, ScoreCache
from workers.config import WorkerConfig
from workers.verifiers import GroupItem, PairItem, Verifier, build_verifier

OFFLINE_BATCH_TIMEOUT_S = 3600.0


def resolve_verifier_spec(spec: str, config: WorkerConfig) -> list[str]:
    """A profile name (e.g. ``cpu-default``) or comma-separated verifier names."""
    if spec in config.profiles:
        return list(config.profiles[spec])
    names = [n.strip() for n in spec.split(",") if n.strip()]
    known = {v.name for v in config.verifiers}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"unknown verifiers {', '.join(unknown) or spec!r}; profiles: "
                         f"{', '.join(config.profiles)}; verifiers: {', '.join(sorted(known))}")
    return names


def score_candidate_sets(sets: Sequence[Any], verifiers_spec: str, cache_path: str | Path | None = None,
                         config: WorkerConfig | None = None, progress: bool = True,
                         timings: dict[str, float] | None = None,
                         batch_timeout_s: float = OFFLINE_BATCH_TIMEOUT_S) -> tuple[list[str], list[np.ndarray]]:
    """Score matrices (candidates x verifiers, NaN = abstain/failed) for each candidate set.

    ``sets`` are ``models.data.CandidateSet`` objects (prompt, candidates with ``.text``, ``context``
    when present). ``timings`` (optional) receives seconds spent per verifier. Per-batch timeouts are
    raised to ``batch_timeout_s``: online timeouts protect latency, an offline run wants its scores.
    """
    config = config or WorkerConfig.default()
    names = resolve_verifier_spec(verifiers_spec, config)
    columns = asyncio.run(_score_all(sets, names, config, cache_path, progress,
                                     timings if timings is not None else {}, batch_timeout_s))
    matrices = [np.column_stack([columns[name][i] for name in names]) for i in range(len(sets))]
    return names, matrices


async def _score_all(sets: Sequence[Any], names: list[str], config: WorkerConfig, cache_path: str | Path | None,
                     progress: bool, timings: dict[str, float], batch_timeout_s: float) -> dict[str, list[np.ndarray]]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    cache: ScoreCache | None = JsonlScoreCache(cache_path) if cache_path else None
    out: dict[str, list[np.ndarray]] = {}
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=Console(stderr=True), disable=not progress, transient=False) as bar:
            for name in names:
                verifier = build_verifier(config.spec(name))  # weights load lazily: only on a cache miss
                verifier.timeout_s = max(verifier.timeout_s, batch_timeout_s)
                start = time.perf_counter()
                out[name] = await _score_verifier(verifier, sets, cache, bar, config.spec(name).max_concurrency
                                                     or verifier.default_max_concurrency)
                timings[name] = time.perf_counter() - start
                bar.console.print(f"{name}: {timings[name]:.1f} s")
                await verifier.aclose()
    finally:
        if cache is not None:
            await cache.close()
    return out


async def _score_verifier(verifier: Verifier, sets: Sequence[Any], cache: ScoreCache | None, bar: Any,
                          max_concurrency: int) -> list[np.ndarray]:
    batcher = VerifierBatcher(verifier, cache, max_concurrency=max_concurrency)
    task = bar.add_task(f"{verifier.name:<24}", total=sum(len(cs.candidates) for cs in sets))

    async def one_set(cs: Any) -> np.ndarray:
        texts = [c.text for c in cs.candidates]
        context = getattr(cs, "context", None) or {}
        if verifier.granularity == "group":
            outcomes = await batcher.submit([GroupItem(cs.prompt, tuple(texts), context)])
            values = outcomes[0].as_floats(len(texts))
        else:
            outcomes = await batcher.submit([PairItem(cs.prompt, t, context) for t in texts])
            values = [o.as_floats(1)[0] for o in outcomes]
        bar.advance(task, len(texts))
        return np.array(values, dtype=float)

    try:
        return list(await asyncio.gather(*(one_set(cs) for cs in sets)))
    finally:
        await batcher.close()
