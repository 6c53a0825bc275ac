-- A rate shared by every replica: GCRA (the generic cell rate algorithm),
-- one event per emission interval, no burst beyond one.
--
-- KEYS[1]  rate string   {prefix}:{<number>}:rate:<name>   (the theoretical
--                        arrival time, microseconds since the epoch)
-- ARGV[1]  emission interval in microseconds (1,000,000 / rate per second)
--
-- Returns {1, 0} when the event is admitted, or {0, wait} with the
-- microseconds until the next one would be. The clock is the server's
-- (TIME), so replicas with skewed clocks share one schedule. Microsecond
-- times stay below 2^53, exact in Lua's doubles.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then
  tat = now
end
if tat > now then
  return {0, tat - now}
end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil(interval / 1000) + 1000)
return {1, 0}
