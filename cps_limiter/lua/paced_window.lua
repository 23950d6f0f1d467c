-- Paced window: the fixed window's per-window counters, with the permits spaced evenly in time.
--
-- KEYS[1]  base name: "cps", "cps:<scope>", or "{cps}" on a cluster. The counters are
--          KEYS[1] .. ":" .. window_start (unix seconds), e.g. "cps:1705318245", exactly as the
--          fixed window names them; each holds the permits whose moment falls in its window and
--          expires by itself within two windows. Not declared in KEYS, as their names come from
--          TIME: on a cluster KEYS[1] is a hash tag and every counter hashes to its slot.
-- KEYS[2]  the pacer: the next free moment, microseconds since EPOCH below, as a string
-- ARGV[1]  limit: permits per window (integer >= 1)
-- ARGV[2]  window: seconds (integer >= 1)
-- ARGV[3]  headroom: fraction (0 <= h < 1) added to the spacing of window / limit
-- ARGV[4]  permits asked for (integer >= 0)
-- ARGV[5]  "1": partial (grant the free slots up to max_wait, up to permits); "0": all or nothing
-- ARGV[6]  max_wait: seconds (float >= 0); every granted permit's moment is at most this far ahead
-- ARGV[7]  mode: "acquire", "peek" (decide for one permit, write nothing) or "reset"
-- ARGV[8]  deadline: the caller's, unix milliseconds on its own clock ("0": none); a
--          request that arrives after it is refused with an error and writes nothing
-- Reply    {allowed (0/1), granted, limit, remaining, retry_after, reset_after, wait, offsets}:
--          retry_after, reset_after and wait are seconds as strings, because Redis truncates Lua
--          numbers to integers. wait is when the first granted permit may be used; offsets holds
--          the others' moments as microseconds after the first, space-separated ("" for one).
--          remaining is what the current window's counter has left; reset_after is when the
--          pacer is idle again. retry_after is "inf" when the request can never be granted
--          within max_wait (all or nothing, and its permits span more than max_wait).
--          One permit granted for now, the common case, answers {granted, limit, remaining,
--          reset_after} instead, reset_after in integer microseconds: no strings to format.
-- Guarantee: consecutive permits are at least spacing = ceil(window * (1 + headroom) / limit)
-- apart on the Redis clock, none has a moment in the past, and no counter exceeds the limit in
-- force (the spacing alone keeps a window to `limit`; the counters also hold when the limit in
-- force drops mid-window).
-- The limiter runs adaptive.lua before this script: the last ARGV (and, when adaptive, seven
-- more and the last KEY) belong to it, and `limit` below is the limit in force.
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local headroom = tonumber(ARGV[3])
local permits = tonumber(ARGV[4])
local partial = ARGV[5] == "1"
local max_wait = tonumber(ARGV[6])
local mode = ARGV[7]

-- How many windows ahead a reservation may look for room; bounds the work of one call.
local MAX_WINDOWS_AHEAD = 64
-- Counting microseconds from a recent epoch keeps every moment an exact integer in a double.
local EPOCH = 1767225600
local US = 1000000

local time = redis.call("TIME")
local sec, micros = tonumber(time[1]), tonumber(time[2])
local late = past_deadline(sec, micros, ARGV[8])
if late then
  return late
end
local now = (sec - EPOCH) * US + micros
local factor, cap = adaptive_factor(sec, micros)
limit = math.max(math.floor((cap or limit) * factor), 1)
local window_us = window * US
local spacing = math.ceil(window_us * (1 + headroom) / limit)

-- Windows start where the fixed window's do, at multiples of `window` in unix seconds.
local epoch_phase = (EPOCH % window) * US
local function start_of(t)
  return t - ((t + epoch_phase) % window_us)
end

local function counter(start)
  return KEYS[1] .. ":" .. string.format("%d", start / US + EPOCH)
end

local now_start = start_of(now)

if mode == "reset" then
  redis.call("DEL", KEYS[2])
  for k = -1, MAX_WINDOWS_AHEAD do
    redis.call("DEL", counter(now_start + k * window_us))
  end
  return {1, 0, limit, limit, "0", "0", "0", ""}
end

local want = permits
if mode == "peek" then
  want = 1
  max_wait = 0
end

-- Every decision reads this window's counter and the pacer: one command for both.
local state = redis.call("MGET", counter(now_start), KEYS[2])
local used = {[now_start] = tonumber(state[1] or "0")}
local function used_in(start)
  if used[start] == nil then
    used[start] = tonumber(redis.call("GET", counter(start)) or "0")
  end
  return used[start]
end

local free_now = math.max(limit - used[now_start], 0)
local next_free = math.max(tonumber(state[2] or "0"), now)
local function seconds(us)
  if us <= 0 then
    return "0"
  end
  return tostring(us / US)
end

if want == 0 then
  return {1, 0, limit, free_now, "0", seconds(next_free - now), "0", ""}
end

-- The slots: from the next free moment on, `spacing` apart, skipping windows already full.
-- To the nearest microsecond: a max_wait of exactly n spacings may be a hair less as a double.
local max_wait_us = math.floor(max_wait * US + 0.5)
local horizon = now + max_wait_us
local last_window = now_start + MAX_WINDOWS_AHEAD * window_us
local slots = {}
local first = nil
local t = next_free
while #slots < want and t < last_window do
  local start = start_of(t)
  if used_in(start) >= limit then
    t = start + window_us
  else
    first = first or t
    if t > horizon then
      break
    end
    slots[#slots + 1] = t
    used[start] = used[start] + 1
    t = t + spacing
  end
end

local need = partial and 1 or want
if mode == "peek" or #slots < need then
  local retry = "inf"
  if first ~= nil and (need - 1) * spacing <= max_wait_us then
    retry = seconds(first - now)
  end
  if mode == "peek" then
    local allowed = (first ~= nil and first <= now) and 1 or 0
    return {allowed, 0, limit, free_now, allowed == 1 and "0" or retry, seconds(next_free - now), "0", ""}
  end
  return {0, 0, limit, free_now, retry, seconds(next_free - now), "0", ""}
end

-- Grant: count each permit in its window's counter, set a counter's expiry once, when it is new.
local added = {}
for _, slot in ipairs(slots) do
  local start = start_of(slot)
  added[start] = (added[start] or 0) + 1
end
for start, n in pairs(added) do
  if redis.call("INCRBY", counter(start), n) == n then
    redis.call("PEXPIRE", counter(start), math.ceil((start + 2 * window_us - now) / 1000))
  end
end
redis.call("SET", KEYS[2], string.format("%d", t), "PX", math.ceil((t - now) / 1000) + window * 1000)

-- One permit for now, the common case: the short reply, integers only (reset_after in
-- microseconds), as the fixed window's.
if #slots == 1 and slots[1] == now then
  return {1, limit, math.max(limit - used_in(now_start), 0), t - now}
end
local offsets = {}
for i = 2, #slots do
  offsets[#offsets + 1] = string.format("%d", slots[i] - slots[1])
end
return {
  1,
  #slots,
  limit,
  math.max(limit - used_in(now_start), 0),
  "0",
  seconds(t - now),
  seconds(slots[1] - now),
  table.concat(offsets, " "),
}
