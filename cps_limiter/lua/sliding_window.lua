-- Sliding window, exact (lib_sliding.lua): a log of grants. No interval of `window` seconds on
-- the Redis clock ever holds more than `limit` grants, and the log holds at most `limit`
-- entries per window.
--
-- KEYS[1]  the log, KEYS[2] the sequence that names its members (lib_sliding.lua)
-- ARGV     named in lib_core.lua: [LIMIT] permits per window (integer >= 1), [WINDOW] seconds
--          (float > 0), then the request from SLIDING_REQUEST (3) on: permits, partial,
--          max_wait (seconds a grant may be reserved ahead), mode ("acquire", "peek": decide
--          for one permit and write nothing, or "reset"), deadline (unix milliseconds on the
--          caller's clock, "0": none; a request that arrives after it is refused with an
--          error and writes nothing)
-- Reply    {allowed (0/1), granted, limit, remaining, retry_after, reset_after, wait}; the last
--          three are seconds as strings, because Redis truncates Lua numbers to integers.
--          retry_after is "inf" when the request can never be granted (permits > limit).
--          A grant that needs no wait, the common case, answers {granted, limit, remaining,
--          reset_after} instead, reset_after in integer microseconds: no strings to format.
-- The limiter runs lib_core.lua, adaptive.lua, lib_sliding.lua and sliding_window_grant.lua
-- before this script: the last ARGV (and, when adaptive, seven more and the last KEY) belong
-- to adaptive.lua, and `limit` below is the limit in force.
local limit = tonumber(ARGV[LIMIT])
local window = math.floor(tonumber(ARGV[WINDOW]) * US + 0.5)
local want, partial, max_wait, mode, sec, micros, late = request_of(SLIDING_REQUEST)

if mode == "reset" then
  redis.call("DEL", KEYS[1], KEYS[2])
  return {1, 0, limit, limit, "0", "0", "0"}
end

if late then
  return late
end
local now = sec * US + micros
limit = adaptive_limit(limit, sec, micros)
sliding_trim(KEYS[1], now, window)
local count = redis.call("ZCARD", KEYS[1])
local free_now = math.max(limit - count, 0)

-- Until the newest entry, reserved ones included, has left the window.
local function reset_after()
  local newest = sliding_newest(KEYS[1])
  return newest > 0 and math.max(newest + window - now, 0) or 0
end

if want == 0 then
  return {1, 0, limit, free_now, "0", seconds(reset_after()), "0"}
end

local grant, at, free = 0, now, free_now
if free_now >= want or (partial and free_now > 0) then
  grant = math.min(want, free_now)
else
  local need = partial and 1 or want
  if need > limit then
    return {0, 0, limit, free_now, "inf", seconds(reset_after()), "0"}
  end
  -- The earliest moment at which enough entries have left the window: the n-th oldest entry's
  -- moment plus the window.
  local n = count + need - limit
  local nth = redis.call("ZRANGE", KEYS[1], n - 1, n - 1, "WITHSCORES")
  at = tonumber(nth[2]) + window
  local wait = at - now
  if mode == "peek" or wait > max_wait * US then
    return {0, 0, limit, free_now, seconds(wait), seconds(reset_after()), "0"}
  end
  free = limit - redis.call("ZCOUNT", KEYS[1], "(" .. digits(at - window), "+inf")
  grant = math.min(want, free)
end
if mode == "peek" then
  return {1, 0, limit, free_now, "0", seconds(reset_after()), "0"}
end

local moments = {}
for j = 1, grant do
  moments[j] = at
end
local ttl = math.max(reset_after(), at + window - now)
sliding_log(KEYS[1], KEYS[2], moments, grant, ttl)
if at == now then
  return {grant, limit, free - grant, ttl}
end
return {1, grant, limit, free - grant, "0", seconds(ttl), seconds(at - now)}
