-- start_hosted: fence one hosted request before it runs.
-- KEYS[1] owner HASH   KEYS[2] hosted records HASH
-- ARGV[1] host's token  ARGV[2] task id
-- Returns 1 if this host owns the group and the request is still to be done;
-- 0 if the request is done (or was withdrawn): its message is stale;
-- -1 if the request is still to be done but this host does not own the group
-- (it lost it while its consumer still took from the queue): the message must
-- go back to the queue for the owner, never be dropped.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 then
  return 0
end
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then
  return -1
end
redis.call('HSET', KEYS[1], 'last', now, 'running', ARGV[2])
return 1
