-- live: the persistent workers that take new groups, with how many groups each hosts, in one round trip
-- (every placement asks: start_worker placed 10,000 groups at once in issue 12).  Read only.
-- KEYS[1] workers ZSET (member: hostname, score: the server time, ms, its heartbeat is good until)
-- ARGV[1] the prefix of a worker's load HASH (KeySpace.worker(""))
-- Returns {hostname, groups, hostname, groups, ...} of live workers that are not draining.
-- A worker's HASH is named from its hostname, known only once the ZSET is read, so its key is built
-- here: like the rest of the registry, this needs a single Redis node (no Cluster).
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local out = {}
for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
  local load = redis.call('HMGET', ARGV[1] .. name, 'groups', 'draining')
  local draining = tonumber(load[2] or '0') or 0
  if draining == 0 then
    out[#out + 1] = name
    out[#out + 1] = load[1] or '0'
  end
end
return out
