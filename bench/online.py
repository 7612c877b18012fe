"""Online-learning benchmark: what a refit costs, and how fast a published version reaches replicas.

    python bench/online.py [--redis-url redis://127.0.0.1:6379/0] [--publications 20]

1. Refit (fit + guardrails + drift) on windows of 1,000 / 5,000 / 20,000 queries x 8 candidates x 12
   verifiers from ``models.simulate`` (synthetic scores: this measures time, not accuracy).
2. Score-log append (XADD MAXLEN ~ + INCR) per record, on a real Redis.
3. Publication -> swap latency: one publisher, four subscribers (own connections, threads), the time
   from ``publish`` returning to each subscriber's callback holding the fully built model.
4. Memory the embedded feedback book keeps per request (``online.feedback_capacity`` of them at most):
   traced Python allocations of 100,000 recorded requests (uuid ids, four aggregators' selections, the
   candidate count), as the service records them, divided by their number.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from models.online import ScoreRecord, records_from_matrices, refit, version_info  # noqa: E402
from models.simulate import simulate  # noqa: E402


def bench_refit() -> list[tuple[str, str]]:
    rows = []
    sim = simulate(20000, 8, 12, seed=0)
    matrices = [cs.score_matrix(sim.verifier_names) for cs in sim.sets]
    previous = None
    for size in (1000, 5000, 20000):
        records = records_from_matrices(matrices[:size], sim.verifier_names)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            outcome = refit(records, previous, by_task=False)
            times.append(time.perf_counter() - start)
        previous = outcome.model
        rows.append((f"refit on {size:,} queries ({size * 8:,} candidates x 12 verifiers)",
                     f"{1000 * statistics.median(times):.1f} ms ({outcome.outcome})"))
    return rows


def bench_redis(url: str, publications: int) -> list[tuple[str, str]]:
    import redis

    from workers.online.keys import OnlineKeys
    from workers.online.redis_log import RedisScoreLog
    from workers.online.store import RedisModelStore
    from workers.online.subscriber import ModelSubscriber

    client = redis.Redis.from_url(url)
    keys = OnlineKeys(f"bench-online-{uuid.uuid4().hex[:8]}")
    rows = []
    try:
        log = RedisScoreLog(client, keys, maxlen=10000)
        record = ScoreRecord(np.random.default_rng(0).random((8, 12)), tuple(f"v{j}" for j in range(12)))
        n = 2000
        start = time.perf_counter()
        for _ in range(n):
            log.append(record)
        rows.append(("score-log append (XADD MAXLEN ~ + INCR, 8x12 matrix)",
                     f"{1e6 * (time.perf_counter() - start) / n:.0f} us"))

        sim = simulate(2000, 8, 12, seed=1)
        matrices = [cs.score_matrix(sim.verifier_names) for cs in sim.sets]
        models = [refit(records_from_matrices(matrices[i * 100:(i + 1) * 100 + 500], sim.verifier_names), None,
                        by_task=False).model for i in range(publications)]
        arrivals: dict[str, list[float]] = {}
        lock = threading.Lock()

        def on_model(model):  # type: ignore[no-untyped-def]
            with lock:
                arrivals.setdefault(model.version, []).append(time.time())

        subscribers = [ModelSubscriber(redis.Redis.from_url(url), keys, on_model, poll_s=60, name=f"s{i}")
                       for i in range(4)]
        for s in subscribers:
            s.start()
        time.sleep(0.5)
        store = RedisModelStore(client, keys)
        latencies = []
        for model in models:
            published = time.time()
            store.publish(model, version_info(model, 0, "refit", 600))
            deadline = time.time() + 5
            while len(arrivals.get(model.version, [])) < len(subscribers) and time.time() < deadline:
                time.sleep(0.001)
            latencies += [t - published for t in arrivals.get(model.version, [])]
        for s in subscribers:
            s.stop()
        lat = sorted(latencies)
        rows.append((f"publish -> swap, 4 subscribers x {publications} versions",
                     f"median {1000 * statistics.median(lat):.1f} ms, max {1000 * lat[-1]:.1f} ms "
                     f"({len(lat)}/{4 * publications} arrived)"))
    finally:
        for key in client.scan_iter(f"{keys.prefix}:*"):
            client.delete(key)
    return rows


def bench_feedback_memory(requests: int = 100_000) -> list[tuple[str, str]]:
    import gc
    import tracemalloc

    from models.online.feedback import OnlineAccuracy

    book = OnlineAccuracy(capacity=requests)
    ids = [uuid.uuid4().hex for _ in range(requests)]  # the job ids the service keys the book by
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i, request_id in enumerate(ids):
        book.record(request_id, {"first": 0, "mean": i % 4, "majority": (i + 1) % 4, "weaver": i % 4}, 4)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per_request = (after - before + sum(sys.getsizeof(i) for i in ids)) / requests
    return [(f"feedback book, embedded: memory per request kept ({requests:,} requests)",
             f"{per_request:.0f} bytes ({per_request * requests / 2**20:.1f} MiB for {requests:,})")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--publications", type=int, default=20)
    args = parser.parse_args()
    rows = bench_refit() + bench_redis(args.redis_url, args.publications) + bench_feedback_memory()
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement'.ljust(width)} | result")
    print(f"{'-' * width}-|-------")
    for name, value in rows:
        print(f"{name.ljust(width)} | {value}")


if __name__ == "__main__":
    main()
