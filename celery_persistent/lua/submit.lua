-- submit: register a request for a group, atomically.
-- KEYS[1] owner HASH   KEYS[2] inflight HASH   KEYS[3] waiters LIST (this key)
-- KEYS[4] pending LIST KEYS[5] leases ZSET     KEYS[6] hosted ids ZSET  KEYS[7] hosted records HASH
-- KEYS[8] metrics HASH (counts "coalesced" and "queued")
-- KEYS[9..16] optional: the same eight keys for the group of Msg1 alone (where a
--             persistent worker of Msg1 would be); tried first, if hosted there.
-- ARGV[1] group  ARGV[2] coalescing key  ARGV[3] task id  ARGV[4] owner token
-- ARGV[5] waiter record  ARGV[6] request record ("id\nkey\njson")
-- ARGV[7] lease (ms, from the server's clock) if this request becomes the leader: short,
--         until the caller marks it published (published.lua)
-- ARGV[8] flags: "h" register only if the group has a persistent worker;
--                "r" resubmission: an inflight entry naming this very id is not a leader
--                "a" again: an earlier submit of this very request may have been applied
--                    (its reply was lost in an outage); if it was, answer as it did
-- ARGV[9] the group of Msg1 alone, with KEYS[9..16]
-- Returns one of these, then the group it registered with:
--   {"wait", id executing the same key}
--   {"hosted", queue, msg1 ref, host}  (publish to the group's queue; if the host naps the
--                                      queue, the group's name is pushed onto the host's bell
--                                      LIST named by the owner's "bell" field: see nap.lua)
--   {"moved", new group}               (a rolling worker re-registered)
--   {"queued", current owner id}       (runs after the owner, in order)
--   {"leader", task id[, owner token]} (caller publishes it; the token is given on "a"
--                                      when an earlier submit made it the leader)
--   {"nothost"}                        (flag "h" and no persistent worker)
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local function earlier(K)
  local f = redis.call('HMGET', K[1], 'mode', 'task_id', 'token')
  if f[1] == 'leader' and f[2] == ARGV[3] then
    return {'leader', ARGV[3], f[3]}
  end
  if redis.call('HEXISTS', K[7], ARGV[3]) == 1 then
    local h = redis.call('HMGET', K[1], 'queue', 'ref', 'host')
    return {'hosted', h[1], h[2], h[3]}
  end
  if redis.call('LPOS', K[3], ARGV[5]) then
    return {'wait', redis.call('HGET', K[2], ARGV[2])}
  end
  if redis.call('LPOS', K[4], ARGV[6]) then
    return {'queued', f[2]}
  end
  return nil
end

local function register(K, group, flags)
  if string.find(flags, 'a', 1, true) then
    local found = earlier(K)
    if found then
      return found
    end
  end
  local mode = redis.call('HGET', K[1], 'mode')
  local hosted = mode == 'hosted'
  if string.find(flags, 'h', 1, true) and not hosted and mode ~= 'moved' then
    return {'nothost'}
  end
  if mode == 'moved' then
    return {'moved', redis.call('HGET', K[1], 'target')}
  end
  local same = redis.call('HGET', K[2], ARGV[2])
  if same and not (string.find(flags, 'r', 1, true) and same == ARGV[3]) then
    redis.call('RPUSH', K[3], ARGV[5])
    redis.call('HINCRBY', K[8], 'coalesced', 1)
    return {'wait', same}
  end
  if hosted then
    redis.call('HSET', K[2], ARGV[2], ARGV[3])
    redis.call('ZADD', K[6], redis.call('HINCRBY', K[1], 'seq', 1), ARGV[3])
    redis.call('HSET', K[7], ARGV[3], ARGV[6])
    local f = redis.call('HMGET', K[1], 'queue', 'ref', 'host', 'bell', 'bell_ms')
    if f[4] then
      -- The host naps this group's queue (nap.lua): ring once for it, and a dead
      -- host's group is recovered within one lease, not its napping lease.
      redis.call('HDEL', K[1], 'bell', 'bell_ms')
      redis.call('RPUSH', f[4], group)
      local cap = now + tonumber(f[5])
      local held = redis.call('ZSCORE', K[5], group)
      if held and tonumber(held) > cap then
        redis.call('ZADD', K[5], cap, group)
      end
    end
    return {'hosted', f[1], f[2], f[3]}
  end
  if mode then
    redis.call('RPUSH', K[4], ARGV[6])
    redis.call('HSET', K[2], ARGV[2], ARGV[3])
    redis.call('HINCRBY', K[8], 'queued', 1)
    return {'queued', redis.call('HGET', K[1], 'task_id')}
  end
  redis.call('HSET', K[1], 'mode', 'leader', 'token', ARGV[4], 'task_id', ARGV[3], 'key', ARGV[2],
             'state', 'queued', 'request', ARGV[6])
  redis.call('HSET', K[2], ARGV[2], ARGV[3])
  redis.call('ZADD', K[5], now + tonumber(ARGV[7]), group)
  return {'leader', ARGV[3]}
end

local reply
local group = ARGV[1]
if #KEYS >= 16 then
  local host = {}
  for i = 9, 16 do
    host[#host + 1] = KEYS[i]
  end
  reply = register(host, ARGV[9], ARGV[8] .. 'h')
  if reply[1] ~= 'nothost' then
    group = ARGV[9]
  end
end
if reply == nil or reply[1] == 'nothost' then
  reply = register(KEYS, ARGV[1], ARGV[8])
end
reply[#reply + 1] = group
return reply
