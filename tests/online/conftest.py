"""Fixtures for the online tests: the dev set scored by real verifiers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.aggregators import QueryScores
from models.data import load_candidate_sets

from .real_scores import score_sets


@pytest.fixture(scope="session")
def dev_scored(dev_set_path: Path) -> tuple[list[QueryScores], list[np.ndarray]]:
    """(queries, labels) of the dev set with real verifier scores computed from the candidate texts."""
    sets = load_candidate_sets(dev_set_path)
    names, matrices = score_sets(sets)
    queries = [QueryScores(matrix=m, verifier_names=names, task=cs.task) for cs, m in zip(sets, matrices, strict=True)]
    return queries, [cs.labels for cs in sets]
