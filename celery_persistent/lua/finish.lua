-- finish: the leader of a group is done; take its waiters and hand the group on.
-- KEYS[1] owner HASH   KEYS[2] inflight HASH   KEYS[3] waiters LIST (owner's key)
-- KEYS[4] pending LIST KEYS[5] leases ZSET   KEYS[6] metrics HASH
-- ARGV[1] group  ARGV[2] owner's coalescing key  ARGV[3] owner token
-- ARGV[4] token for the next owner  ARGV[5] next owner's lease deadline (ms)
-- ARGV[6] "keep": release the key but keep the group (a persistent worker takes it next)
-- ARGV[7] "1": count an execution (not for a leader that was lost)
-- Returns {"stale"} if the token does not own the group, else
--         {"done", next request record or "", waiter record, ...}
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[3] then
  return {'stale'}
end
if ARGV[7] == '1' then
  redis.call('HINCRBY', KEYS[6], 'executions', 1)
end
local result = {'done', ''}
for _, waiter in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
  result[#result + 1] = waiter
end
redis.call('DEL', KEYS[3])
if redis.call('HGET', KEYS[2], ARGV[2]) == redis.call('HGET', KEYS[1], 'task_id') then
  redis.call('HDEL', KEYS[2], ARGV[2])
end
if ARGV[6] == 'keep' then
  return result
end
local nxt = redis.call('LPOP', KEYS[4])
if nxt then
  local id, key = string.match(nxt, '^([^\n]*)\n([^\n]*)\n')
  redis.call('HSET', KEYS[1], 'token', ARGV[4], 'task_id', id, 'key', key,
             'state', 'queued', 'request', nxt)
  redis.call('ZADD', KEYS[5], ARGV[5], ARGV[1])
  result[2] = nxt
else
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[5], ARGV[1])
end
return result
