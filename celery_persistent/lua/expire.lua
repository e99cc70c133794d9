-- expire: the reaper takes a group whose lease ran out away from its owner.
-- KEYS[1] owner HASH   KEYS[2] leases ZSET   KEYS[3] pulse HASH (see pulse.lua)
-- ARGV[1] group  ARGV[2] token the reaper saw
-- ARGV[3] new token  ARGV[4] lease (ms) for the re-dispatch or the clean-up
-- ARGV[5] grace (ms) after the registry resumed from a gap: owners renew first
-- Time is the server's clock.
-- Returns {"gone"} (owner changed; a lease whose owner hash is gone is removed),
--         {"alive"} (lease renewed meanwhile, or the registry resumed less than a grace ago),
--         {"requeue", request} (never started: publish again under the new token; it is
--                               "queued" again until the reaper marks it published)
--         {"dead", request}    (died while running: call finish with the new token)
--         {"orphan", host, mode} (a persistent worker died: place the group again)
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local current = redis.call('HGET', KEYS[1], 'token')
if not current then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {'gone'}
end
if current ~= ARGV[2] then
  return {'gone'}
end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if score and tonumber(score) > now then
  return {'alive'}
end
local resumed = tonumber(redis.call('HGET', KEYS[3], 'resumed') or '0')
if now < resumed + tonumber(ARGV[5]) then
  return {'alive'}
end
local mode = redis.call('HGET', KEYS[1], 'mode')
local state = redis.call('HGET', KEYS[1], 'state')
redis.call('HSET', KEYS[1], 'token', ARGV[3])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[1])
if mode == 'hosted' or mode == 'moved' then
  redis.call('HSET', KEYS[1], 'state', 'orphaned')
  return {'orphan', redis.call('HGET', KEYS[1], 'host'), mode}
end
if state ~= 'running' and state ~= 'dead' then
  redis.call('HSET', KEYS[1], 'state', 'queued')
  return {'requeue', redis.call('HGET', KEYS[1], 'request')}
end
redis.call('HSET', KEYS[1], 'state', 'dead')
return {'dead', redis.call('HGET', KEYS[1], 'request')}
