-- unhost: a persistent worker lets a group go (idle timeout, stop, error, dissolve).
-- KEYS[1] owner HASH   KEYS[2] inflight HASH   KEYS[3] leases ZSET   KEYS[4] hosted groups ZSET
-- KEYS[5] hosted ids ZSET   KEYS[6] hosted records HASH
-- KEYS[7..9] (optional) the group's current checkpoint HASH, its journal LIST, the parked ZSET
-- ARGV[1] group  ARGV[2] host's token  ARGV[3] "1": even with unfinished requests
-- ARGV[4] (with KEYS[7..9]) the id of the group's current checkpoint, to delete with the group
--         ("" keeps the state: content addressed, or still needed by the requests handed on)
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
if #KEYS >= 9 then
  if ARGV[4] ~= '' and redis.call('HGET', KEYS[1], 'ref') == ARGV[4] then
    redis.call('HDEL', KEYS[7], 'current')
    if redis.call('HEXISTS', KEYS[7], 'delivery') == 0 then
      redis.call('DEL', KEYS[7])
    end
  end
  redis.call('DEL', KEYS[8])
  redis.call('ZREM', KEYS[9], ARGV[1])
end
redis.call('DEL', KEYS[1], KEYS[5], KEYS[6])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return result
