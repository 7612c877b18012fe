"""Prometheus metrics the gateway (and, in embedded mode, the in-process worker) observes.

Names follow Prometheus conventions: ``weaver_`` prefix, base units, ``_total`` counters, ``_seconds``
histograms. With ``PROMETHEUS_MULTIPROC_DIR`` set (several server processes), ``/metrics`` merges every
process's samples through prometheus-client's multiprocess collector.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess
from prometheus_client.core import CounterMetricFamily

from workers.contract import ComputeInfo, JobResult
from workers.queue.base import Catalog, QueueStats

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
PROBABILITY_BUCKETS = tuple(i / 10 for i in range(1, 11))

REQUESTS = Counter(
    "weaver_requests_total",
    "API requests by endpoint, HTTP status and aggregator",
    ["endpoint", "status", "aggregator"],
)
REQUEST_LATENCY = Histogram(
    "weaver_request_duration_seconds", "End-to-end request latency", ["endpoint"], buckets=LATENCY_BUCKETS
)
QUEUE_WAIT = Histogram(
    "weaver_queue_wait_seconds", "Time a job waited before a worker started it", buckets=LATENCY_BUCKETS
)
GENERATION_LATENCY = Histogram(
    "weaver_generation_duration_seconds", "Time to sample all candidates of a job", buckets=LATENCY_BUCKETS
)
VERIFIER_LATENCY = Histogram(
    "weaver_verifier_duration_seconds", "Time one verifier took on one job", ["verifier"], buckets=LATENCY_BUCKETS
)
AGGREGATION_LATENCY = Histogram(
    "weaver_aggregation_duration_seconds", "Time to combine verifier scores and rank", buckets=LATENCY_BUCKETS
)
QUEUE_DEPTH = Gauge("weaver_queue_depth", "Jobs waiting or running", multiprocess_mode="max")
QUEUE_OLDEST_AGE = Gauge(
    "weaver_queue_oldest_pending_age_seconds", "Age of the oldest unanswered job", multiprocess_mode="max"
)
QUEUE_WORKERS = Gauge("weaver_queue_workers", "Live ready workers consuming the queue", multiprocess_mode="max")
CANDIDATES = Counter("weaver_candidates_total", "Candidates scored (sampled or supplied)", ["endpoint"])
TOKENS = Counter("weaver_tokens_total", "Tokens sampled by the generator", ["kind"])
VERIFIER_ERRORS = Counter("weaver_verifier_errors_total", "Verifier failures (scored NaN)", ["verifier"])
VERIFIER_TIMEOUTS = Counter("weaver_verifier_timeouts_total", "Verifier timeouts (scored NaN)", ["verifier"])
CONFIDENCE = Histogram(
    "weaver_selection_confidence", "Aggregator score of the selected candidate", buckets=PROBABILITY_BUCKETS
)
MARGIN = Histogram("weaver_selection_margin", "Score gap between the top two candidates", buckets=PROBABILITY_BUCKETS)
ABSTENTIONS = Counter("weaver_abstentions_total", "Requests answered with an abstention (min_confidence)", ["endpoint"])
VERIFIER_ACCURACY = Gauge(
    "weaver_verifier_estimated_accuracy",
    "Label-model estimated accuracy per verifier (last seen)",
    ["verifier"],
    multiprocess_mode="mostrecent",
)
AGGREGATOR_INFO = Gauge(
    "weaver_aggregator_info",
    "Aggregator and model version last used (value 1)",
    ["aggregator", "version"],
    multiprocess_mode="mostrecent",
)

# compute by need (workers/adaptive_job.py): what requests spent against the fixed full-N, full-ensemble policy
COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CANDIDATES_GENERATED = Histogram(
    "weaver_candidates_generated", "Candidates a chat request sampled (adaptive N may stop before n_candidates)",
    buckets=COUNT_BUCKETS,
)
VERIFIER_CALLS = Histogram(
    "weaver_verifier_calls", "(verifier, candidate) scorings one request asked for (the cascade skips some)",
    ["endpoint"], buckets=COUNT_BUCKETS,
)
COMPUTE_STOPS = Counter(
    "weaver_compute_stops_total", "Why a request stopped verifying (phase=verification) or sampling (phase=sampling)",
    ["phase", "reason"],
)
VERIFIER_COMPUTE = Counter(
    "weaver_verifier_compute_seconds_total",
    "Estimated verifier seconds (measured cost per candidate x candidates): spent, and what the full ensemble on "
    "every requested candidate would have cost (scope=full)",
    ["scope"],
)
SAMPLED = Counter(
    "weaver_sampled_candidates_total", "Chat candidates sampled (scope=generated) against those requested",
    ["scope"],
)


WORKER_SLOTS = Gauge(
    "weaver_worker_slots", "Job slots behind the queue: live workers x per-worker concurrency", multiprocess_mode="max"
)
WORKER_BUSY_SLOTS = Gauge(
    "weaver_worker_busy_slots", "Job slots in use (jobs running, at most the slots)", multiprocess_mode="max"
)


def observe_capacity(stats: QueueStats, concurrency: int) -> None:
    """Worker saturation from the queue's view: running jobs = min(depth, slots), since a free slot takes the
    next pending job at once. Busy/slots near 1 with a growing queue means: add (GPU) workers."""
    slots = stats.workers * concurrency
    WORKER_SLOTS.set(slots)
    running = stats.running if stats.running is not None else stats.depth
    WORKER_BUSY_SLOTS.set(min(running, slots))


WORKER_STAT_COUNTERS = {
    "items": ("weaver_verifier_items_total", "Candidates (or groups) submitted to a verifier's batcher"),
    "cache_hits": ("weaver_verifier_cache_hits_total", "Scores served from the score cache"),
    "cache_misses": ("weaver_verifier_cache_misses_total", "Scores the verifier had to compute"),
    "deduped": ("weaver_verifier_deduplicated_total", "Items that joined an identical queued or running item"),
    "batches": ("weaver_verifier_batches_total", "Batches run (items / batches = mean batch size)"),
    "errors": ("weaver_verifier_batch_errors_total", "Batches that failed"),
    "timeouts": ("weaver_verifier_batch_timeouts_total", "Batches that timed out"),
}


class WorkerStatsCollector:
    """Exports the workers' cumulative per-verifier batcher counters (from their self-descriptions:
    the in-process worker, or the Redis heartbeats) as Prometheus counters labelled by verifier and worker."""

    def __init__(self) -> None:
        self.snapshot: dict[str, list[dict[str, object]]] = {}

    def collect(self) -> Iterator[CounterMetricFamily]:
        families = {
            key: CounterMetricFamily(name.removesuffix("_total"), doc, labels=["verifier", "worker"])
            for key, (name, doc) in WORKER_STAT_COUNTERS.items()
        }
        for worker, verifiers in self.snapshot.items():
            for verifier in verifiers:
                stats = verifier.get("stats")
                if not isinstance(stats, dict):
                    continue
                values = {k: float(v) for k, v in stats.items() if isinstance(v, int | float)}
                if "items" in values:
                    values["cache_misses"] = max(
                        0.0, values["items"] - values.get("cache_hits", 0.0) - values.get("deduped", 0.0)
                    )
                for key, family in families.items():
                    if key in values:
                        family.add_metric([str(verifier.get("name", "")), worker], values[key])
        yield from families.values()


WORKER_STATS = WorkerStatsCollector()
REGISTRY.register(WORKER_STATS)


def observe_workers(catalog: Catalog) -> None:
    WORKER_STATS.snapshot = catalog.worker_verifiers


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def observe_result(endpoint: str, result: JobResult, abstained: bool) -> None:
    """Record everything a finished job tells: stage latencies, verifier health, selection quality, tokens."""
    timings = result.timings
    if "queue_wait" in timings:
        QUEUE_WAIT.observe(timings["queue_wait"])
    if result.generation is not None:  # rerank jobs sample nothing
        GENERATION_LATENCY.observe(timings.get("generation", result.generation.latency_s))
    if "aggregation" in timings:
        AGGREGATION_LATENCY.observe(timings["aggregation"])
    for diag in result.diagnostics:
        if diag.skipped is None:  # a verifier the cascade did not run has no latency to report
            VERIFIER_LATENCY.labels(diag.name).observe(diag.latency_s)
        # both failure counters exist (at 0) for every verifier seen, so failure ratios are 0, not absent
        errors, timeouts = VERIFIER_ERRORS.labels(diag.name), VERIFIER_TIMEOUTS.labels(diag.name)
        if diag.error:
            (timeouts if "timeout" in diag.error.lower() else errors).inc()
        if _finite(diag.estimated_accuracy):
            VERIFIER_ACCURACY.labels(diag.name).set(float(diag.estimated_accuracy or 0.0))
    CANDIDATES.labels(endpoint).inc(len(result.candidates))
    if result.generation is not None:
        TOKENS.labels("prompt").inc(result.generation.prompt_tokens)
        TOKENS.labels("completion").inc(result.generation.completion_tokens)
    if _finite(result.confidence):
        CONFIDENCE.observe(float(result.confidence or 0.0))
    if _finite(result.margin):
        MARGIN.observe(float(result.margin or 0.0))
    abstentions = ABSTENTIONS.labels(endpoint)  # exported at 0 from the first answer on
    if abstained:
        abstentions.inc()
    if result.aggregator:
        AGGREGATOR_INFO.labels(result.aggregator, result.aggregator_version or "").set(1)
    if result.compute is not None:
        observe_compute(endpoint, result.compute, sampled=result.generation is not None)


def observe_compute(endpoint: str, compute: ComputeInfo, *, sampled: bool) -> None:
    VERIFIER_CALLS.labels(endpoint).observe(compute.verifier_calls)
    COMPUTE_STOPS.labels("verification", compute.stop_reason).inc()
    VERIFIER_COMPUTE.labels("spent").inc(compute.verifier_seconds)
    VERIFIER_COMPUTE.labels("full").inc(compute.full_verifier_seconds)
    if sampled:
        CANDIDATES_GENERATED.observe(compute.candidates_generated)
        SAMPLED.labels("generated").inc(compute.candidates_generated)
        SAMPLED.labels("requested").inc(compute.candidates_requested)
    if compute.sampling_stop_reason is not None:
        COMPUTE_STOPS.labels("sampling", compute.sampling_stop_reason).inc()


def observe_request(endpoint: str, status: int, aggregator: str, seconds: float) -> None:
    REQUESTS.labels(endpoint, str(status), aggregator).inc()
    REQUEST_LATENCY.labels(endpoint).observe(seconds)


def observe_queue(stats: QueueStats) -> None:
    QUEUE_DEPTH.set(stats.depth)
    QUEUE_OLDEST_AGE.set(stats.oldest_age_s)
    QUEUE_WORKERS.set(stats.workers)


def render_metrics() -> tuple[bytes, str]:
    """Exposition text for /metrics (merged across processes in multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(registry)
        registry.register(WORKER_STATS)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
