-- Fixed window: one counter per window aligned to the Redis clock, named after the window's
-- start (lib_windows.lua counts them).
--
-- KEYS[1]  base name: "cps", "cps:<scope>", or "{cps}" on a cluster. The counters are
--          KEYS[1] .. ":" .. window_start (unix seconds), e.g. "cps:1705318245"; they are not
--          declared in KEYS because their names come from TIME, so on a cluster KEYS[1] is a hash
--          tag and every counter hashes to its slot.
-- ARGV     named in lib_core.lua: [LIMIT] permits per window (integer >= 1), [WINDOW] seconds
--          (integer >= 1), then the request from FIXED_REQUEST (3) on: permits, partial,
--          max_wait (seconds a grant may be reserved ahead, in a later window), mode
--          ("acquire", "peek": decide for one permit and write nothing, or "reset"), deadline
--          (unix milliseconds on the caller's clock, "0": none; a request that arrives after
--          it is refused with an error and writes nothing)
-- Reply    {allowed (0/1), granted, limit, remaining, retry_after, reset_after, wait}; the last
--          three are seconds as strings, because Redis truncates Lua numbers to integers.
--          retry_after is "inf" when the request can never be granted (permits > limit).
--          A grant in the current window, the common case, answers {granted, limit, remaining,
--          reset_after} instead, reset_after in integer microseconds: no strings to format.
-- The limiter runs lib_core.lua, adaptive.lua, lib_windows.lua and fixed_window_grant.lua
-- before this script: the last ARGV (and, when adaptive, seven more and the last KEY) belong
-- to adaptive.lua, and `limit` below is the limit in force.
local limit = tonumber(ARGV[LIMIT])
local want, partial, max_wait, mode, sec, micros, late = request_of(FIXED_REQUEST)

if late then
  return late
end
limit = adaptive_limit(limit, sec, micros)
local now = (sec - EPOCH) * US + micros
local w = window_of(KEYS[1], tonumber(ARGV[WINDOW]))
local start = window_start(w, now)

if mode == "reset" then
  window_clear(w, now)
  return {1, 0, limit, limit, "0", "0", "0"}
end

if mode == "acquire" and want > 0 and want <= limit then
  local granted, count = counter_take(window_key(w, start), want, limit, partial, (start + 2 * w.us - now) / 1000)
  if granted ~= nil and granted > 0 then
    return {granted, limit, limit - count, start + w.us - now}
  end
  w.used[start] = count
end

local used_now = window_used(w, start)
local free_now = math.max(limit - used_now, 0)
local reset_after = used_now > 0 and seconds(start + w.us - now) or "0"
if want == 0 then
  return {1, 0, limit, free_now, "0", reset_after, "0"}
end

-- The first window, from this one on, with room for the request.
local found, free = nil, free_now
if want <= limit or partial then
  for k = 0, MAX_WINDOWS_AHEAD do
    free = math.max(limit - window_used(w, start + k * w.us), 0)
    if free >= want or (partial and free > 0) then
      found = k
      break
    end
  end
end
if found == nil then
  return {0, 0, limit, free_now, "inf", reset_after, "0"}
end

local from = start + found * w.us
local wait = found > 0 and from - now or 0
if mode == "peek" or wait > max_wait * US then
  local allowed = (mode == "peek" and wait == 0) and 1 or 0
  return {allowed, 0, limit, free_now, seconds(wait), reset_after, "0"}
end
local grant = math.min(want, free)
window_add(w, {from}, 1, grant, now)
return {1, grant, limit, free - grant, "0", seconds(from + w.us - now), seconds(wait)}
