-- rename: a rolling worker re-registers its state under group(Msg3).
-- KEYS[1] old owner HASH   KEYS[2] new owner HASH   KEYS[3] leases ZSET   KEYS[4] hosted groups ZSET
-- ARGV[1] old group  ARGV[2] new group  ARGV[3] host's token  ARGV[4] token for the new name
-- ARGV[5] new queue  ARGV[6] lease (ms, from the server's clock)
-- Returns {"ok"}, {"stale"} or {"busy"} (the new name is taken: keep the old one).
-- The old name stays as a "moved" marker, so requests for it find the new one.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[3] then
  return {'stale'}
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'busy'}
end
local f = redis.call('HMGET', KEYS[1], 'host', 'ref', 'static', 'timeout', 'device', 'bytes', 'executions', 'errors',
                     'ckpt')
redis.call('HSET', KEYS[2], 'mode', 'hosted', 'token', ARGV[4], 'host', f[1], 'queue', ARGV[5],
           'ref', f[2], 'static', f[3], 'timeout', f[4], 'state', 'active', 'device', f[5],
           'last', now, 'bytes', f[6] or '0', 'executions', f[7] or '0',
           'errors', f[8] or 'ignore')
if f[9] then
  redis.call('HSET', KEYS[2], 'ckpt', f[9])
end
redis.call('HSET', KEYS[1], 'mode', 'moved', 'target', ARGV[2])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[6]), ARGV[2])
redis.call('ZADD', KEYS[4], now, ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[1])
return {'ok'}
