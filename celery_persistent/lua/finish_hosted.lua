-- finish_hosted: a hosted request is done; take its waiters, record the new state.
-- KEYS[1] owner HASH   KEYS[2] inflight HASH   KEYS[3] waiters LIST (its key)
-- KEYS[4] hosted ids ZSET   KEYS[5] hosted records HASH   KEYS[6] metrics HASH
-- KEYS[7] delivery HASH   KEYS[8] delivery waiters LIST   KEYS[9] deliveries ZSET
-- ARGV[1] host's token  ARGV[2] coalescing key  ARGV[3] task id
-- ARGV[4] new msg1 ref ("" = unchanged)  ARGV[5] new msg1 size
-- ARGV[6] the outcome, encoded ("" when it is the new msg1 itself: ARGV[4])
-- ARGV[7] delivery lease (ms)  ARGV[8] delivery member ("<group> <task id>")
-- Returns {"stale"} (another host owns the group now), {"gone"} (the request is
-- not accepted any more: finished already, or withdrawn), or
-- {"done", waiter record, ...}.  The request's own record, its outcome and its
-- waiters are kept as a delivery until every caller is answered (deliver.lua),
-- so that a crash after this point loses no answer and no state.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then
  return {'stale'}
end
local own = redis.call('HGET', KEYS[5], ARGV[3])
if not own or not redis.call('ZSCORE', KEYS[4], ARGV[3]) then
  return {'gone'}
end
local result = {'done'}
for _, waiter in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
  result[#result + 1] = waiter
end
if #result > 1 then
  redis.call('RENAME', KEYS[3], KEYS[8])
end
if redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[3] then
  redis.call('HDEL', KEYS[2], ARGV[2])
end
redis.call('ZREM', KEYS[4], ARGV[3])
redis.call('HDEL', KEYS[5], ARGV[3])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'ref', ARGV[4], 'bytes', ARGV[5])
end
redis.call('HINCRBY', KEYS[1], 'executions', 1)
redis.call('HINCRBY', KEYS[6], 'executions', 1)
redis.call('HSET', KEYS[1], 'last', now)
redis.call('HDEL', KEYS[1], 'running')
redis.call('HSET', KEYS[7], 'self', own, 'outcome', ARGV[6], 'ref', ARGV[4],
           'device', redis.call('HGET', KEYS[1], 'device') or '')
redis.call('ZADD', KEYS[9], now + tonumber(ARGV[7]), ARGV[8])
return result
