-- adopt: a persistent worker takes up a group placed on it.
-- KEYS[1] owner HASH   KEYS[2] leases ZSET   KEYS[3] hosted ids ZSET   KEYS[4] hosted records HASH
-- KEYS[5] (optional) the group's journal LIST
-- ARGV[1] group  ARGV[2] host  ARGV[3] lease (ms, from the server's clock)
-- Returns {"stale"} if the group is not placed on this host, else
--   {"ok", token, queue, ref, static, timeout, device, bytes, errors, record, ...}
-- or, with KEYS[5],
--   {"ok", token, queue, ref, static, timeout, device, bytes, errors, policy, journaled, stopping, record, ...}
-- (policy: the owner's "ckpt" field; journaled: requests applied since its checkpoint; stopping: "1" when
-- stop_worker marked the group while it was parked, so the host ends it once its requests are done)
-- (timeout "0": none was set, the worker's default applies) with the records of requests accepted but not finished (run these first, in order).
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local f = redis.call('HMGET', KEYS[1], 'mode', 'host', 'token', 'queue', 'ref', 'static',
                     'timeout', 'device', 'bytes', 'errors')
if f[1] ~= 'hosted' or f[2] ~= ARGV[2] then
  return {'stale'}
end
redis.call('HSET', KEYS[1], 'state', 'active')
redis.call('HDEL', KEYS[1], 'bell', 'bell_ms')  -- a new host consumes the queue at first (nap.lua)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
local result = {'ok', f[3], f[4], f[5], f[6] or '0', f[7] or '0', f[8] or '', f[9] or '0',
                f[10] or 'ignore'}
if KEYS[5] then
  result[#result + 1] = redis.call('HGET', KEYS[1], 'ckpt') or ''
  result[#result + 1] = redis.call('LLEN', KEYS[5])
  result[#result + 1] = redis.call('HGET', KEYS[1], 'stopping') or ''
end
for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  local record = redis.call('HGET', KEYS[4], id)
  if record then
    result[#result + 1] = record
  end
end
return result
