"""A refit lock with a lease: SET NX PX with a random token; release and renew check the token.

A replica that dies mid-fit stops renewing, the lease runs out and another replica may take the lock.
A replica that was paused past its lease cannot publish either: publication re-checks the token
atomically (``store.RedisModelStore.publish``).
"""

from __future__ import annotations

import secrets

import redis

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class RefitLock:
    def __init__(self, client: redis.Redis, key: str, lease_ms: int = 10000) -> None:
        self.client = client
        self.key = key
        self.lease_ms = lease_ms
        self.token: str | None = None
        self._release = client.register_script(_RELEASE)
        self._renew = client.register_script(_RENEW)

    def acquire(self) -> bool:
        token = secrets.token_hex(16)
        if self.client.set(self.key, token, nx=True, px=self.lease_ms):
            self.token = token
            return True
        return False

    def renew(self) -> bool:
        """Extend the lease; False means it was lost (expired and maybe taken by another replica)."""
        if self.token is None:
            return False
        return bool(self._renew(keys=[self.key], args=[self.token, self.lease_ms]))

    def release(self) -> bool:
        if self.token is None:
            return False
        released = bool(self._release(keys=[self.key], args=[self.token]))
        self.token = None
        return released

    def holder_token(self) -> str | None:
        value = self.client.get(self.key)
        return value.decode() if isinstance(value, bytes) else value
