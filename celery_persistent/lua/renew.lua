-- renew: extend a lease, only for the holder of its token.
-- KEYS[1] owner HASH   KEYS[2] leases ZSET
-- ARGV[1] group  ARGV[2] owner token  ARGV[3] lease (ms, from the server's clock)
-- Returns 1 if renewed, 0 if the token no longer owns the group.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] then
  return 0
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
return 1
