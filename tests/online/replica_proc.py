"""One serving replica (a gateway or a worker process) running online learning against Redis.

Started by test_distributed.py as a separate process. It reports the version it serves (and when
it swapped) to a test hash, and (the first to fit while the test's stall key exists) stalls after fitting and
before publishing, so the test can kill it mid-fit.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time

import redis

from workers.online.runtime import OnlineRuntime
from workers.online.settings import OnlineSettings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--replica", required=True)
    parser.add_argument("--refit-every", type=int, default=50)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format=f"[{args.replica}] %(message)s")
    report = redis.Redis.from_url(args.redis_url)
    serving_key, refits_key, stall_key = (f"{args.prefix}:test:serving", f"{args.prefix}:test:refits",
                                          f"{args.prefix}:test:stall")
    settings = OnlineSettings(mode="redis", redis_url=args.redis_url, prefix=args.prefix,
                              refit_every_queries=args.refit_every, refit_every_seconds=3600, lock_lease_ms=1000,
                              poll_s=0.05, by_task=False)
    online = OnlineRuntime(settings, replica_id=args.replica, registry=None)

    def serving(model: object) -> None:
        report.hset(serving_key, args.replica, json.dumps({"version": online.holder.model.version,  # type: ignore[union-attr]
                                                            "at": time.time()}))

    def stall(model: object) -> None:
        """The first replica to fit while the stall key exists hangs here until it is killed."""
        if report.exists(stall_key) and report.set(f"{stall_key}:claimed", args.replica, nx=True):
            report.rpush(f"{args.prefix}:test:fitting", args.replica)
            while True:
                time.sleep(0.05)

    online.holder.listeners.append(serving)
    online.backend.refitter.before_publish = stall
    online.backend.refitter.on_outcome = lambda outcome: report.rpush(refits_key, json.dumps(
        {"replica": args.replica, "outcome": outcome.outcome, "version": outcome.model.version}))
    online.start()
    report.hset(serving_key, args.replica, json.dumps({"version": None, "at": time.time()}))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    online.close()


if __name__ == "__main__":
    main()
