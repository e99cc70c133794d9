-- heartbeat: a persistent worker says it is alive, and reports its load.
-- KEYS[1] workers ZSET   KEYS[2] the worker's load HASH
-- ARGV[1] hostname  ARGV[2] freshness (ms): the worker counts as live this long
-- ARGV[3] lifetime of the load hash (ms)  ARGV[4..] field, value, ... of the load
-- Returns 1.  Time is the server's clock, so hosts' clocks never matter.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if #ARGV > 3 then
  redis.call('HSET', KEYS[2], unpack(ARGV, 4))
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
