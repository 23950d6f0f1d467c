-- Token bucket as GCRA (lib_gcra.lua), with the semantics of go-redis/redis_rate and redis-cell.
--
-- KEYS[1]  the TAT: seconds since EPOCH (lib_core.lua), as a string
-- ARGV     named in lib_core.lua: [RATE] permits per period (float > 0), [BURST] the most
--          permits granted at once (integer >= 1), [PERIOD] seconds (float > 0), then the
--          request from TOKEN_REQUEST (4) on: permits, partial (as redis_rate's AllowAtMost),
--          max_wait (seconds a grant may be scheduled ahead), mode ("acquire", "peek": decide
--          for one permit and write nothing, or "reset"), deadline (unix milliseconds on the
--          caller's clock, "0": none; a request that arrives after it is refused with an
--          error and writes nothing)
-- Reply    {allowed (0/1), granted, limit (the burst in force: the most granted at once),
--          remaining, retry_after, reset_after, wait}; the last three are seconds as strings,
--          because Redis truncates Lua numbers to integers. retry_after is "inf" when more
--          permits are asked for than the burst, all or nothing: such a request can never be
--          granted. A grant that needs no wait, the common case, answers {granted, limit,
--          remaining, reset_after} instead, reset_after in integer microseconds (rounded up):
--          no strings to format.
-- The limiter runs lib_core.lua, adaptive.lua, lib_gcra.lua and token_bucket_grant.lua before
-- this script: the last ARGV (and, when adaptive, seven more and the last KEY) belong to
-- adaptive.lua; a cap replaces `rate`, and the health factor scales rate and burst alike.
local rate = tonumber(ARGV[RATE])
local burst = tonumber(ARGV[BURST])
local want, partial, max_wait, mode, sec, micros, late = request_of(TOKEN_REQUEST)

if mode == "reset" then
  redis.call("DEL", KEYS[1])
  return {1, 0, burst, burst, "0", "0", "0"}
end

if late then
  return late
end
local now = (sec - EPOCH) + micros / US
rate, burst = adaptive_limit(rate, sec, micros, burst)
local interval = tonumber(ARGV[PERIOD]) / rate
local tat = gcra_tat(KEYS[1], now)
local free = gcra_free(now, tat, interval, burst)

if want == 0 then
  return {1, 0, burst, free, "0", tostring(tat - now), "0"}
end

local grant, wait = 0, 0
if free >= want or (partial and free > 0) then
  grant = math.min(want, free)
else
  local need = partial and 1 or want
  wait = gcra_at(tat, interval, burst, need) - now
  -- More than the burst can never be granted at once, however long the caller waits.
  local retry = need > burst and "inf" or tostring(wait)
  if mode == "peek" or need > burst or wait > max_wait then
    return {0, 0, burst, free, retry, tostring(tat - now), "0"}
  end
  grant = need
end
if mode == "peek" then
  return {1, 0, burst, free, "0", tostring(tat - now), "0"}
end

local new_tat = tat + grant * interval
gcra_store(KEYS[1], new_tat, now)
local remaining = gcra_free(now + wait, new_tat, interval, burst)
if wait == 0 then
  return {grant, burst, remaining, math.ceil((new_tat - now) * US)}
end
return {1, grant, burst, remaining, "0", tostring(new_tat - now), tostring(wait)}
