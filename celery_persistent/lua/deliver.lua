-- deliver: settle a pending delivery (see finish.lua and finish_hosted.lua).
-- KEYS[1] delivery HASH   KEYS[2] delivery waiters LIST   KEYS[3] deliveries ZSET
-- KEYS[4] (optional, "done") the checkpoint HASH the member's step may have written
--         (keys.checkpoint(group, writer_key(token))): a delivery holds it while it may answer from it
-- ARGV[1] delivery member   ARGV[2] "done" | "take"   ARGV[3] (take) new lease (ms)
-- "done": the caller answered everyone: the delivery is deleted, and its checkpoint too
--   unless that is still its group's state; returns {"done"}.
-- "take": the reaper takes over a delivery past its deadline (its writer died):
--   returns {"gone"} if it is settled or not due yet, else re-leases it to the
--   reaper and returns {"taken", leader, next, next_token, self, outcome, ref, device,
--   waiter record, ...}.
if ARGV[2] == 'done' then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('ZREM', KEYS[3], ARGV[1])
  if KEYS[4] and redis.call('HDEL', KEYS[4], 'delivery') == 1
      and redis.call('HEXISTS', KEYS[4], 'current') == 0 then
    redis.call('DEL', KEYS[4])
  end
  return {'done'}
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local deadline = redis.call('ZSCORE', KEYS[3], ARGV[1])
if not deadline or tonumber(deadline) > now then
  return {'gone'}
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return {'gone'}
end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[1])
local f = redis.call('HMGET', KEYS[1], 'leader', 'next', 'next_token', 'self', 'outcome', 'ref', 'device')
local result = {'taken'}
for i = 1, 7 do
  result[#result + 1] = f[i] or ''
end
for _, waiter in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  result[#result + 1] = waiter
end
return result
