"""Lua scripts that make queue state changes atomic."""

from __future__ import annotations

# KEYS: stream, live, result, cancelled, attempts, fingerprint.
# ARGV: max depth, job JSON, job field, ttl seconds, fingerprint ('' = no Idempotency-Key), fingerprint ttl.
# Returns {status, value}: {'queued', entry id} | {'full', ''} | {'attached', ''} (a keyed job with the same id
# is waiting or running: one more waiter) | {'replay', result JSON} (it already finished ok) | {'mismatch', ''}
# (the key names a different request).
ENQUEUE = """
if ARGV[5] ~= '' then
  local stored = redis.call('GET', KEYS[3])
  if stored and cjson.decode(stored)['status'] == 'ok' then
    if redis.call('GET', KEYS[6]) ~= ARGV[5] then return {'mismatch', ''} end
    return {'replay', stored}
  end
  local fp = redis.call('HGET', KEYS[2], 'fp')
  if fp then
    if fp ~= ARGV[5] then return {'mismatch', ''} end
    redis.call('HINCRBY', KEYS[2], 'waiters', 1)
    return {'attached', ''}
  end
end
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  return {'full', ''}
end
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])
local id = redis.call('XADD', KEYS[1], '*', ARGV[3], ARGV[2])
redis.call('HSET', KEYS[2], 'waiters', 1, 'fp', ARGV[5], 'entry', id)
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
if ARGV[5] ~= '' then
  redis.call('SET', KEYS[6], ARGV[5], 'EX', tonumber(ARGV[6]))
end
return {'queued', id}
"""

# KEYS: live, cancelled, stream. ARGV: channel, job id, reason, ttl seconds.
# One waiter leaves. When it was the last, the job is cancelled: marked (so no worker starts it), announced
# (the worker running it stops), and its stream entry deleted (it no longer holds a queue slot). Returns 1
# when this call cancelled the job, 0 when others still wait or it already finished.
LEAVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if redis.call('HINCRBY', KEYS[1], 'waiters', -1) > 0 then
  return 0
end
local entry = redis.call('HGET', KEYS[1], 'entry')
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], ARGV[3], 'EX', tonumber(ARGV[4]))
redis.call('PUBLISH', ARGV[1], ARGV[2] .. ' ' .. ARGV[3])
if entry then
  redis.call('XDEL', KEYS[3], entry)
end
return 1
"""

# KEYS: attempts, cancelled. ARGV: attempts ttl seconds. A worker starts a job: count the attempt and read
# whether the job was cancelled while it waited, in one round trip. Returns {attempts, reason or ''}.
START_JOB = """
local attempts = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return {attempts, redis.call('GET', KEYS[2]) or ''}
"""

# KEYS: result, reply, stream, live, attempts. ARGV: result JSON, ttl seconds, group, entry id, channel, job id.
# Store the result only if none exists (the first answer wins), hand one copy to each waiting gateway, then
# acknowledge and delete the stream entry: acknowledgement never precedes the stored result. A job that ran
# more than once (reclaimed from a stalled worker) is announced as superseded, so the other copy stops.
FINISH_JOB = """
local stored = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', tonumber(ARGV[2]))
if stored then
  local waiters = tonumber(redis.call('HGET', KEYS[4], 'waiters') or '1')
  for _ = 1, math.max(waiters, 1) do
    redis.call('RPUSH', KEYS[2], ARGV[1])
  end
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2]))
  if tonumber(redis.call('GET', KEYS[5]) or '1') > 1 then
    redis.call('PUBLISH', ARGV[5], ARGV[6] .. ' superseded')
  end
end
redis.call('DEL', KEYS[4])
redis.call('XACK', KEYS[3], ARGV[3], ARGV[4])
redis.call('XDEL', KEYS[3], ARGV[4])
if stored then return 1 end
return 0
"""

# KEYS: stream. ARGV: group, entry id. Drop a job nobody waits for (cancelled or past its deadline).
DROP = """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""

# KEYS: stream, live. ARGV: group, entry id, job JSON, job field. Hand a job back: re-enqueue it and drop our
# claim; its waiters' record follows it to the new entry.
HAND_BACK = """
local id = redis.call('XADD', KEYS[1], '*', ARGV[4], ARGV[3])
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HSET', KEYS[2], 'entry', id)
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""
