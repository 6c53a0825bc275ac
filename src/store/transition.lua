-- One breaker transition, atomically: check the version, write the record,
-- set or clear its expiry, append the audit line, publish the change.
--
-- KEYS[1]  record hash    {prefix}:{<number>}:rec:<id>
-- KEYS[2]  audit stream   {prefix}:{<number>}:audit   (same hash tag: one slot)
-- ARGV[1]  expected version, decimal ("0": the record must be absent)
-- ARGV[2]  new version, decimal
-- ARGV[3]  "1" active, "0" closed
-- ARGV[4]  id            ARGV[5]  number        ARGV[6]  body (opaque JSON)
-- ARGV[7]  audit line    ARGV[8]  closed-record TTL in milliseconds
-- ARGV[9]  audit stream max length (approximate)
-- ARGV[10] change channel               ARGV[11] change event (the record as JSON)
--
-- Returns {"applied"}, or {"conflict"} when the record is absent, or
-- {"conflict", id, number, version, active, body} with what is stored.
--
-- Versions are compared as the decimal strings this store writes, never as
-- Lua numbers: those are doubles and lose precision above 2^53.

local stored = redis.call('HGET', KEYS[1], 'version')
local current = stored or '0'
if current ~= ARGV[1] then
  if not stored then
    return {'conflict'}
  end
  local rec = redis.call('HMGET', KEYS[1], 'id', 'number', 'version', 'active', 'body')
  return {'conflict', rec[1], rec[2], rec[3], rec[4], rec[5]}
end

redis.call('HSET', KEYS[1],
  'id', ARGV[4], 'number', ARGV[5], 'version', ARGV[2], 'active', ARGV[3], 'body', ARGV[6])
if ARGV[3] == '1' then
  redis.call('PERSIST', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[8])
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[9], '*', 'line', ARGV[7])
redis.call('PUBLISH', ARGV[10], ARGV[11])
return {'applied'}
