-- stop_parked: stop_worker on a rolling group parked without a persistent worker.
-- KEYS[1] owner HASH
-- ARGV[1] the owner token the caller saw
-- Returns 1 if the group is still parked under that token: it is marked to end,
-- so the persistent worker that takes it up next runs the requests it accepted,
-- lets on_idle see the final state and ends it (as stop_worker does on a live
-- group). Returns 0 if it was placed (or released) meanwhile: ask its host instead.
local f = redis.call('HMGET', KEYS[1], 'mode', 'state', 'token')
if f[1] ~= 'hosted' or f[2] ~= 'parked' or f[3] ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'stopping', '1')
return 1
