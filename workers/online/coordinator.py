"""Distributed refits: any replica may refit, exactly one does at a time (a leased Redis lock).

Each replica polls the shared refit state; when the policy says a refit is due it tries the lock.
The winner re-checks (another replica may just have finished), reads the window from the stream,
fits while renewing its lease, judges the fit with the guardrails against the serving version and
publishes it only if the lease is still its own. Killed mid-fit, it publishes nothing; the lease
runs out and the next replica to poll refits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from models.online import OnlineConfig, RefitOutcome, refit, version_info
from models.weaver import WeaverModel
from workers.online.keys import OnlineKeys
from workers.online.lock import RefitLock
from workers.online.metrics import OnlineMetrics
from workers.online.redis_log import RedisScoreLog
from workers.online.store import LeaseLost, RedisModelStore

log = logging.getLogger("weaver.online")


class DistributedRefitter:
    def __init__(
        self,
        client: redis.Redis,
        keys: OnlineKeys,
        config: OnlineConfig,
        replica_id: str,
        lease_ms: int = 10000,
        poll_s: float = 0.5,
        metrics: OnlineMetrics | None = None,
        before_publish: Callable[[WeaverModel], None] | None = None,
        on_outcome: Callable[[RefitOutcome], None] | None = None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.config = config
        self.replica_id = replica_id
        self.poll_s = poll_s
        self.metrics = metrics
        self.before_publish = before_publish  # runs after the fit, before publication (tests stall here)
        self.on_outcome = on_outcome
        self.log = RedisScoreLog(client, keys)
        self.store = RedisModelStore(client, keys)
        self.lock = RefitLock(client, keys.lock, lease_ms)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cache: tuple[str, WeaverModel] | None = None
        self._initialised = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"weaver-refitter-{self.replica_id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        warned = False
        while not self._stop.is_set():
            try:
                self.step()
                warned = False
            except redis.RedisError as exc:
                if not warned:  # once per outage, not once per poll
                    log.warning("replica %s: Redis error during refit polling: %s", self.replica_id, exc)
                    warned = True
            except Exception:  # noqa: BLE001 - a failed fit must not kill the loop
                log.exception("replica %s: refit failed", self.replica_id)
            self._stop.wait(self.poll_s)

    def due(self) -> bool:
        if not self._initialised:  # the seconds-based policy counts from the first replica's start
            self.client.hsetnx(self.keys.fit_state, "last_fit_time", repr(time.time()))
            self._initialised = True
        state = self.client.hgetall(self.keys.fit_state)
        seen_at = int(state.get(b"seen_at_last_fit", 0))
        last_time = float(state.get(b"last_fit_time", time.time()))
        return self.config.policy.due(self.log.seen() - seen_at, time.time() - last_time)

    def step(self) -> RefitOutcome | None:
        """One poll: refit if due and the lock is free. Returns the outcome of a refit it ran."""
        if not self.due() or not self.lock.acquire():
            return None
        try:
            if not self.due():  # someone else finished while we were taking the lock
                return None
            return self._refit_locked()
        finally:
            self.lock.release()

    def _serving(self) -> WeaverModel | None:
        version = self.store.current()
        if version is None:
            return None
        if self._cache is None or self._cache[0] != version:
            self._cache = (version, self.store.get(version))
        return self._cache[1]

    def _refit_locked(self) -> RefitOutcome | None:
        seen = self.log.seen()
        records = self.log.window(self.config.policy.window)
        if not records:
            return None
        self.client.hset(self.keys.fit_state, mapping={"fitting": self.replica_id, "fit_started": repr(time.time())})
        renewing = threading.Event()
        lost = threading.Event()

        def renew() -> None:
            while not renewing.wait(self.lock.lease_ms / 3000):
                if not self.lock.renew():
                    lost.set()
                    return

        renewer = threading.Thread(target=renew, name="weaver-refit-lease", daemon=True)
        renewer.start()
        try:
            previous = self._serving()
            outcome = refit(records, previous, self.config.weaver, self.config.guardrails, self.config.policy.by_task)
            if outcome.published and self.before_publish is not None:
                self.before_publish(outcome.model)
        finally:
            renewing.set()
            renewer.join()
        if lost.is_set():
            log.warning("replica %s lost the refit lease mid-fit; discarding the fit", self.replica_id)
            return None
        if outcome.published:
            info = version_info(outcome.model, 0, "refit", outcome.n_queries, outcome.drift.distance,
                                note=f"fitted by {self.replica_id}", task_drift=outcome.task_drift)
            try:
                published = self.store.publish(outcome.model, info, self.config.pin_policy,
                                               min(r.timestamp for r in records), lock_token=self.lock.token)
            except LeaseLost:
                log.warning("replica %s: lease lost before publication; discarding the fit", self.replica_id)
                return None
            if published is None:
                pointer = self.store.pointer()
                outcome = outcome.held(f"v{pointer.sequence if pointer else 0} pinned by a rollback "
                                       f"(pin_policy {self.config.pin_policy})")
                log.info("replica %s: refit on %d queries passed its guardrails but %s", self.replica_id,
                         outcome.n_queries, outcome.reasons[0])
            else:
                log.info("replica %s published model v%d (%s) on %d queries, drift %s", self.replica_id,
                         published.sequence, outcome.model.version, outcome.n_queries, published.drift)
        else:
            log.warning("replica %s rejected a refit on %d queries: %s", self.replica_id, outcome.n_queries,
                        "; ".join(outcome.reasons))
        self.client.hset(self.keys.fit_state, mapping={
            "seen_at_last_fit": seen, "last_fit_time": repr(time.time()), "last_outcome": outcome.outcome,
            "last_reasons": "; ".join(outcome.reasons), "fitting": "", "last_fitted_by": self.replica_id,
        })
        if self.metrics is not None:
            self.metrics.refitted(outcome)
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        return outcome
