-- published: a registered leader is on the broker now; it may wait there for a worker.
-- KEYS[1] owner HASH   KEYS[2] leases ZSET
-- ARGV[1] group  ARGV[2] owner token  ARGV[3] how long it may wait (ms, server clock)
-- Returns 1 if the leader was still unpublished ("queued"), else 0 (a worker has
-- it already, or the group moved on): a registered leader has only a short lease
-- until this mark, so a process that dies between registering and publishing
-- leaves it to the reaper within one lease, not one queue TTL.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local f = redis.call('HMGET', KEYS[1], 'token', 'state')
if f[1] ~= ARGV[2] or f[2] ~= 'queued' then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'published')
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
return 1
