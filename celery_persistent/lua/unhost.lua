-- unhost: a persistent worker lets a group go (idle timeout, stop, error, dissolve).
-- KEYS[1] owner HASH   KEYS[2] inflight HASH   KEYS[3] leases ZSET   KEYS[4] hosted groups ZSET
-- KEYS[5] hosted ids ZSET   KEYS[6] hosted records HASH
-- ARGV[1] group  ARGV[2] host's token  ARGV[3] "1": even with unfinished requests
-- Returns {"stale"}, {"busy"} (a request raced the timeout: keep hosting), or
--         {"ok", record, ...}: unfinished requests, in order, for the caller to resubmit.
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] then
  return {'stale'}
end
if ARGV[3] ~= '1' and redis.call('ZCARD', KEYS[5]) > 0 then
  return {'busy'}
end
local result = {'ok'}
for _, id in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
  local record = redis.call('HGET', KEYS[6], id)
  if record then
    result[#result + 1] = record
  end
end
if #result == 1 then
  redis.call('DEL', KEYS[2])
end
redis.call('DEL', KEYS[1], KEYS[5], KEYS[6])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return result
