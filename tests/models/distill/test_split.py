"""Splits are by query: no query id and no prompt ever occurs on two sides."""

from __future__ import annotations

import numpy as np
import pytest

from models.aggregators import QueryScores
from models.answers import agreement_shares, extract_answer
from models.data import load_candidate_sets
from models.distill.dataset import DistillQuery, QuerySplit, build_distill_queries, split_by_query, teacher_and_split
from models.weaver import WeaverModel


def _query(qid: str, prompt: str, n: int = 4) -> DistillQuery:
    return DistillQuery(qid, prompt, tuple(f"{prompt} answer {i}" for i in range(n)), np.linspace(0.1, 0.9, n))


def test_no_query_crosses_the_split_on_the_dev_set(dev_set_path):
    sets = load_candidate_sets(dev_set_path)
    queries = build_distill_queries(sets, [np.full(len(cs.candidates), 0.5) for cs in sets])
    split = split_by_query(queries, val_fraction=0.15, test_fraction=0.3, seed=3)
    parts = [split.train, split.val, split.test]
    ids = [{q.id for q in part} for part in parts]
    prompts = [{q.prompt for q in part} for part in parts]
    for a in range(3):
        for b in range(a + 1, 3):
            assert not ids[a] & ids[b]
            assert not prompts[a] & prompts[b]
    # every pair of a query lands with its query, and nothing is lost
    assert sum(len(p) for p in parts) == len(sets)
    for part in parts:
        for query in part:
            assert {p.query_id for p in query.pairs()} == {query.id}
    assert len(split.test) == round(0.3 * len(sets))


def test_duplicate_prompts_under_different_ids_stay_together():
    queries = [_query(f"q{i}", f"problem {i % 10}") for i in range(40)]  # each prompt 4 times
    queries += [_query("q0", "same id, another prompt")]  # duplicate id, different prompt
    for seed in range(5):
        split = split_by_query(queries, val_fraction=0.2, test_fraction=0.2, seed=seed)
        sides = {}
        for name, part in (("train", split.train), ("val", split.val), ("test", split.test)):
            for q in part:
                assert sides.setdefault(q.prompt.lower(), name) == name
                assert sides.setdefault(q.id, name) == name
        assert sum(len(p) for p in (split.train, split.val, split.test)) == len(queries)


def test_check_disjoint_rejects_a_leaking_split():
    a, b = _query("a", "p1"), _query("b", "P1 ")  # same prompt up to case and whitespace
    with pytest.raises(ValueError, match="both"):
        QuerySplit([a], [b], []).check_disjoint()


def test_teacher_length_is_checked():
    with pytest.raises(ValueError):
        DistillQuery("x", "p", ("a", "b"), np.array([0.5]))


def test_teacher_and_split_never_fits_on_test_queries(dev_set_path):
    """The one split helper shared by `weaver distill` and the benchmarks: the teacher sees train (+ val) only."""
    sets = load_candidate_sets(dev_set_path)
    scored = []
    for cs in sets:
        answers = tuple(extract_answer(c.text) for c in cs.candidates)
        scored.append(QueryScores(np.array(agreement_shares(answers), dtype=float)[:, None], ("answer_agreement",),
                                  answers, cs.task))
    with_val = teacher_and_split(sets, scored, 0.1, 0.3, seed=0)
    train_only = teacher_and_split(sets, scored, 0.1, 0.3, seed=0, fit_on_val=False)
    assert [q.id for q in with_val.test] == [q.id for q in train_only.test]  # the split ignores the scores
    by_id = {cs.id: q for cs, q in zip(sets, scored, strict=True)}
    expected = WeaverModel.fit([by_id[q.id].matrix for q in train_only.train], ("answer_agreement",))
    assert train_only.teacher.version == expected.version
    given = teacher_and_split(sets, scored, 0.1, 0.3, seed=0, teacher=expected)
    assert given.teacher is expected
    assert np.allclose(given.val[0].teacher, train_only.val[0].teacher)
