-- nap: a persistent worker stops consuming an idle group's queue; the next request rings for it.
-- KEYS[1] owner HASH   KEYS[2] leases ZSET   KEYS[3] hosted ids ZSET (accepted, unfinished)
-- ARGV[1] group  ARGV[2] owner token  ARGV[3] the host's bell LIST (a key name)
-- ARGV[4] lease (ms): what a ring cuts the lease to  ARGV[5] the napping lease (ms)
-- Returns 1 (napping), 0 (refused: requests are accepted, keep consuming), -1 (not this owner's).
-- While the group naps, submit.lua (hosted branch) pushes the group's name onto the bell
-- (once: it clears the owner's "bell" field) and cuts the lease to ARGV[4], so a request
-- to a napping group of a dead host is recovered within one lease.  The napping lease is
-- long: the host renews napping groups rarely (keep.lua), not on every beat.
-- Accepted requests are checked here, atomically with the bell, because a request is
-- accepted (by submit) before its message is published: with none accepted, every later
-- one rings.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local f = redis.call('HMGET', KEYS[1], 'mode', 'token')
if f[1] ~= 'hosted' or f[2] ~= ARGV[2] then
  return -1
end
if redis.call('ZCARD', KEYS[3]) > 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'bell', ARGV[3], 'bell_ms', ARGV[4])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[1])
return 1
