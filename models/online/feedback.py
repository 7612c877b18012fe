"""Online evaluation from feedback: which aggregator would have been right on labelled traffic.

Every request's selection is computed by every label-free aggregator (the shadow baselines), and
kept for a while by request id. Feedback labels one candidate of one request; every aggregator that
selected that candidate gains a labelled selection (and a hit when it was correct). The labels live
here only: nothing in the refit path reads this module.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from models.aggregators import (
    Aggregator,
    FirstAggregator,
    MajorityVoteAggregator,
    MeanAggregator,
    QueryScores,
    WeaverAggregator,
)
from models.weaver import WeaverModel


def shadow_selections(query: QueryScores, model: WeaverModel | None) -> dict[str, int]:
    """The candidate each label-free aggregator selects for this query."""
    aggregators: list[Aggregator] = [FirstAggregator(), MeanAggregator()]
    if query.answers is not None:
        aggregators.append(MajorityVoteAggregator())
    if model is not None:
        aggregators.append(WeaverAggregator(model))
    return {aggregator.name: aggregator.rank(query).selected for aggregator in aggregators}


@dataclass(frozen=True)
class FeedbackResult:
    request_id: str
    known: bool  # the request's selections were still held
    duplicate: bool  # this candidate of this request was labelled before (ignored)
    credited: tuple[str, ...]  # aggregators whose selection this label judged
    n_candidates: int | None = None  # of the request, when known


class CandidateOutOfRange(ValueError):
    """Feedback named a candidate index the request did not have."""


class OnlineAccuracy:
    """In-memory selections (bounded, oldest forgotten) and running hit counts per aggregator."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._selections: OrderedDict[str, dict[str, int]] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self._labels: dict[str, dict[int, bool]] = {}
        self._hits: dict[str, int] = {}
        self._labelled: dict[str, int] = {}
        self._lock = threading.Lock()

    def record(self, request_id: str, selections: dict[str, int], n_candidates: int | None = None) -> None:
        with self._lock:
            self._selections[request_id] = dict(selections)
            self._selections.move_to_end(request_id)
            if n_candidates is not None:
                self._sizes[request_id] = n_candidates
            while len(self._selections) > self.capacity:
                old, _ = self._selections.popitem(last=False)
                self._labels.pop(old, None)
                self._sizes.pop(old, None)

    def feedback(self, request_id: str, candidate_index: int, correct: bool) -> FeedbackResult:
        with self._lock:
            selections = self._selections.get(request_id)
            if selections is None:
                return FeedbackResult(request_id, False, False, ())
            size = self._sizes.get(request_id)
            if size is not None and not 0 <= candidate_index < size:
                raise CandidateOutOfRange(f"candidate_index {candidate_index} is out of range: request "
                                          f"{request_id} had {size} candidates")
            labels = self._labels.setdefault(request_id, {})
            if candidate_index in labels:
                return FeedbackResult(request_id, True, True, (), size)
            labels[candidate_index] = correct
            credited = tuple(name for name, selected in selections.items() if selected == candidate_index)
            for name in credited:
                self._labelled[name] = self._labelled.get(name, 0) + 1
                self._hits[name] = self._hits.get(name, 0) + int(correct)
            return FeedbackResult(request_id, True, False, credited, size)

    def selections(self, request_id: str) -> dict[str, int] | None:
        return self._selections.get(request_id)

    def summary(self) -> dict[str, tuple[int, int]]:
        """aggregator -> (hits, labelled selections)."""
        with self._lock:
            return {name: (self._hits.get(name, 0), count) for name, count in sorted(self._labelled.items())}
