-- Fixed window: one counter per window aligned to the Redis clock, named after the window's start.
--
-- KEYS[1]  base name: "cps", "cps:<scope>", or "{cps}" on a cluster. The counters are
--          KEYS[1] .. ":" .. window_start (unix seconds), e.g. "cps:1705318245"; they are not
--          declared in KEYS because their names come from TIME, so on a cluster KEYS[1] is a hash
--          tag and every counter hashes to its slot.
-- ARGV[1]  limit: permits per window (integer >= 1)
-- ARGV[2]  window: seconds (integer >= 1)
-- ARGV[3]  permits asked for (integer >= 0)
-- ARGV[4]  "1": partial (grant what is free, up to permits); "0": all or nothing
-- ARGV[5]  max_wait: seconds (float >= 0) a grant may be reserved ahead, in a later window
-- ARGV[6]  mode: "acquire", "peek" (decide for one permit, write nothing) or "reset"
-- ARGV[7]  deadline: the caller's, unix milliseconds on its own clock ("0": none); a
--          request that arrives after it is refused with an error and writes nothing
-- Reply    {allowed (0/1), granted, limit, remaining, retry_after, reset_after, wait}; the last
--          three are seconds as strings, because Redis truncates Lua numbers to integers.
--          retry_after is "inf" when the request can never be granted (permits > limit).
--          A grant in the current window, the common case, answers {granted, limit, remaining,
--          reset_after} instead, reset_after in integer microseconds: no strings to format.
-- The limiter runs adaptive.lua before this script: the last ARGV (and, when adaptive, seven
-- more and the last KEY) belong to it, and `limit` below is the limit in force.
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local permits = tonumber(ARGV[3])
local partial = ARGV[4] == "1"
local max_wait = tonumber(ARGV[5])
local mode = ARGV[6]

-- How many windows ahead a reservation may look for room; bounds the work of one call.
local MAX_WINDOWS_AHEAD = 64

local time = redis.call("TIME")
local sec, micros = tonumber(time[1]), tonumber(time[2])
local late = past_deadline(sec, micros, ARGV[7])
if late then
  return late
end
local start = sec - (sec % window)
local elapsed = (sec - start) + micros / 1000000
local factor, cap = adaptive_factor(sec, micros)
limit = math.max(math.floor((cap or limit) * factor), 1)

local function counter(k)
  return KEYS[1] .. ":" .. (start + k * window)
end

if mode == "reset" then
  for k = -1, MAX_WINDOWS_AHEAD do
    redis.call("DEL", counter(k))
  end
  return {1, 0, limit, limit, "0", "0", "0"}
end

local want = permits
if mode == "peek" then
  want = 1
  max_wait = 0
end

-- The common case first: count the request in this window's counter and keep it when it fits,
-- which costs one command where reading the counter first would cost two. A request that does
-- not fit is taken back at once (the script is atomic, so nobody sees it) and decided below.
-- A Redis out of memory refuses the first write (pcall): the reads below decide then, as
-- before, so that a request over the limit is still denied.
local counted = nil
if mode == "acquire" and want > 0 and want <= limit then
  counted = redis.pcall("INCRBY", counter(0), want)
end
if type(counted) == "number" then
  local key = counter(0)
  local used = counted
  local reset_us = (start + window - sec) * 1000000 - micros
  if used <= limit then
    if used == want then
      -- A new counter: it outlives its window by one window, so it expires within two.
      redis.call("PEXPIRE", key, math.ceil((2 * window - elapsed) * 1000))
    end
    return {want, limit, limit - used, reset_us}
  end
  local before = used - want
  if partial and before < limit then
    redis.call("DECRBY", key, used - limit)
    return {limit - before, limit, 0, reset_us}
  end
  redis.call("DECRBY", key, want)
end

local used_now = tonumber(redis.call("GET", counter(0)) or "0")
local free_now = math.max(limit - used_now, 0)

if want == 0 then
  local reset_after = used_now > 0 and (window - elapsed) or 0
  return {1, 0, limit, free_now, "0", tostring(reset_after), "0"}
end

-- The first window, from this one on, with room for the request.
local found, free, used = nil, free_now, used_now
if want <= limit or partial then
  for k = 0, MAX_WINDOWS_AHEAD do
    if k > 0 then
      used = tonumber(redis.call("GET", counter(k)) or "0")
      free = math.max(limit - used, 0)
    end
    if free >= want or (partial and free > 0) then
      found = k
      break
    end
  end
end

if found == nil then
  local reset_after = used_now > 0 and (window - elapsed) or 0
  return {0, 0, limit, free_now, "inf", tostring(reset_after), "0"}
end

local wait = 0
if found > 0 then
  wait = found * window - elapsed
end
if mode == "peek" or wait > max_wait then
  local reset_after = used_now > 0 and (window - elapsed) or 0
  local allowed = (mode == "peek" and wait == 0) and 1 or 0
  return {allowed, 0, limit, free_now, tostring(wait), tostring(reset_after), "0"}
end

local grant = math.min(want, free)
local key = counter(found)
-- The counter outlives its window by one window, so it expires by itself within two windows;
-- its expiry is set once, when it is created, as later grants would set the same moment.
if redis.call("INCRBY", key, grant) == grant then
  redis.call("PEXPIRE", key, math.ceil(((found + 1) * window - elapsed + window) * 1000))
end
local reset_after = (found + 1) * window - elapsed
return {1, grant, limit, free - grant, "0", tostring(reset_after), tostring(wait)}
