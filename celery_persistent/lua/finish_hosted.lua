-- finish_hosted: a hosted request is done; take its waiters, record the new state.
-- KEYS[1] owner HASH   KEYS[2] inflight HASH   KEYS[3] waiters LIST (its key)
-- KEYS[4] hosted ids ZSET   KEYS[5] hosted records HASH   KEYS[6] metrics HASH
-- KEYS[7] delivery HASH   KEYS[8] delivery waiters LIST   KEYS[9] deliveries ZSET
-- ARGV[1] host's token  ARGV[2] coalescing key  ARGV[3] task id
-- ARGV[4] new msg1 ref ("" = unchanged)  ARGV[5] new msg1 size
-- ARGV[6] the outcome, encoded ("" when it is the new msg1 itself: ARGV[4])
-- ARGV[7] delivery lease (ms)  ARGV[8] delivery member ("<group> <task id>")
-- A rolling group's state (optional, all three KEYS with the three ARGV):
-- KEYS[10] the new checkpoint HASH   KEYS[11] the checkpoint it replaces (any key if the
--          group's state was not a checkpoint)   KEYS[12] the group's journal LIST
-- ARGV[9] "c": ARGV[4] is a new checkpoint, its state in ARGV[10] (the journal it covers is
--         dropped); "j": the request is journaled (its record appended to KEYS[12]); "": neither
-- ARGV[10] (c) the new state, encoded   ARGV[11] (c) the id of the checkpoint it replaces
--          ("" if the state was not a checkpoint: content-addressed entries are never deleted)
-- A checkpoint's holders are "current" (its group's state) and "delivery" (the delivery
-- answers from it: outcome ""); the step that takes its last holder away deletes it.
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
local mode = ARGV[9] or ''
if mode == 'c' then
  redis.call('HSET', KEYS[10], 'state', ARGV[10], 'current', '1')
  if ARGV[6] == '' then
    redis.call('HSET', KEYS[10], 'delivery', '1')
  end
  if ARGV[11] ~= '' and ARGV[11] ~= ARGV[4] and redis.call('HGET', KEYS[1], 'ref') == ARGV[11] then
    redis.call('HDEL', KEYS[11], 'current')
    if redis.call('HEXISTS', KEYS[11], 'delivery') == 0 then
      redis.call('DEL', KEYS[11])
    end
  end
  redis.call('DEL', KEYS[12])
elseif mode == 'j' then
  redis.call('RPUSH', KEYS[12], own)
end
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
