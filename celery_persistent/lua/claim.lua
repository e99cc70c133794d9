-- claim: a worker starts executing the group's leader; fences stale copies.
-- KEYS[1] owner HASH   KEYS[2] leases ZSET
-- ARGV[1] group  ARGV[2] owner token  ARGV[3] lease deadline (ms)
-- Returns 1 if the token owns the group (state becomes "running"), else 0.
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'running')
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
