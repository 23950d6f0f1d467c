-- Sliding window, exact: a log of grants. No interval of `window` seconds on the Redis clock
-- ever holds more than `limit` grants, and the log holds at most `limit` entries per window.
--
-- KEYS[1]  the log: a sorted set, one member per granted permit, scored with its grant time in
--          microseconds since the unix epoch (exact in a double). Reserved grants carry a future
--          time.
-- KEYS[2]  a counter that names members uniquely (several permits share one grant time)
-- ARGV[1]  limit: permits per window (integer >= 1)
-- ARGV[2]  window: seconds (float > 0)
-- ARGV[3]  permits asked for (integer >= 0)
-- ARGV[4]  "1": partial (grant what is free, up to permits); "0": all or nothing
-- ARGV[5]  max_wait: seconds (float >= 0) a grant may be reserved ahead
-- ARGV[6]  mode: "acquire", "peek" (decide for one permit, write nothing) or "reset"
-- ARGV[7]  deadline: the caller's, unix milliseconds on its own clock ("0": none); a
--          request that arrives after it is refused with an error and writes nothing
-- Reply    {allowed (0/1), granted, limit, remaining, retry_after, reset_after, wait}; the last
--          three are seconds as strings, because Redis truncates Lua numbers to integers.
--          retry_after is "inf" when the request can never be granted (permits > limit).
--          A grant that needs no wait, the common case, answers {granted, limit, remaining,
--          reset_after} instead, reset_after in integer microseconds: no strings to format.
-- The limiter runs adaptive.lua before this script: the last ARGV (and, when adaptive, seven
-- more and the last KEY) belong to it, and `limit` below is the limit in force.
--
-- Why it is exact: a grant at time x is made only if the entries scored after x - window, the
-- future ones included, plus the new ones are at most `limit`. Take any interval of length
-- `window` and the last grant placed in it: every other entry of the interval existed then and
-- was scored after x - window, so it was counted.
local limit = tonumber(ARGV[1])
local window = math.floor(tonumber(ARGV[2]) * 1000000 + 0.5)
local permits = tonumber(ARGV[3])
local partial = ARGV[4] == "1"
local max_wait = tonumber(ARGV[5]) * 1000000
local mode = ARGV[6]

if mode == "reset" then
  redis.call("DEL", KEYS[1], KEYS[2])
  return {1, 0, limit, limit, "0", "0", "0"}
end

local time = redis.call("TIME")
local sec, micros = tonumber(time[1]), tonumber(time[2])
local late = past_deadline(sec, micros, ARGV[7])
if late then
  return late
end
local now = sec * 1000000 + micros
local factor, cap = adaptive_factor(sec, micros)
limit = math.max(math.floor((cap or limit) * factor), 1)


local function seconds(us)
  return tostring(us / 1000000)
end

-- Microsecond times have 16 digits: format them in full (tostring keeps only 14).
local function digits(us)
  return string.format("%.0f", us)
end

redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", digits(now - window))
local count = redis.call("ZCARD", KEYS[1])
local free_now = math.max(limit - count, 0)

-- Until the newest entry, reserved ones included, has left the window.
local function reset_after()
  local newest = redis.call("ZRANGE", KEYS[1], -1, -1, "WITHSCORES")
  if newest[2] == nil then
    return 0
  end
  return math.max(tonumber(newest[2]) + window - now, 0)
end

local want = permits
if mode == "peek" then
  want = 1
  max_wait = 0
end

if want == 0 then
  return {1, 0, limit, free_now, "0", seconds(reset_after()), "0"}
end

local grant, at, free = 0, now, free_now
if free_now >= want or (partial and free_now > 0) then
  grant = math.min(want, free_now)
else
  local need = want
  if partial then
    need = 1
  end
  if need > limit then
    return {0, 0, limit, free_now, "inf", seconds(reset_after()), "0"}
  end
  -- The earliest time at which enough entries have left the window: the n-th oldest entry's
  -- time plus the window.
  local n = count + need - limit
  local nth = redis.call("ZRANGE", KEYS[1], n - 1, n - 1, "WITHSCORES")
  at = tonumber(nth[2]) + window
  local wait = at - now
  if mode == "peek" or wait > max_wait then
    return {0, 0, limit, free_now, seconds(wait), seconds(reset_after()), "0"}
  end
  free = limit - redis.call("ZCOUNT", KEYS[1], "(" .. digits(at - window), "+inf")
  grant = math.min(want, free)
end

if mode == "peek" then
  return {1, 0, limit, free_now, "0", seconds(reset_after()), "0"}
end

local last = redis.call("INCRBY", KEYS[2], grant)
local first = last - grant + 1
-- ZADD in chunks: Lua's unpack is bounded by its C stack.
local CHUNK = 500
local i = first
while i <= last do
  local members = {}
  local j = i
  while j <= last and j < i + CHUNK do
    members[#members + 1] = digits(at)
    members[#members + 1] = j
    j = j + 1
  end
  redis.call("ZADD", KEYS[1], unpack(members))
  i = j
end

local ttl = reset_after()
local ttl_ms = math.ceil(ttl / 1000) + 1
redis.call("PEXPIRE", KEYS[1], ttl_ms)
redis.call("PEXPIRE", KEYS[2], ttl_ms)
if at == now then
  return {grant, limit, free - grant, ttl}
end
return {1, grant, limit, free - grant, "0", seconds(ttl), seconds(at - now)}
