-- pulse: the registry is reachable; note when it became reachable again after a gap.
-- KEYS[1] pulse HASH (fields: last, resumed)   KEYS[2] leases ZSET
-- ARGV[1] gap (ms): no pulse from any worker for this long means the registry was
--         unreachable (a Redis restart, a partition), or no worker ran at all
-- ARGV[2] lease (ms)
-- Returns the time (ms, server clock) the registry last resumed.
-- Owners could not renew their leases during the gap, so expire.lua gives
-- them one lease after "resumed" before taking anything from them.
-- A published leader's lease is long (the queue TTL): its message may wait for
-- a worker.  Across a gap that message may have been lost on its way (taken
-- from the queue, not yet acknowledged, by a worker whose connection dropped:
-- kombu's Redis transport gives it back only after its visibility timeout), so
-- every lease longer than one lease is cut to one lease: the reaper publishes
-- those leaders again, and the owner token fences the copy that was not lost.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local f = redis.call('HMGET', KEYS[1], 'last', 'resumed')
local resumed = tonumber(f[2] or '0')
if not f[1] or now - tonumber(f[1]) > tonumber(ARGV[1]) then
  resumed = now
  redis.call('HSET', KEYS[1], 'resumed', now)
  local cap = now + tonumber(ARGV[2])
  for _, group in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. cap, '+inf')) do
    redis.call('ZADD', KEYS[2], 'XX', cap, group)
  end
end
redis.call('HSET', KEYS[1], 'last', now)
return resumed
