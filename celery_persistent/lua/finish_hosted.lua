-- finish_hosted: a hosted request is done; take its waiters, record the new state.
-- KEYS[1] owner HASH   KEYS[2] inflight HASH   KEYS[3] waiters LIST (its key)
-- KEYS[4] hosted ids ZSET   KEYS[5] hosted records HASH   KEYS[6] metrics HASH
-- ARGV[1] host's token  ARGV[2] coalescing key  ARGV[3] task id
-- ARGV[4] new msg1 ref ("" = unchanged)  ARGV[5] now (ms)  ARGV[6] new msg1 size
-- Returns {"stale"} (another host owns the group now) or {"done", waiter record, ...}
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then
  return {'stale'}
end
local result = {'done'}
for _, waiter in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
  result[#result + 1] = waiter
end
redis.call('DEL', KEYS[3])
if redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[3] then
  redis.call('HDEL', KEYS[2], ARGV[2])
end
redis.call('ZREM', KEYS[4], ARGV[3])
redis.call('HDEL', KEYS[5], ARGV[3])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'ref', ARGV[4], 'bytes', ARGV[6])
end
redis.call('HINCRBY', KEYS[1], 'executions', 1)
redis.call('HINCRBY', KEYS[6], 'executions', 1)
redis.call('HSET', KEYS[1], 'last', ARGV[5])
redis.call('HDEL', KEYS[1], 'running')
return result
