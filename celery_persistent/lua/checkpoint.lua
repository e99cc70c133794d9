-- checkpoint: a rolling group's host writes its state between requests (policy, hand-off, park).
-- KEYS[1] owner HASH   KEYS[2] the new checkpoint HASH   KEYS[3] the checkpoint it replaces
-- (any key if the group's state was not a checkpoint)   KEYS[4] the group's journal LIST
-- ARGV[1] host's token  ARGV[2] new checkpoint id  ARGV[3] its size (bytes)  ARGV[4] its state, encoded
-- ARGV[5] the id of the group's state the host wrote it from (its owner "ref")
-- ARGV[6] "1" when ARGV[5] is a checkpoint (else it is content addressed: never deleted)
-- ARGV[7] how many journaled requests the new state includes (the journal's first ARGV[7])
-- Returns {"stale"} (another owner), {"changed"} (the group's state is not ARGV[5] any more:
-- nothing written), or {"ok"}: the new checkpoint is the group's state, the one it replaces
-- lost its holder "current" (deleted unless a delivery still answers from it), and the
-- journal it covers is dropped.
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then
  return {'stale'}
end
if redis.call('HGET', KEYS[1], 'ref') ~= ARGV[5] then
  return {'changed'}
end
redis.call('HSET', KEYS[2], 'state', ARGV[4], 'current', '1')
redis.call('HSET', KEYS[1], 'ref', ARGV[2], 'bytes', ARGV[3])
if ARGV[6] == '1' and ARGV[5] ~= ARGV[2] then
  redis.call('HDEL', KEYS[3], 'current')
  if redis.call('HEXISTS', KEYS[3], 'delivery') == 0 then
    redis.call('DEL', KEYS[3])
  end
end
redis.call('LTRIM', KEYS[4], tonumber(ARGV[7]), -1)
return {'ok'}
