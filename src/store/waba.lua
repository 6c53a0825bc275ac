-- A WABA record's check-and-set: replaced only if it is still what the
-- caller read, so two replicas changing one WABA at once lose neither
-- change (the loser reads again and retries).
--
-- KEYS[1]  hash of WABA records   {prefix}:wabas
-- ARGV[1]  the WABA
-- ARGV[2]  "1" when the caller read a record, "0" when it read none
-- ARGV[3]  the record the caller read ("" when none)
-- ARGV[4]  the new record
--
-- Returns 1 when replaced, 0 when the record had changed.

local held = redis.call('HGET', KEYS[1], ARGV[1])
local unchanged
if ARGV[2] == '1' then
  unchanged = held == ARGV[3]
else
  unchanged = held == false
end
if unchanged then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
  return 1
end
return 0
