-- reserve: a worker has received a group's leader; from now on its lease is short.
-- KEYS[1] owner HASH   KEYS[2] leases ZSET
-- ARGV[1] group  ARGV[2] owner token  ARGV[3] lease (ms, server clock)
-- Returns 1 if the token owns the group and it was not running yet, else 0.
-- The worker's lease beat renews it until the request runs (claim); a worker
-- that dies holding it leaves the request to the reaper within one lease.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local f = redis.call('HMGET', KEYS[1], 'token', 'state')
if f[1] ~= ARGV[2] or f[2] == 'running' or f[2] == 'dead' then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'reserved')
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
return 1
