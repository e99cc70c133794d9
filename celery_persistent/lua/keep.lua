-- keep: renew a hosted group's lease, for the holder of its token only.
-- KEYS[1] owner HASH   KEYS[2] leases ZSET
-- ARGV[1] group  ARGV[2] owner token  ARGV[3] lease (ms)  ARGV[4] the napping lease (ms)
-- ARGV[5] "wake": the host consumes the group's queue again (found by its sweep): the bell is
--         taken down, so the lease is an ordinary one again
-- Returns 1 if renewed, 0 if the token no longer owns the group.
-- A napping group (its "bell" field set by nap.lua) gets the napping lease; any other
-- the ordinary one.  Redis decides, so a ring (submit.lua) racing a renewal never leaves
-- a group that is consumed again with a long lease.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] then
  return 0
end
if ARGV[5] == 'wake' then
  redis.call('HDEL', KEYS[1], 'bell', 'bell_ms')
end
local lease = tonumber(ARGV[3])
if redis.call('HEXISTS', KEYS[1], 'bell') == 1 then
  lease = tonumber(ARGV[4])
end
redis.call('ZADD', KEYS[2], now + lease, ARGV[1])
return 1
