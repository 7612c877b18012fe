"""Lua scripts that make queue state changes atomic."""

from __future__ import annotations

# KEYS: stream. ARGV: max depth, job JSON, job field. Returns the entry id, or false when full.
ENQUEUE_BOUNDED = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  return false
end
return redis.call('XADD', KEYS[1], '*', ARGV[3], ARGV[2])
"""

# KEYS: result, reply, stream. ARGV: result JSON, ttl seconds, group, entry id.
# Store the result only if none exists (the first answer wins), hand it to the waiting gateway, then
# acknowledge and delete the stream entry: acknowledgement never precedes the stored result.
FINISH_JOB = """
local stored = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', tonumber(ARGV[2]))
if stored then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2]))
end
redis.call('XACK', KEYS[3], ARGV[3], ARGV[4])
redis.call('XDEL', KEYS[3], ARGV[4])
if stored then return 1 end
return 0
"""

# KEYS: stream. ARGV: group, entry id, job JSON, job field. Hand a job back: re-enqueue it and drop our claim.
HAND_BACK = """
redis.call('XADD', KEYS[1], '*', ARGV[4], ARGV[3])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""
