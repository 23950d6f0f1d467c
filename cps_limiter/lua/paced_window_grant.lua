-- Paced window, the common request first: one permit for now, the pacer idle and the current
-- window's counter with room, for a limiter with or without an adaptive policy (the dialer's
-- has one). The limiter runs this block between the library's core, adaptive.lua, the counter
-- and the pacer, and the rest of the library and paced_window.lua, in one script: it grants the
-- permit as paced_window.lua would (same counter, same pacer) and answers at once; otherwise it
-- writes nothing and leaves what it read in paced_read, and paced_window.lua decides from it
-- without reading TIME, the adaptive hash or the counter and the pacer again.
--
-- KEYS, ARGV  as in paced_window.lua: KEYS[1] the counters' base name (lib_windows.lua),
--             KEYS[2] the pacer (lib_pacer.lua); ARGV[LIMIT], ARGV[WINDOW] (whole seconds),
--             ARGV[HEADROOM], the request from PACED_REQUEST on (lib_core.lua), then
--             adaptive.lua's
-- Reply    {granted, limit, remaining, reset_after}: reset_after in integer microseconds; or the
--          deadline's error, as paced_window.lua would give it
-- Leaves   paced_read = {seconds, micros, limit in force, MGET's reply} when it read them and
--          the permit is not for now; nil when it read nothing
local paced_read = nil
if ARGV[PACED_REQUEST + MODE] == "acquire" and ARGV[PACED_REQUEST + PERMITS] == "1" then
  local sec, micros, late = server_clock(ARGV[PACED_REQUEST + DEADLINE])
  if late then
    return late
  end
  local limit = adaptive_limit(tonumber(ARGV[LIMIT]), sec, micros)
  -- In whole seconds, as the counters are named: the cheapest arithmetic for the common case.
  local window = tonumber(ARGV[WINDOW])
  local start = sec - sec % window
  local key = KEYS[1] .. ":" .. start
  local state = redis.call("MGET", key, KEYS[2])
  local used, now = tonumber(state[1] or "0"), (sec - EPOCH) * US + micros
  if used < limit and tonumber(state[2] or "0") <= now then
    local spacing = paced_spacing(window * US, tonumber(ARGV[HEADROOM]), limit)
    local life_ms = (start + 2 * window - sec) * 1000 - micros / 1000
    local granted = counter_take(key, 1, limit, false, life_ms)
    if granted == 1 then
      pacer_store(KEYS[2], now + spacing, now, window * US)
      return {1, limit, limit - used - 1, spacing}
    end
  end
  paced_read = {sec, micros, limit, state}
end
