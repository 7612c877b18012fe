"""Every replica follows the published version: pub/sub for speed, a pointer poll for safety.

The new model is fully built (artifact parsed, arrays prepared) before the callback swaps one
reference, so a request sees either the old model or the new one, never half of either.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from models.weaver import WeaverModel
from workers.online.keys import OnlineKeys
from workers.online.store import RedisModelStore

log = logging.getLogger("weaver.online")

SwapCallback = Callable[[WeaverModel], None]


class ModelSubscriber:
    def __init__(self, client: redis.Redis, keys: OnlineKeys, on_model: SwapCallback,
                 poll_s: float = 2.0, name: str = "replica") -> None:
        self.client = client
        self.keys = keys
        self.on_model = on_model
        self.poll_s = poll_s
        self.name = name
        self.store = RedisModelStore(client, keys)
        self.version: str | None = None
        self.swapped_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Load the current version now (if any), then follow announcements in a daemon thread."""
        try:
            self.sync()
        except redis.RedisError:
            log.warning("replica %s: Redis unreachable at start; following once it answers", self.name)
        self._thread = threading.Thread(target=self._run, name=f"weaver-model-subscriber-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def sync(self, version: str | None = None) -> bool:
        """Swap to ``version`` (default: the pointer's) if it is not the one served; True when swapped."""
        with self._lock:
            target = version or self.store.current()
            if target is None or target == self.version:
                return False
            try:
                model = self.store.get(target)  # parsed and prepared before anything is swapped
            except Exception:  # noqa: BLE001 - a bad artifact must not stop the follower
                log.exception("replica %s could not load model version %s; keeping %s", self.name, target,
                              self.version)
                return False
            self.on_model(model)
            self.version = target
            self.swapped_at = time.time()
            log.info("replica %s now serves model version %s", self.name, target)
            return True

    def _run(self) -> None:
        warned = False
        while not self._stop.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.keys.events)
                self.sync()  # catch up on anything published while we were not subscribed
                warned = False
                last_poll = time.monotonic()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if message is not None and message.get("type") == "message":
                        # the pointer, not the message, is authoritative: announcements may overtake each other
                        self.sync()
                    if time.monotonic() - last_poll >= self.poll_s:
                        last_poll = time.monotonic()
                        self.sync()
            except redis.RedisError as exc:
                if not warned:
                    log.warning("replica %s: model subscription lost (%s); retrying", self.name, exc)
                    warned = True
                self._stop.wait(1.0)
            finally:
                pubsub.close()
