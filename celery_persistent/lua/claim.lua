-- claim: a worker starts executing the group's leader; fences stale copies.
-- KEYS[1] owner HASH   KEYS[2] leases ZSET
-- ARGV[1] group  ARGV[2] owner token  ARGV[3] lease (ms, from the server's clock)
-- Returns 1 if the token owns the group and is not running yet (state becomes
-- "running"), else 0: another copy of the same message (a redelivery) never
-- runs beside the first.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local f = redis.call('HMGET', KEYS[1], 'token', 'state')
if f[1] ~= ARGV[2] or f[2] == 'running' then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'running')
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
return 1
