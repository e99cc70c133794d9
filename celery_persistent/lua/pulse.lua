-- pulse: the registry is reachable; note when it became reachable again after a gap.
-- KEYS[1] pulse HASH (fields: last, resumed)
-- ARGV[1] gap (ms): no pulse from any worker for this long means the registry was
--         unreachable (a Redis restart, a partition), or no worker ran at all
-- Returns the time (ms, server clock) the registry last resumed.
-- Owners could not renew their leases during the gap, so expire.lua gives
-- them one lease after "resumed" before taking anything from them.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local f = redis.call('HMGET', KEYS[1], 'last', 'resumed')
local resumed = tonumber(f[2] or '0')
if not f[1] or now - tonumber(f[1]) > tonumber(ARGV[1]) then
  resumed = now
  redis.call('HSET', KEYS[1], 'resumed', now)
end
redis.call('HSET', KEYS[1], 'last', now)
return resumed
