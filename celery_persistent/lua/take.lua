-- take: remove a group's waiting requests, to send them to another group (forward_work).
-- KEYS[1] hosted ids ZSET   KEYS[2] hosted records HASH   KEYS[3] pending LIST
-- KEYS[4] inflight HASH   KEYS[5] owner HASH
-- Returns the records, in order: accepted hosted requests first, then queued ones.
-- The one a persistent worker is running right now stays (it is not waiting).
local running = redis.call('HGET', KEYS[5], 'running') or ''
local result = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if id ~= running then
    local record = redis.call('HGET', KEYS[2], id)
    if record then
      result[#result + 1] = record
    end
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
  end
end
for _, record in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
  result[#result + 1] = record
end
redis.call('DEL', KEYS[3])
for _, record in ipairs(result) do
  local id, key = string.match(record, '^([^\n]*)\n([^\n]*)\n')
  if redis.call('HGET', KEYS[4], key) == id then
    redis.call('HDEL', KEYS[4], key)
  end
end
return result
