"""The GSM8K dev set as the label-model benches read it: candidate sets, their final answers, and the scores of
a verifier profile from a score cache (computed into it where missing)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from models.aggregators import QueryScores


def dev_set_path() -> Path:
    """``gsm8k_gpt3_dev.jsonl`` in ``WEAVER_DATA_DIR`` (default ``../shared/data``, beside the checkout)."""
    return Path(os.environ.get("WEAVER_DATA_DIR", "../shared/data")) / "gsm8k_gpt3_dev.jsonl"


def dev_queries(scores: Path, data: Path, verifiers: str) -> tuple[list[QueryScores], list[np.ndarray | None]]:
    """One query per candidate set (scores, final answers, task) and its labels (None where it has none)."""
    from models.answers import extract_answer
    from models.data import load_candidate_sets
    from workers.offline import score_candidate_sets

    sets = load_candidate_sets(data)
    names, matrices = score_candidate_sets(sets, verifiers, cache_path=scores, progress=False)
    queries = [QueryScores(m, tuple(names), tuple(extract_answer(c.text) for c in cs.candidates), cs.task)
               for m, cs in zip(matrices, sets, strict=True)]
    return queries, [cs.labels for cs in sets]
