"""Rollback pins: the same pointer rules on every store (memory, directory, real Redis), and an embedded
learner whose store another process rolls back."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from models.aggregators import QueryScores
from models.online import (
    DirectoryModelStore,
    MemoryModelStore,
    ModelStore,
    OnlineConfig,
    OnlineLearner,
    RefitPolicy,
    ScoreRecord,
    fit_window,
    pin_allows,
    records_from_matrices,
    version_info,
)
from models.weaver import WeaverModel
from workers.online.runtime import OnlineRuntime
from workers.online.settings import OnlineSettings


def _models(queries: list[QueryScores], n: int) -> list[WeaverModel]:
    return [fit_window(records_from_matrices([q.matrix for q in queries[i * 100:(i + 1) * 100]],
                                             queries[0].verifier_names), by_task=False) for i in range(n)]


@pytest.fixture(params=["memory", "directory", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ModelStore]:
    if request.param == "memory":
        yield MemoryModelStore()
    elif request.param == "directory":
        yield DirectoryModelStore(tmp_path / "models")
    else:
        from workers.online.keys import OnlineKeys
        from workers.online.store import RedisModelStore

        client = request.getfixturevalue("redis_client")
        keys = OnlineKeys(f"test-pin-{uuid.uuid4().hex[:10]}")
        yield RedisModelStore(client, keys)  # type: ignore[misc]
        for key in client.scan_iter(f"{keys.prefix}:*"):
            client.delete(key)


def test_rollback_pins_until_unpinned_or_a_fresh_window(
    store: ModelStore, dev_scored: tuple[list[QueryScores], list[np.ndarray]],
) -> None:
    one, two, three = _models(dev_scored[0], 3)
    for model in (one, two):
        assert store.publish(model, version_info(model, 0, "refit", 100)) is not None
    assert store.pointer() is not None and store.pointer().sequence == 2  # type: ignore[union-attr]
    before = time.time()
    pointer = store.rollback(one.version)
    assert (pointer.version, pointer.sequence, pointer.source, pointer.pinned) == (one.version, 1, "rollback", True)
    assert store.pointer() == pointer
    # hold: a refit that passed its guardrails is not published, whatever its window
    assert store.publish(three, version_info(three, 0, "refit", 100), "hold", time.time() + 60) is None
    assert store.current() == one.version and [i.sequence for i in store.versions()] == [1, 2]
    # fresh_window: only a window logged entirely after the pin replaces it
    assert store.publish(three, version_info(three, 0, "refit", 100), "fresh_window", before) is None
    published = store.publish(three, version_info(three, 0, "refit", 100), "fresh_window", time.time() + 1)
    assert published is not None and published.sequence == 3
    after = store.pointer()
    assert after is not None and (after.version, after.source, after.pinned) == (three.version, "refit", False)
    # unpin: the rolled-back version keeps serving, and the next refit may replace it
    store.rollback(two.version)
    unpinned = store.unpin()
    assert unpinned is not None and unpinned.version == two.version and not unpinned.pinned
    assert unpinned.source == "rollback"  # how it came to be served
    assert store.publish(one, version_info(one, 0, "refit", 100)) is not None
    assert store.current() == one.version


def test_pin_policy_rule() -> None:
    from models.online import Pointer

    pinned = Pointer("a", 1, "rollback", 100.0, pinned=True, pinned_at=100.0)
    assert pin_allows(None, "hold", None) and pin_allows(Pointer("a", 1, "refit", 1.0), "hold", None)
    assert not pin_allows(pinned, "hold", 200.0)
    assert not pin_allows(pinned, "fresh_window", 99.0) and not pin_allows(pinned, "fresh_window", None)
    assert pin_allows(pinned, "fresh_window", 100.5)


def test_learner_respects_a_rollback_made_by_another_process(
    tmp_path: Path, dev_scored: tuple[list[QueryScores], list[np.ndarray]],
) -> None:
    """The learner's store is rolled back through a second handle on the directory (as `weaver models
    rollback` does): the learner follows it, and its next refit is held, not published over it."""
    queries, _ = dev_scored
    config = OnlineConfig(policy=RefitPolicy(every_queries=50, every_seconds=3600, window=200, by_task=False))
    learner = OnlineLearner(config, DirectoryModelStore(tmp_path / "models"))
    names = queries[0].verifier_names
    for block in range(2):
        for q in queries[block * 50:(block + 1) * 50]:
            learner.observe(ScoreRecord(q.matrix, names))
        assert learner.maybe_refit() is not None
    first, second = (i.version for i in learner.store.versions())
    assert learner.current is not None and learner.current.version == second
    DirectoryModelStore(tmp_path / "models").rollback(first)
    assert learner.sync() is not None and learner.current.version == first
    for q in queries[100:150]:
        learner.observe(ScoreRecord(q.matrix, names))
    outcome = learner.maybe_refit()
    assert outcome is not None and outcome.outcome == "held" and outcome.reason_codes == ("pinned",)
    assert learner.store.current() == first and len(learner.store.versions()) == 2


def test_embedded_service_follows_a_rollback_without_restart(
    tmp_path: Path, dev_scored: tuple[list[QueryScores], list[np.ndarray]],
) -> None:
    """OnlineRuntime (what `weaver serve` runs) swaps and re-exports its gauges within a second of a
    rollback written to its model directory by someone else, and keeps it through the next refit."""
    queries, _ = dev_scored
    registry = CollectorRegistry()
    settings = OnlineSettings(mode="embedded", refit_every_queries=50, by_task=False,
                              model_dir=str(tmp_path / "models"))
    online = OnlineRuntime(settings, replica_id="embedded", registry=registry)
    online.start()
    try:
        for q, query in enumerate(queries[:100]):
            online.observe(ScoreRecord(query.matrix, query.verifier_names, request_id=f"r{q}"))
            if q in (49, 99):
                deadline = time.time() + 20
                while registry.get_sample_value("weaver_model_version_sequence") != (q + 1) // 50:
                    assert time.time() < deadline, "refit did not publish"
                    time.sleep(0.02)
        first = online.store.versions()[0].version
        rolled = time.time()
        DirectoryModelStore(tmp_path / "models").rollback(first)
        while online.holder.model.version != first:  # type: ignore[union-attr]
            assert time.time() - rolled < 1.0, "the rollback did not take effect within a second"
            time.sleep(0.01)
        deadline = time.time() + 1
        while registry.get_sample_value("weaver_model_version_info", {"version": first, "source": "rollback"}) != 1:
            assert time.time() < deadline
            time.sleep(0.01)
        assert registry.get_sample_value("weaver_model_version_sequence") == 1
        assert registry.get_sample_value("weaver_model_pinned") == 1
        assert online.status()["pinned"] and online.status()["sequence"] == 1
        for q, query in enumerate(queries[100:150]):
            online.observe(ScoreRecord(query.matrix, query.verifier_names, request_id=f"s{q}"))
        deadline = time.time() + 20
        while registry.get_sample_value("weaver_model_refits_total", {"outcome": "held", "reason": "pinned"}) != 1:
            assert time.time() < deadline, "the refit window passed without a (held) refit"
            time.sleep(0.02)
        assert online.holder.model.version == first and len(online.store.versions()) == 2  # type: ignore[union-attr]
        online.unpin()
        assert registry.get_sample_value("weaver_model_pinned") == 0
        for q, query in enumerate(queries[150:200]):
            online.observe(ScoreRecord(query.matrix, query.verifier_names, request_id=f"t{q}"))
        deadline = time.time() + 20
        while registry.get_sample_value("weaver_model_version_sequence") != 3:
            assert time.time() < deadline, "no refit published after unpin"
            time.sleep(0.02)
        assert registry.get_sample_value("weaver_model_drift_distance", {"task": ""}) is not None
    finally:
        online.close()


def test_drift_is_recorded_and_exported_per_task(dev_scored: tuple[list[QueryScores], list[np.ndarray]]) -> None:
    """Each task model's drift is stored with the version, so every replica exports it from the store."""
    from models.online import refit
    from workers.online.metrics import OnlineMetrics

    queries, _ = dev_scored
    tasks = ["even" if i % 2 == 0 else "odd" for i in range(len(queries))]
    records = records_from_matrices([q.matrix for q in queries], queries[0].verifier_names, tasks)
    store = MemoryModelStore()
    previous = None
    for chunk in (records[:150], records[150:]):
        outcome = refit(chunk, previous, by_task=True)
        assert outcome.published, outcome.reasons
        info = version_info(outcome.model, 0, "refit", len(chunk), outcome.drift.distance,
                            task_drift=outcome.task_drift)
        store.publish(outcome.model, info)
        previous = outcome.model
    assert set(outcome.task_drift) == {"even", "odd"}
    served = store.info(outcome.model.version)
    assert served is not None and set(served.task_drift) == {"even", "odd"} and served.drift is not None
    registry = CollectorRegistry()
    metrics = OnlineMetrics(registry, drift_alarm=0.0)
    metrics.follow(outcome.model, store.pointer(), served)
    for task in ("even", "odd"):
        value = registry.get_sample_value("weaver_model_drift_distance", {"task": task})
        assert value == pytest.approx(served.task_drift[task])
        assert registry.get_sample_value("weaver_model_drift_alarm", {"task": task}) == float(value > 0.0)
    assert registry.get_sample_value("weaver_model_drift_distance", {"task": ""}) == pytest.approx(served.drift)
    assert registry.get_sample_value("weaver_model_version_sequence") == 2
