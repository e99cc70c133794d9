-- park: a rolling group that no persistent worker can take keeps its state and its requests.
-- KEYS[1] owner HASH   KEYS[2] leases ZSET   KEYS[3] hosted groups ZSET   KEYS[4] parked ZSET
-- ARGV[1] group  ARGV[2] the caller's token (a host letting the group go, or the reaper's
-- after its worker died)  ARGV[3] new token
-- Returns {"stale"} (another owner) or {"parked"}.  The group stays registered in hosted
-- mode with no host: requests sent meanwhile are accepted (submit.lua) and wait in its
-- queue; its checkpoint, journal, accepted requests and waiters are kept.  It has no
-- lease (nobody renews it) and leaves the hosted index for the parked one, where the next
-- persistent worker finds it (place.lua with the new token takes it out again).
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] then
  return {'stale'}
end
redis.call('HSET', KEYS[1], 'token', ARGV[3], 'host', '', 'state', 'parked', 'parked', now)
redis.call('HDEL', KEYS[1], 'running')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], now, ARGV[1])
return {'parked'}
