-- submit: register a request for a group, atomically.
-- KEYS[1] owner HASH   KEYS[2] inflight HASH   KEYS[3] waiters LIST (this key)
-- KEYS[4] pending LIST KEYS[5] leases ZSET     KEYS[6] hosted ids ZSET  KEYS[7] hosted records HASH
-- KEYS[8] metrics HASH (counts "coalesced" and "queued")
-- ARGV[1] group  ARGV[2] coalescing key  ARGV[3] task id  ARGV[4] owner token
-- ARGV[5] waiter record  ARGV[6] request record ("id\nkey\njson")
-- ARGV[7] lease deadline (ms) if this request becomes the leader
-- ARGV[8] flags: "h" register only if the group has a persistent worker;
--                "r" resubmission: an inflight entry naming this very id is not a leader
-- Returns {"wait", id executing the same key}
--       | {"hosted", queue, msg1 ref, host}  (publish to the group's queue)
--       | {"moved", new group}               (a rolling worker re-registered)
--       | {"queued", current owner id}       (runs after the owner, in order)
--       | {"leader", task id}                (caller publishes it)
--       | {"nothost"}                        (flag "h" and no persistent worker)
local mode = redis.call('HGET', KEYS[1], 'mode')
local hosted = mode == 'hosted'
if string.find(ARGV[8], 'h', 1, true) and not hosted and mode ~= 'moved' then
  return {'nothost'}
end
if mode == 'moved' then
  return {'moved', redis.call('HGET', KEYS[1], 'target')}
end
local same = redis.call('HGET', KEYS[2], ARGV[2])
if same and not (string.find(ARGV[8], 'r', 1, true) and same == ARGV[3]) then
  redis.call('RPUSH', KEYS[3], ARGV[5])
  redis.call('HINCRBY', KEYS[8], 'coalesced', 1)
  return {'wait', same}
end
if hosted then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  redis.call('ZADD', KEYS[6], redis.call('HINCRBY', KEYS[1], 'seq', 1), ARGV[3])
  redis.call('HSET', KEYS[7], ARGV[3], ARGV[6])
  local f = redis.call('HMGET', KEYS[1], 'queue', 'ref', 'host')
  return {'hosted', f[1], f[2], f[3]}
end
if mode then
  redis.call('RPUSH', KEYS[4], ARGV[6])
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  redis.call('HINCRBY', KEYS[8], 'queued', 1)
  return {'queued', redis.call('HGET', KEYS[1], 'task_id')}
end
redis.call('HSET', KEYS[1], 'mode', 'leader', 'token', ARGV[4], 'task_id', ARGV[3], 'key', ARGV[2],
           'state', 'queued', 'request', ARGV[6])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[5], ARGV[7], ARGV[1])
return {'leader', ARGV[3]}
