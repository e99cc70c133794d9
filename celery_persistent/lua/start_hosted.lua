-- start_hosted: fence one hosted request before it runs.
-- KEYS[1] owner HASH   KEYS[2] hosted records HASH
-- ARGV[1] host's token  ARGV[2] task id
-- Returns 1 if this host owns the group and the request is still to be done, else 0.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then
  return 0
end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'last', now, 'running', ARGV[2])
return 1
