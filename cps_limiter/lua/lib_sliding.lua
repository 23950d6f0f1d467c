-- Library, the exact sliding window's log. Prepended after lib_core.lua
-- (cps_limiter/_scripts.py); defines only.
--
-- Keys     the log: a sorted set, one member per granted permit, scored with its moment in
--          unix microseconds (exact in a double; reserved grants carry a future moment); the
--          sequence: a counter that names members uniquely (several permits share one moment)
-- Units    moments and windows in microseconds, unix
-- Defines  digits(us) -> a moment's digits in full; sliding_trim(log, now, window): expired
--          entries go; sliding_newest(log) -> the newest entry's moment, or 0;
--          sliding_log(log, seq, moments, n, ttl): logs moments[1..n], both keys living ttl
--          microseconds more
--
-- Why it is exact: a grant at moment x is made only if the entries scored after x - window,
-- the future ones included, plus the new ones are at most `limit`. Take any interval of length
-- `window` and the last grant placed in it: every other entry of the interval existed then and
-- was scored after x - window, so it was counted.

-- Unix microsecond moments have 16 digits: format them in full (tostring keeps only 14).
local function digits(us)
  return string.format("%.0f", us)
end

local function sliding_trim(log, now, window)
  redis.call("ZREMRANGEBYSCORE", log, "-inf", digits(now - window))
end

local function sliding_newest(log)
  local newest = redis.call("ZRANGE", log, -1, -1, "WITHSCORES")
  return tonumber(newest[2] or "0")
end

local function sliding_log(log, seq, moments, n, ttl)
  local last = redis.call("INCRBY", seq, n)
  -- ZADD in chunks: Lua's unpack is bounded by its C stack.
  for from = 1, n, 500 do
    local members = {}
    for j = from, math.min(from + 499, n) do
      members[#members + 1] = digits(moments[j])
      members[#members + 1] = last - n + j
    end
    redis.call("ZADD", log, unpack(members))
  end
  local ttl_ms = math.ceil(ttl / 1000) + 1
  redis.call("PEXPIRE", log, ttl_ms)
  redis.call("PEXPIRE", seq, ttl_ms)
end
