"""Prometheus view of a worker's verifier batchers: batch sizes, score-cache hits, deduplication.

A custom collector reads the batchers' live counters at scrape time, so the hot path pays nothing and
the same numbers appear wherever the worker runs: in the gateway process (embedded mode) or behind
``weaver worker --metrics-port`` (distributed mode). Mean batch size per verifier is
``rate(weaver_verifier_batched_items_total) / rate(weaver_verifier_batches_total)``.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from workers.batching import BatcherStats


class HasBatcherStats(Protocol):
    def batcher_stats(self) -> dict[str, BatcherStats]: ...


# (metric name without _total, help, BatcherStats field)
COUNTERS = (
    ("weaver_verifier_items", "Items (candidates or candidate groups) submitted to a verifier", "items"),
    ("weaver_verifier_batches", "Forward batches a verifier ran", "batches"),
    ("weaver_verifier_batched_items", "Items that went through a verifier batch (sum of batch sizes)", "batched_items"),
    ("weaver_score_cache_hits", "Verifier items answered from the score cache", "cache_hits"),
    ("weaver_verifier_deduplicated_items", "Items that joined an identical queued or running item", "deduped"),
)


class BatcherCollector(Collector):
    """Sums the counters of every tracked worker (normally one per process)."""

    def __init__(self) -> None:
        self._workers: weakref.WeakSet[HasBatcherStats] = weakref.WeakSet()

    def track(self, worker: HasBatcherStats) -> None:
        self._workers.add(worker)

    def collect(self) -> Iterator[Metric]:
        totals: dict[str, dict[str, int]] = {}
        for worker in list(self._workers):
            for verifier, stats in worker.batcher_stats().items():
                row = totals.setdefault(verifier, dict.fromkeys((field for _, _, field in COUNTERS), 0))
                for _, _, field in COUNTERS:
                    row[field] += int(getattr(stats, field))
        for name, help_text, field in COUNTERS:
            family = CounterMetricFamily(name, help_text, labels=["verifier"])
            for verifier, row in sorted(totals.items()):
                family.add_metric([verifier], row[field])
            yield family

    def describe(self) -> Iterator[Metric]:
        for name, help_text, _ in COUNTERS:
            yield CounterMetricFamily(name, help_text, labels=["verifier"])


COLLECTOR = BatcherCollector()
with contextlib.suppress(ValueError):  # merge stop-gap: the gateway's WorkerStatsCollector exports these names
    REGISTRY.register(COLLECTOR)


def track_worker(worker: HasBatcherStats) -> None:
    """Expose ``worker``'s batcher counters on this process's default Prometheus registry."""
    COLLECTOR.track(worker)
