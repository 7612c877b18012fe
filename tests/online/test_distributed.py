"""Acceptance: two gateways and two workers (separate processes, each with its own Redis
connections) share one score log on a real Redis. A refit is done by exactly one replica, every
replica serves the new version within a second of publication, and killing the refitting replica
mid-fit leaves the previous version serving and lets another replica refit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from models.aggregators import QueryScores
from models.online import ScoreRecord
from tests.support import REDIS_URL, ROOT, wait_until
from workers.online.keys import OnlineKeys
from workers.online.redis_log import RedisScoreLog
from workers.online.store import RedisModelStore

pytestmark = pytest.mark.redis

REPLICAS = ("gateway-1", "gateway-2", "worker-1", "worker-2")


@pytest.fixture()
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    value = f"test-online-{uuid.uuid4().hex[:10]}"
    yield value
    for key in redis_client.scan_iter(f"{value}:*"):
        redis_client.delete(key)




def _serving(client: redis.Redis, prefix: str) -> dict[str, dict]:
    return {k.decode(): json.loads(v) for k, v in client.hgetall(f"{prefix}:test:serving").items()}


def _refits(client: redis.Redis, prefix: str) -> list[dict]:
    return [json.loads(x) for x in client.lrange(f"{prefix}:test:refits", 0, -1)]


def _stream(log: RedisScoreLog, queries: list[QueryScores]) -> None:
    for q, query in enumerate(queries):
        log.append(ScoreRecord(query.matrix, query.verifier_names, request_id=f"r{q}"))


def test_two_gateways_two_workers_share_refits(
    redis_client: redis.Redis, prefix: str, dev_scored: tuple[list[QueryScores], list[np.ndarray]],
) -> None:
    queries, _ = dev_scored
    keys = OnlineKeys(prefix)
    log = RedisScoreLog(redis_client, keys)
    store = RedisModelStore(redis_client, keys)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("replica_proc.py")), "--redis-url", REDIS_URL,
             "--prefix", prefix, "--replica", name, "--refit-every", "50"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        for name in REPLICAS
    }
    try:
        wait_until(lambda: len(_serving(redis_client, prefix)) == len(REPLICAS), 60, "all replicas to start")

        # 1. a refit is done by exactly one replica; all serve the new version within a second
        _stream(log, queries[:60])
        pointer = wait_until(store.pointer, 15, "the first publication")
        time.sleep(1.5)  # time for any duplicate refit to show up
        refits = _refits(redis_client, prefix)
        assert len(refits) == 1, refits
        assert refits[0]["outcome"] == "published" and refits[0]["version"] == pointer.version
        assert len(store.versions()) == 1
        serving = _serving(redis_client, prefix)
        for name in REPLICAS:
            assert serving[name]["version"] == pointer.version, (name, serving[name])
            assert serving[name]["at"] - pointer.published_at < 1.0, (name, serving[name], pointer)
        first_version = pointer.version
        lags = [serving[n]["at"] - pointer.published_at for n in REPLICAS]
        print(f"\nfirst publication by {refits[0]['replica']}: replicas swapped after "
              + ", ".join(f"{1000 * lag:.0f} ms" for lag in lags))

        # 2. kill the refitting replica mid-fit
        redis_client.set(f"{prefix}:test:stall", "1")
        _stream(log, queries[60:120])
        staller = wait_until(lambda: redis_client.lindex(f"{prefix}:test:fitting", 0), 15, "a replica to start fitting")
        staller = staller.decode()
        procs[staller].send_signal(signal.SIGKILL)
        procs[staller].wait(timeout=10)
        assert store.current() == first_version  # nothing half-published
        for name, state in _serving(redis_client, prefix).items():
            assert state["version"] == first_version, name

        # the lease (1 s) runs out and another replica refits and publishes
        second = wait_until(lambda: (p := store.pointer()) and p.version != first_version and p, 15,
                       "another replica to refit after the kill")
        refits = wait_until(lambda: (r := _refits(redis_client, prefix)) and len(r) >= 2 and r, 5, "the refit record")
        assert len(refits) == 2, refits  # the killed replica recorded nothing
        assert refits[1]["replica"] != staller and refits[1]["version"] == second.version
        time.sleep(1.0)
        serving = _serving(redis_client, prefix)
        for name in REPLICAS:
            if name == staller:
                continue
            assert serving[name]["version"] == second.version, (name, serving[name])
            assert serving[name]["at"] - second.published_at < 1.0, (name, serving[name], second)
        assert [i.sequence for i in store.versions()] == [1, 2]
        lags = [serving[n]["at"] - second.published_at for n in REPLICAS if n != staller]
        print(f"killed {staller} mid-fit; {refits[1]['replica']} refitted; survivors swapped after "
              + ", ".join(f"{1000 * lag:.0f} ms" for lag in lags))
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for name, proc in procs.items():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            if proc.stderr is not None:
                tail = proc.stderr.read().decode()[-2000:]
                print(f"--- {name} ---\n{tail}")
