-- finish: the leader of a group is done; take its waiters and hand the group on.
-- KEYS[1] owner HASH   KEYS[2] inflight HASH   KEYS[3] waiters LIST (owner's key)
-- KEYS[4] pending LIST KEYS[5] leases ZSET   KEYS[6] metrics HASH
-- KEYS[7] delivery HASH   KEYS[8] delivery waiters LIST   KEYS[9] deliveries ZSET
-- ARGV[1] group  ARGV[2] owner's coalescing key  ARGV[3] owner token
-- ARGV[4] token for the next owner  ARGV[5] next owner's lease (ms, from the server's clock)
-- ARGV[6] "keep": release the key but keep the group (a persistent worker takes it next)
-- ARGV[7] "1": count an execution (not for a leader that was lost)
-- ARGV[8] delivery lease (ms)  ARGV[9] delivery member ("<group> <owner token>")
-- ARGV[10] the execution's outcome, encoded
-- ARGV[11..] (optional) metrics hash fields and amounts, in pairs: the execution's histograms
--            (metrics.observation); a field ending in ":sum" takes a float (HINCRBYFLOAT)
-- Returns {"stale"} if the token does not own the group, else
--         {"done", next request record or "", waiter record, ...}
-- The outcome, the leader's own request, its waiters and the next request are
-- kept as a delivery until every caller is answered and the next request is
-- published (deliver.lua "done"); if the caller dies first, the reaper finds
-- the delivery past its deadline and completes it.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[3] then
  return {'stale'}
end
if ARGV[7] == '1' then
  redis.call('HINCRBY', KEYS[6], 'executions', 1)
end
for i = 11, #ARGV - 1, 2 do
  if string.sub(ARGV[i], -4) == ':sum' then
    redis.call('HINCRBYFLOAT', KEYS[6], ARGV[i], ARGV[i + 1])
  else
    redis.call('HINCRBY', KEYS[6], ARGV[i], ARGV[i + 1])
  end
end
local leader = redis.call('HGET', KEYS[1], 'task_id')
local own = redis.call('HGET', KEYS[1], 'request')
local result = {'done', ''}
for _, waiter in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
  result[#result + 1] = waiter
end
if #result > 2 then
  redis.call('RENAME', KEYS[3], KEYS[8])
end
if redis.call('HGET', KEYS[2], ARGV[2]) == leader then
  redis.call('HDEL', KEYS[2], ARGV[2])
end
local nxt = false
if ARGV[6] ~= 'keep' then
  nxt = redis.call('LPOP', KEYS[4])
  if nxt then
    local id, key = string.match(nxt, '^([^\n]*)\n([^\n]*)\n')
    -- Published by the caller, or by the reaper from the delivery below: it may wait.
    redis.call('HSET', KEYS[1], 'token', ARGV[4], 'task_id', id, 'key', key,
               'state', 'published', 'request', nxt)
    redis.call('ZADD', KEYS[5], now + tonumber(ARGV[5]), ARGV[1])
    result[2] = nxt
  else
    redis.call('DEL', KEYS[1])
    redis.call('ZREM', KEYS[5], ARGV[1])
  end
end
redis.call('HSET', KEYS[7], 'leader', leader or '', 'self', own or '', 'outcome', ARGV[10],
           'next', nxt or '', 'next_token', ARGV[4])
redis.call('ZADD', KEYS[9], now + tonumber(ARGV[8]), ARGV[9])
return result
