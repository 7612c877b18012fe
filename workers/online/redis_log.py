"""The distributed score log: a capped Redis Stream (approximate trimming keeps XADD O(1))."""

from __future__ import annotations

import json
from typing import Any

import redis

from models.online import ScoreRecord
from workers.online.keys import OnlineKeys


class RedisScoreLog:
    def __init__(self, client: redis.Redis, keys: OnlineKeys, maxlen: int = 10000) -> None:
        self.client = client
        self.keys = keys
        self.maxlen = maxlen

    def append(self, record: ScoreRecord) -> int:
        """Append one record; returns how many records were ever appended."""
        pipe = self.client.pipeline(transaction=True)
        self.queue_append(pipe, record)
        return int(pipe.execute()[1])

    def queue_append(self, pipe: Any, record: ScoreRecord) -> None:
        """Add the append (XADD, then INCR of the seen counter) to ``pipe``, for a caller batching writes."""
        pipe.xadd(self.keys.log, {"record": json.dumps(record.to_json())}, maxlen=self.maxlen, approximate=True)
        pipe.incr(self.keys.seen)

    def seen(self) -> int:
        value = self.client.get(self.keys.seen)
        return int(value) if value is not None else 0

    def window(self, size: int) -> list[ScoreRecord]:
        """The newest ``size`` records, oldest first."""
        entries: list[Any] = self.client.xrevrange(self.keys.log, count=size) or []
        out = []
        for _entry_id, fields in reversed(entries):
            raw = (fields or {}).get(b"record")
            if raw is not None:
                out.append(ScoreRecord.from_json(json.loads(raw)))
        return out

    def __len__(self) -> int:
        return int(self.client.xlen(self.keys.log))
