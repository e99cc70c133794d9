-- withdraw: take back an accepted request of a hosted group before it runs.
-- KEYS[1] owner HASH   KEYS[2] inflight HASH   KEYS[3] waiters LIST (its key)
-- KEYS[4] hosted ids ZSET   KEYS[5] hosted records HASH
-- ARGV[1] task id  ARGV[2] coalescing key
-- Returns {"withdrawn", waiter record, ...} (it will not run: its waiters are
-- returned for the caller to answer), {"running"} (too late: it is executing),
-- or {"gone"} (not accepted: finished already, or never registered here).
-- Used when publishing it failed, when a worker refused its message, and when
-- it was revoked or purged, so that nothing runs that its caller was told failed.
if not redis.call('ZSCORE', KEYS[4], ARGV[1]) then
  return {'gone'}
end
if redis.call('HGET', KEYS[1], 'running') == ARGV[1] then
  return {'running'}
end
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
local result = {'withdrawn'}
if redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[1] then
  redis.call('HDEL', KEYS[2], ARGV[2])
  for _, waiter in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
    result[#result + 1] = waiter
  end
  redis.call('DEL', KEYS[3])
end
return result
