"""Feedback bookkeeping shared by every gateway: selections and label counts in Redis.

Same semantics as ``models.online.feedback.OnlineAccuracy``; selections expire after ``ttl_s``.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from models.online.feedback import CandidateOutOfRange, FeedbackResult
from workers.online.keys import OnlineKeys

_FEEDBACK = """
local raw = redis.call('GET', KEYS[1])
if not raw then return cjson.encode({known=false, duplicate=false, credited={}}) end
local entry = cjson.decode(raw)
local n = tonumber(entry['n'])
if n and n >= 0 and (tonumber(ARGV[1]) < 0 or tonumber(ARGV[1]) >= n) then
  return cjson.encode({known=true, out_of_range=true, n=n, duplicate=false, credited={}})
end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then
  return cjson.encode({known=true, duplicate=true, n=n, credited={}})
end
redis.call('EXPIRE', KEYS[2], ARGV[3])
local selections = entry['selections']
local credited = {}
for name, selected in pairs(selections) do
  if tostring(selected) == ARGV[1] then
    table.insert(credited, name)
    redis.call('HINCRBY', KEYS[4], name, 1)
    redis.call('HINCRBY', KEYS[3], name, tonumber(ARGV[2]))
  end
end
return cjson.encode({known=true, duplicate=false, n=n, credited=credited})
"""


class RedisOnlineAccuracy:
    def __init__(self, client: redis.Redis, keys: OnlineKeys, ttl_s: int = 7 * 24 * 3600) -> None:
        self.client = client
        self.keys = keys
        self.ttl_s = ttl_s
        self._feedback = client.register_script(_FEEDBACK)

    def record(self, request_id: str, selections: dict[str, int], n_candidates: int | None = None) -> None:
        self.queue_record(self.client, request_id, selections, n_candidates)

    def queue_record(self, pipe: Any, request_id: str, selections: dict[str, int],
                     n_candidates: int | None = None) -> None:
        """Store the selections with ``pipe`` (a client, or a pipeline batching it with other writes)."""
        entry = {"selections": selections, "n": -1 if n_candidates is None else n_candidates}
        pipe.set(self.keys.feedback_selections(request_id), json.dumps(entry), ex=self.ttl_s)

    def selections(self, request_id: str) -> dict[str, int] | None:
        raw = self.client.get(self.keys.feedback_selections(request_id))
        return json.loads(raw)["selections"] if raw is not None else None

    def feedback(self, request_id: str, candidate_index: int, correct: bool) -> FeedbackResult:
        raw = self._feedback(
            keys=[self.keys.feedback_selections(request_id), self.keys.feedback_labels(request_id),
                  self.keys.feedback_hits, self.keys.feedback_labelled],
            args=[str(candidate_index), "1" if correct else "0", self.ttl_s],
        )
        data = json.loads(raw)
        n = data.get("n")
        size = int(n) if n is not None and int(n) >= 0 else None
        if data.get("out_of_range"):
            raise CandidateOutOfRange(f"candidate_index {candidate_index} is out of range: request {request_id} "
                                      f"had {size} candidates")
        credited = data["credited"] if isinstance(data["credited"], list) else []  # cjson encodes {} for empty
        return FeedbackResult(request_id, bool(data["known"]), bool(data["duplicate"]), tuple(sorted(credited)), size)

    def summary(self) -> dict[str, tuple[int, int]]:
        hits = {_text(k): int(v) for k, v in self.client.hgetall(self.keys.feedback_hits).items()}
        labelled = {_text(k): int(v) for k, v in self.client.hgetall(self.keys.feedback_labelled).items()}
        return {name: (hits.get(name, 0), count) for name, count in sorted(labelled.items())}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
