-- place: give a group to a persistent worker (start_worker, spawn, takeover, hand-off).
-- KEYS[1] owner HASH   KEYS[2] leases ZSET   KEYS[3] hosted groups ZSET
-- KEYS[4] the worker's inbox LIST   KEYS[5] pending LIST   KEYS[6] hosted ids ZSET
-- KEYS[7] hosted records HASH   KEYS[8] the worker's load HASH (its "groups" count goes up
--         at once, so that a burst of placements spreads before the next heartbeat)
-- ARGV[1] group  ARGV[2] new token  ARGV[3] host  ARGV[4] queue  ARGV[5] msg1 ref
-- ARGV[6] static ("1"/"0")  ARGV[7] idle timeout (s)  ARGV[8] lease (ms) until adoption
-- ARGV[9] expected current token ("" = the group must be free)  ARGV[10] device
-- ARGV[11] msg1 size (bytes)  ARGV[12] error strategy
-- ARGV[13] the inbox command telling the worker to adopt the group
-- KEYS[9..10] (optional) the parked ZSET (a parked group placed again leaves it), and the
--         checkpoint HASH of ARGV[5] when ARGV[14] holds its state
-- ARGV[14] (optional) the state of a new rolling group, encoded: written as its first
--          checkpoint (holder "current"), only if the group is placed
-- ARGV[15] (optional) the checkpoint policy (owner field "ckpt", see checkpoints.py)
-- Returns {"placed"} | {"exists", host, queue} | {"busy", why}
-- Requests queued behind a leader (pending) become the worker's, in order.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local current = redis.call('HGET', KEYS[1], 'token')
if ARGV[9] == '' then
  if current then
    if redis.call('HGET', KEYS[1], 'mode') == 'hosted' then
      local f = redis.call('HMGET', KEYS[1], 'host', 'queue')
      return {'exists', f[1], f[2]}
    end
    return {'busy', 'executing'}
  end
elseif current ~= ARGV[9] then
  return {'busy', 'changed'}
end
redis.call('HDEL', KEYS[1], 'task_id', 'key', 'request', 'target', 'stop', 'running', 'bell', 'bell_ms')
redis.call('HSET', KEYS[1], 'mode', 'hosted', 'token', ARGV[2], 'host', ARGV[3], 'queue', ARGV[4],
           'ref', ARGV[5], 'static', ARGV[6], 'timeout', ARGV[7], 'state', 'placing',
           'device', ARGV[10], 'last', now, 'bytes', ARGV[11], 'errors', ARGV[12])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[8]), ARGV[1])
redis.call('ZADD', KEYS[3], now, ARGV[1])
if #KEYS >= 10 then
  redis.call('ZREM', KEYS[9], ARGV[1])
  if ARGV[14] ~= '' then
    redis.call('HSET', KEYS[10], 'state', ARGV[14], 'current', '1')
  end
  if ARGV[15] ~= '' then
    redis.call('HSET', KEYS[1], 'ckpt', ARGV[15])
  end
end
for _, record in ipairs(redis.call('LRANGE', KEYS[5], 0, -1)) do
  local id = string.match(record, '^([^\n]*)\n')
  redis.call('ZADD', KEYS[6], redis.call('HINCRBY', KEYS[1], 'seq', 1), id)
  redis.call('HSET', KEYS[7], id, record)
end
redis.call('DEL', KEYS[5])
redis.call('RPUSH', KEYS[4], ARGV[13])
redis.call('HINCRBY', KEYS[8], 'groups', 1)
return {'placed'}
