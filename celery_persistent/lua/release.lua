-- release: an operator takes a group from its owner (`celery persistent release`), checked by token.
-- KEYS[1] owner HASH   KEYS[2] inflight HASH   KEYS[3] leases ZSET   KEYS[4] hosted groups ZSET
-- KEYS[5] hosted ids ZSET   KEYS[6] hosted records HASH
-- KEYS[7] waiters LIST of ARGV[6] (the key of the hosted request that runs; any key if none runs)
-- ARGV[1] group  ARGV[2] owner token the operator saw  ARGV[3] new token
-- ARGV[4] lease (ms, server clock) of the caller's hold on an ordinary group
-- ARGV[5] hosted: id of the request that runs, as the caller read it ("" if none)
-- ARGV[6] hosted: that request's coalescing key, as the caller read it
-- Returns one of:
--   {"unknown"}          nothing owns the group
--   {"stale"}            another token owns it now: nothing changed
--   {"moved", target}    a rolling group's old name: the group lives on as target
--   {"changed"}          hosted: another request runs than ARGV[5]/ARGV[6] say: read again
--   {"leader", state, request}
--       An ordinary group.  The caller holds it now under the new token, exactly as the
--       reaper holds a dead leader (expire.lua "dead"): it finishes it (finish.lua) with
--       an error for the request and its waiters, which hands the group on.  The old
--       token's worker is fenced (claim, renew, finish check the token).  State "dead":
--       if the caller dies first, the reaper answers them LeaderDied after the lease.
--   {"hosted", host, queue, ref, device, running request or "", n, waiter 1..n, record, ...}
--       A hosted group, let go as unhost.lua does with force, token-checked.  The request
--       that runs and its waiters are taken out (the caller answers them); the other
--       accepted requests follow, in order, for the caller to hand on against ref.
--       The host finds its lease gone on its next beat and stops consuming the queue.
--   {"parked", host, queue, ref, device, running request or "", n, waiter 1..n}
--       With KEYS[8] (the parked ZSET), a rolling group (not static) is not dissolved: as
--       park.lua, it stays registered with its state (checkpoint and journal) and its other
--       accepted requests, without a host, for the next persistent worker.  The request that
--       runs and its waiters are taken out, as above.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local f = redis.call('HMGET', KEYS[1], 'token', 'mode', 'state', 'target', 'running')
if not f[1] then
  return {'unknown'}
end
if f[1] ~= ARGV[2] then
  return {'stale'}
end
if f[2] == 'moved' then
  return {'moved', f[4] or ''}
end
if f[2] ~= 'hosted' then
  redis.call('HSET', KEYS[1], 'token', ARGV[3], 'state', 'dead')
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), ARGV[1])
  return {'leader', f[3] or '', redis.call('HGET', KEYS[1], 'request') or ''}
end

local running = f[5] or ''
local own = ''
if running ~= '' then
  own = redis.call('HGET', KEYS[6], running) or ''
end
local key = string.match(own, '^[^\n]*\n([^\n]*)\n') or ''
if running ~= ARGV[5] or key ~= ARGV[6] then
  return {'changed'}
end
local h = redis.call('HMGET', KEYS[1], 'host', 'queue', 'ref', 'device', 'static')
local park = KEYS[8] ~= nil and h[5] ~= '1'
local result = {park and 'parked' or 'hosted', h[1] or '', h[2] or '', h[3] or '', h[4] or '', own}
local waiters = {}
if own ~= '' then
  redis.call('ZREM', KEYS[5], running)
  redis.call('HDEL', KEYS[6], running)
  if redis.call('HGET', KEYS[2], key) == running then
    redis.call('HDEL', KEYS[2], key)
    waiters = redis.call('LRANGE', KEYS[7], 0, -1)
    redis.call('DEL', KEYS[7])
  end
end
result[#result + 1] = #waiters
for _, waiter in ipairs(waiters) do
  result[#result + 1] = waiter
end
if park then
  redis.call('HSET', KEYS[1], 'token', ARGV[3], 'host', '', 'state', 'parked', 'parked', now)
  redis.call('HDEL', KEYS[1], 'running')
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
  redis.call('ZADD', KEYS[8], now, ARGV[1])
  return result
end
local left = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
  local record = redis.call('HGET', KEYS[6], id)
  if record then
    result[#result + 1] = record
    left = left + 1
  end
end
-- As unhost.lua: the inflight entries stay while requests are handed on, so that an
-- identical request sent meanwhile waits for the handed-on one.
if left == 0 then
  redis.call('DEL', KEYS[2])
end
redis.call('DEL', KEYS[1], KEYS[5], KEYS[6])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return result
