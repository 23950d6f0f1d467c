-- Token bucket as GCRA (generic cell rate algorithm), with the semantics of go-redis/redis_rate
-- and redis-cell: only the theoretical arrival time (TAT) of the next permit is stored.
--
-- KEYS[1]  the TAT: seconds since EPOCH below, as a string
-- ARGV[1]  rate: permits per period (float > 0)
-- ARGV[2]  burst: the most permits granted at once (integer >= 1)
-- ARGV[3]  period: seconds (float > 0)
-- ARGV[4]  permits asked for (integer >= 0)
-- ARGV[5]  "1": partial (grant what is free, up to permits, as redis_rate's AllowAtMost)
-- ARGV[6]  max_wait: seconds (float >= 0) a grant may be scheduled ahead
-- ARGV[7]  mode: "acquire", "peek" (decide for one permit, write nothing) or "reset"
-- ARGV[8]  deadline: the caller's, unix milliseconds on its own clock ("0": none); a
--          request that arrives after it is refused with an error and writes nothing
-- Reply    {allowed (0/1), granted, limit (the rate in force, rounded down), remaining (of the burst),
--          retry_after, reset_after, wait};
--          the last three are seconds as strings, because Redis truncates Lua numbers to
--          integers. retry_after is "inf" when more permits are asked for than the burst, all or
--          nothing: such a request can never be granted. A grant that needs no wait, the
--          common case, answers {granted, limit, remaining, reset_after} instead, reset_after in
--          integer microseconds (rounded up): no strings to format.
-- The limiter runs adaptive.lua before this script: the last ARGV (and, when adaptive, seven
-- more and the last KEY) belong to it; a cap replaces `rate`, and the health factor scales
-- rate and burst alike.
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local period = tonumber(ARGV[3])
local permits = tonumber(ARGV[4])
local partial = ARGV[5] == "1"
local max_wait = tonumber(ARGV[6])
local mode = ARGV[7]

if mode == "reset" then
  redis.call("DEL", KEYS[1])
  return {1, 0, math.max(math.floor(rate + 1e-9), 1), burst, "0", "0", "0"}
end

-- Counting from a recent epoch keeps sub-microsecond precision in a double.
local EPOCH = 1767225600
local time = redis.call("TIME")
local sec, micros = tonumber(time[1]), tonumber(time[2])
local late = past_deadline(sec, micros, ARGV[8])
if late then
  return late
end
local now = (sec - EPOCH) + micros / 1000000
local factor, cap = adaptive_factor(sec, micros)
if cap ~= nil or factor ~= 1 then
  local base_rate = rate
  rate = (cap or rate) * factor
  burst = math.max(math.floor(burst * rate / base_rate), 1)
end
-- Decisions report the rate in force as their limit; the burst bounds `remaining`.
local limit = math.max(math.floor(rate + 1e-9), 1)

local interval = period / rate
local burst_offset = interval * burst
local tat = math.max(tonumber(redis.call("GET", KEYS[1]) or "0"), now)
-- Times are absolute, so their differences carry rounding of about 1e-8 s: the tolerance keeps
-- 0.9 s / 0.1 s from counting as 8.
local EPSILON = 1e-6
local free = math.floor((now + burst_offset - tat) / interval + EPSILON)
free = math.max(math.min(free, burst), 0)

local want = permits
if mode == "peek" then
  want = 1
  max_wait = 0
end

if want == 0 then
  return {1, 0, limit, free, "0", tostring(tat - now), "0"}
end

local grant, wait = 0, 0
if free >= want or (partial and free > 0) then
  grant = math.min(want, free)
else
  local need = want
  if partial then
    need = 1
  end
  wait = tat + need * interval - burst_offset - now
  -- More than the burst can never be granted at once, however long the caller waits.
  local retry = need > burst and "inf" or tostring(wait)
  if mode == "peek" or need > burst or wait > max_wait then
    return {0, 0, limit, free, retry, tostring(tat - now), "0"}
  end
  grant = need
end

if mode == "peek" then
  return {1, 0, limit, free, "0", tostring(tat - now), "0"}
end

local new_tat = tat + grant * interval
-- %.17g keeps every digit of the double; tostring would keep 14.
redis.call(
  "SET", KEYS[1], string.format("%.17g", new_tat), "PX", math.max(math.ceil((new_tat - now) * 1000), 1)
)
local remaining = math.max(math.floor((now + wait + burst_offset - new_tat) / interval + EPSILON), 0)
if wait == 0 then
  return {grant, limit, remaining, math.ceil((new_tat - now) * 1000000)}
end
return {1, grant, limit, remaining, "0", tostring(new_tat - now), tostring(wait)}
