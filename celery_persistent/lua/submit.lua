-- submit: register a request for a group, atomically.
-- KEYS[1] owner HASH   KEYS[2] inflight HASH   KEYS[3] waiters LIST (this key)
-- KEYS[4] pending LIST KEYS[5] leases ZSET
-- ARGV[1] group  ARGV[2] coalescing key  ARGV[3] task id  ARGV[4] owner token
-- ARGV[5] waiter record  ARGV[6] request record ("id\nkey\njson")
-- ARGV[7] lease deadline (ms) if this request becomes the leader
-- Returns {"wait", id executing the same key}
--       | {"queued", current owner id}   (runs after the owner, in order)
--       | {"leader", task id}            (caller publishes it)
local same = redis.call('HGET', KEYS[2], ARGV[2])
if same then
  redis.call('RPUSH', KEYS[3], ARGV[5])
  return {'wait', same}
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('RPUSH', KEYS[4], ARGV[6])
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  return {'queued', redis.call('HGET', KEYS[1], 'task_id')}
end
redis.call('HSET', KEYS[1], 'token', ARGV[4], 'task_id', ARGV[3], 'key', ARGV[2],
           'state', 'queued', 'request', ARGV[6])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[5], ARGV[7], ARGV[1])
return {'leader', ARGV[3]}
