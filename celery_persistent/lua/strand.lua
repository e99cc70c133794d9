-- strand: a published leader was fetched by a worker that never received it (it died first).
-- KEYS[1] owner HASH   KEYS[2] leases ZSET
-- ARGV[1] group  ARGV[2] the owner token its stranded message carries
-- Returns 1 if that token still owns the group with the leader only "published":
-- its lease (the queue TTL) is cut to now, so the reaper's expire re-publishes
-- it under a new token (the stranded copy is fenced by the old one). Returns 0
-- otherwise: the group moved on, or a worker reserved or ran it.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local f = redis.call('HMGET', KEYS[1], 'token', 'state')
if f[1] ~= ARGV[2] or f[2] ~= 'published' then
  return 0
end
redis.call('ZADD', KEYS[2], now, ARGV[1])
return 1
