"""The Redis building blocks on a real Redis: lease lock, fenced publication, subscriber swap, feedback."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import redis
from typer.testing import CliRunner

from models.aggregators import QueryScores
from models.online import ScoreRecord, fit_window, records_from_matrices, version_info
from models.weaver import WeaverModel
from service.cli import app
from tests.support import REDIS_URL
from workers.online.feedback import RedisOnlineAccuracy
from workers.online.keys import OnlineKeys
from workers.online.lock import RefitLock
from workers.online.redis_log import RedisScoreLog
from workers.online.store import LeaseLost, RedisModelStore
from workers.online.subscriber import ModelSubscriber

pytestmark = pytest.mark.redis


@pytest.fixture()
def client(redis_client: redis.Redis) -> redis.Redis:
    return redis_client


@pytest.fixture()
def keys(client: redis.Redis) -> Iterator[OnlineKeys]:
    k = OnlineKeys(f"test-online-{uuid.uuid4().hex[:10]}")
    yield k
    for key in client.scan_iter(f"{k.prefix}:*"):
        client.delete(key)


def _models(queries: list[QueryScores], n: int) -> list[WeaverModel]:
    return [fit_window(records_from_matrices([q.matrix for q in queries[i * 100:(i + 1) * 100]],
                                             queries[0].verifier_names), by_task=False) for i in range(n)]


def test_score_log_is_capped_and_counts(client: redis.Redis, keys: OnlineKeys) -> None:
    log = RedisScoreLog(client, keys, maxlen=100)
    for i in range(300):
        log.append(ScoreRecord(np.array([[float(i)]]), ("v",), request_id=str(i)))
    assert log.seen() == 300
    assert 100 <= len(log) < 300  # approximate trimming
    window = log.window(10)
    assert [r.request_id for r in window] == [str(i) for i in range(290, 300)]


def test_lock_lease_is_exclusive_and_token_checked(client: redis.Redis, keys: OnlineKeys) -> None:
    a, b = RefitLock(client, keys.lock, lease_ms=300), RefitLock(client, keys.lock, lease_ms=300)
    assert a.acquire()
    assert not b.acquire()
    assert a.renew()
    time.sleep(0.4)  # a stops renewing (as if killed): the lease runs out
    assert b.acquire()
    assert not a.renew() and not a.release()  # a's token no longer holds the lock
    assert b.holder_token() == b.token
    assert b.release()
    assert client.get(keys.lock) is None


def test_publication_is_fenced_by_the_lock(
    client: redis.Redis, keys: OnlineKeys, dev_scored: tuple[list[QueryScores], list[np.ndarray]],
) -> None:
    (model,) = _models(dev_scored[0], 1)
    store = RedisModelStore(client, keys)
    lock = RefitLock(client, keys.lock, lease_ms=200)
    assert lock.acquire()
    token = lock.token
    time.sleep(0.3)  # lease expired mid-fit
    with pytest.raises(LeaseLost):
        store.publish(model, version_info(model, 0, "refit", 100), lock_token=token)
    assert store.current() is None and store.versions() == []
    assert lock.acquire()
    info = store.publish(model, version_info(model, 0, "refit", 100), lock_token=lock.token)
    assert info.sequence == 1 and store.current() == model.version
    assert store.get(model.version).version == model.version


def test_subscriber_swaps_to_each_publication_and_rollback(
    client: redis.Redis, keys: OnlineKeys, dev_scored: tuple[list[QueryScores], list[np.ndarray]],
) -> None:
    first, second = _models(dev_scored[0], 2)
    store = RedisModelStore(client, keys)
    served: list[WeaverModel] = []
    arrived = threading.Event()

    def swap(model: WeaverModel) -> None:
        served.append(model)
        arrived.set()

    subscriber = ModelSubscriber(redis.Redis.from_url(REDIS_URL), keys, swap, poll_s=30.0, name="t")
    subscriber.start()
    try:
        time.sleep(0.3)  # subscribed
        for model in (first, second):
            arrived.clear()
            started = time.time()
            store.publish(model, version_info(model, 0, "refit", 100))
            assert arrived.wait(2.0)
            assert time.time() - started < 1.0  # pub/sub, not the 30 s poll
            assert served[-1].version == model.version
            assert served[-1].score(model.align(dev_scored[0][0].matrix, dev_scored[0][0].verifier_names))[0].shape
        arrived.clear()
        result = CliRunner().invoke(app, ["models", "rollback", "v1", "--store", REDIS_URL, "--prefix", keys.prefix])
        assert result.exit_code == 0, result.output
        assert arrived.wait(2.0)
        assert served[-1].version == first.version and store.current() == first.version
        assert [type(m) for m in served] == [WeaverModel] * 3  # only complete models reach the callback
    finally:
        subscriber.stop()


def test_redis_feedback_counts_like_memory(client: redis.Redis, keys: OnlineKeys) -> None:
    book = RedisOnlineAccuracy(client, keys)
    book.record("r1", {"weaver": 2, "first": 0, "mean": 2})
    result = book.feedback("r1", 2, True)
    assert result.known and not result.duplicate and result.credited == ("mean", "weaver")
    assert book.feedback("r1", 2, False).duplicate
    wrong = book.feedback("r1", 0, False)
    assert wrong.credited == ("first",)
    assert not book.feedback("missing", 0, True).known
    assert book.summary() == {"first": (0, 1), "mean": (1, 1), "weaver": (1, 1)}


def test_distributed_refit_rejects_a_degenerate_window(
    client: redis.Redis, keys: OnlineKeys, dev_scored: tuple[list[QueryScores], list[np.ndarray]],
) -> None:
    """A window where one verifier went constant: the refitter rejects it, the pointer stays."""
    from prometheus_client import CollectorRegistry

    from models.online import OnlineConfig, RefitPolicy
    from workers.online.coordinator import DistributedRefitter
    from workers.online.metrics import OnlineMetrics

    queries, _ = dev_scored
    registry = CollectorRegistry()
    config = OnlineConfig(policy=RefitPolicy(every_queries=100, every_seconds=3600, window=100, by_task=False))
    refitter = DistributedRefitter(client, keys, config, "r1", lease_ms=2000, metrics=OnlineMetrics(registry))
    log = RedisScoreLog(client, keys)
    for q, query in enumerate(queries[:100]):
        log.append(ScoreRecord(query.matrix, query.verifier_names, request_id=f"a{q}"))
    first = refitter.step()
    assert first is not None and first.published
    store = RedisModelStore(client, keys)
    good = store.current()
    column = queries[0].verifier_names.index("prompt_number_coverage")
    for q, query in enumerate(queries[100:200]):
        broken = query.matrix.copy()
        broken[:, column] = 0.0
        log.append(ScoreRecord(broken, query.verifier_names, request_id=f"b{q}"))
    second = refitter.step()
    assert second is not None and not second.published
    assert "verifier_lost_signal" in second.reason_codes
    assert store.current() == good and [i.sequence for i in store.versions()] == [1]
    state = client.hgetall(keys.fit_state)
    assert state[b"last_outcome"] == b"rejected" and b"prompt_number_coverage" in state[b"last_reasons"]
    assert registry.get_sample_value("weaver_model_refits_total",
                                     {"outcome": "rejected", "reason": "verifier_lost_signal"}) == 1
    assert refitter.step() is None  # not due again until new queries arrive
