-- A lease: one holder at a time, for a time, taken over once it expires.
--
-- KEYS[1]  lease string   {prefix}:{<number>}:lease:<name>
-- ARGV[1]  "take" or "release"
-- ARGV[2]  holder (a replica's id)
-- ARGV[3]  for take: time to live in milliseconds
--
-- take:    held by nobody (or expired) or by this holder -> set to the
--          holder with the TTL (a renewal), return 1; else return 0.
-- release: held by this holder -> deleted, return 1; else return 0.

local current = redis.call('GET', KEYS[1])
if ARGV[1] == 'take' then
  if current == false or current == ARGV[2] then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
    return 1
  end
  return 0
end
if current == ARGV[2] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
