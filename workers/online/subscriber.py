"""Every replica follows the pointer: pub/sub for speed, a pointer poll for safety.

The new model is fully built (artifact parsed, arrays prepared) before the callback swaps one
reference, so a request sees either the old model or the new one, never half of either. Any pointer
change (a new version, a rollback to a version, an unpin) reaches ``on_pointer``, so every replica's
gauges follow the store; ``on_poll`` runs at each poll (store-derived gauges that change without a
pointer move, such as online accuracy).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from models.online import Pointer
from models.weaver import WeaverModel
from workers.online.keys import OnlineKeys
from workers.online.store import RedisModelStore

log = logging.getLogger("weaver.online")

SwapCallback = Callable[[WeaverModel], None]
PointerCallback = Callable[[Pointer], None]


class ModelSubscriber:
    def __init__(self, client: redis.Redis, keys: OnlineKeys, on_model: SwapCallback,
                 poll_s: float = 2.0, name: str = "replica", on_pointer: PointerCallback | None = None,
                 on_poll: Callable[[], None] | None = None) -> None:
        self.client = client
        self.keys = keys
        self.on_model = on_model
        self.on_pointer = on_pointer
        self.on_poll = on_poll
        self.poll_s = poll_s
        self.name = name
        self.store = RedisModelStore(client, keys)
        self.version: str | None = None
        self.pointer: Pointer | None = None
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

    def sync(self) -> bool:
        """Follow the pointer: swap the model if its version changed, report any change; True on a change."""
        with self._lock:
            pointer = self.store.pointer()
            if pointer is None or pointer == self.pointer:
                return False
            if pointer.version != self.version:
                try:
                    model = self.store.get(pointer.version)  # parsed and prepared before anything is swapped
                except Exception:  # noqa: BLE001 - a bad artifact must not stop the follower
                    log.exception("replica %s could not load model version %s; keeping %s", self.name,
                                  pointer.version, self.version)
                    return False
                previous, self.pointer = self.pointer, pointer  # set first: on_model may read what it serves
                try:
                    self.on_model(model)
                except BaseException:
                    self.pointer = previous  # not applied: the next sync tries again
                    raise
                self.version = pointer.version
                self.swapped_at = time.time()
                log.info("replica %s now serves model v%d %s (%s%s)", self.name, pointer.sequence, pointer.version,
                         pointer.source, ", pinned" if pointer.pinned else "")
            self.pointer = pointer
            if self.on_pointer is not None:
                self.on_pointer(pointer)
            return True

    def poll(self) -> None:
        self.sync()
        if self.on_poll is not None:
            self.on_poll()

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
                        self.poll()
            except redis.RedisError as exc:
                if not warned:
                    log.warning("replica %s: model subscription lost (%s); retrying", self.name, exc)
                    warned = True
                self._stop.wait(1.0)
            finally:
                pubsub.close()
