-- Paced window: the fixed window's per-window counters, with the permits spaced evenly in time.
--
-- KEYS[1]  base name: "cps", "cps:<scope>", or "{cps}" on a cluster. The counters are
--          KEYS[1] .. ":" .. window_start (unix seconds), e.g. "cps:1705318245", exactly as the
--          fixed window names them; each holds the permits whose moment falls in its window and
--          expires by itself within two windows. Not declared in KEYS, as their names come from
--          TIME: on a cluster KEYS[1] is a hash tag and every counter hashes to its slot.
-- KEYS[2]  the pacer: the next free moment, microseconds since EPOCH (lib_core.lua), a string
-- ARGV     named in lib_core.lua: [LIMIT] permits per window (integer >= 1), [WINDOW] seconds
--          (integer >= 1), [HEADROOM] fraction (0 <= h < 1) added to the spacing of
--          window / limit, then the request from PACED_REQUEST (4) on: permits, partial (grant
--          the free slots up to max_wait, up to permits), max_wait (seconds; every granted
--          permit's moment is at most this far ahead), mode ("acquire", "peek": decide for one
--          permit and write nothing, or "reset"), deadline (unix milliseconds on the caller's
--          clock, "0": none; a request that arrives after it is refused with an error and
--          writes nothing)
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
-- The limiter runs the library (lib_core.lua, lib_counter.lua, lib_pacer.lua, lib_request.lua,
-- lib_windows.lua, lib_paced.lua), adaptive.lua and paced_window_grant.lua before this script:
-- the last ARGV (and, when adaptive, seven more and the last KEY) belong to adaptive.lua, and
-- `limit` below is the limit in force. When the grant block read the clock, the limit in force
-- and the counter and pacer (paced_read), this script decides from what it read.
local limit = tonumber(ARGV[LIMIT])
local window = tonumber(ARGV[WINDOW])
local want, partial, max_wait, mode, sec, micros, late = request_of(PACED_REQUEST, paced_read)

if late then
  return late
end
local now = (sec - EPOCH) * US + micros
if paced_read then
  limit = paced_read[3]
else
  limit = adaptive_limit(limit, sec, micros)
end
local w = window_of(KEYS[1], window)
local spacing = paced_spacing(w.us, tonumber(ARGV[HEADROOM]), limit)
local now_start = window_start(w, now)

if mode == "reset" then
  redis.call("DEL", KEYS[2])
  window_clear(w, now)
  return {1, 0, limit, limit, "0", "0", "0", ""}
end

-- Every decision reads this window's counter and the pacer: one command for both.
local state = paced_read and paced_read[4] or redis.call("MGET", window_key(w, now_start), KEYS[2])
w.used[now_start] = tonumber(state[1] or "0")
local free_now = math.max(limit - w.used[now_start], 0)
local next_free = math.max(tonumber(state[2] or "0"), now)
if want == 0 then
  return {1, 0, limit, free_now, "0", seconds(next_free - now), "0", ""}
end

-- To the nearest microsecond: a max_wait of exactly n spacings may be a hair less as a double.
local max_wait_us = math.floor(max_wait * US + 0.5)
local slots, first, t = paced_slots(w, limit, spacing, next_free, now + max_wait_us, want, now)
local need = partial and 1 or want
if mode == "peek" then
  local allowed = (first ~= nil and first <= now) and 1 or 0
  local retry = allowed == 1 and "0" or paced_retry(first, need, spacing, max_wait_us, now)
  return {allowed, 0, limit, free_now, retry, seconds(next_free - now), "0", ""}
end
if #slots < need then
  return {0, 0, limit, free_now, paced_retry(first, need, spacing, max_wait_us, now), seconds(next_free - now), "0", ""}
end

window_add(w, slots, #slots, 1, now)
pacer_store(KEYS[2], t, now, w.us)
local left = math.max(limit - w.used[now_start], 0)
-- One permit for now, the common case: the short reply, integers only (reset_after in
-- microseconds), as the fixed window's.
if #slots == 1 and slots[1] == now then
  return {1, limit, left, t - now}
end
return {1, #slots, limit, left, "0", seconds(t - now), seconds(slots[1] - now), paced_offsets(slots, #slots)}
