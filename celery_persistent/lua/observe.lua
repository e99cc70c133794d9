-- observe: add one execution's histogram fields (and a counter) to the metrics hash.
-- KEYS[1] metrics HASH
-- ARGV: hash fields and amounts, in pairs (metrics.observation, as finish.lua takes them);
--       a field ending in ":sum" takes a float (HINCRBYFLOAT), any other an integer
-- Returns the number of fields written.  Sent without waiting (registry.Unawaited): a
-- hosted request's or an ungrouped one's histograms cost the worker no round trip.
for i = 1, #ARGV, 2 do
  if string.sub(ARGV[i], -4) == ':sum' then
    redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1])
  else
    redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return #ARGV / 2
