-- Fixed window, the common request first: permits of a limiter without an adaptive policy,
-- granted in the current window. The limiter runs this block between the library and
-- fixed_window.lua, in one script: when permits fit it answers at once, skipping the
-- strategy's parsing, the adaptive reads and the look-ahead; otherwise it writes nothing and
-- fixed_window.lua decides the request as it would alone.
--
-- KEYS, ARGV  as in fixed_window.lua: KEYS[1] the base name of the counters (lib_windows.lua);
--             ARGV[LIMIT], ARGV[WINDOW] (whole seconds), the request from FIXED_REQUEST on
--             (lib_core.lua), and the last ARGV "1" when adaptive (then this block does nothing)
-- Reply    {granted, limit, remaining, reset_after}: reset_after in integer microseconds; or the
--          deadline's error, as fixed_window.lua would give it
local want, limit = common_request(FIXED_REQUEST, LIMIT)
if want ~= nil then
  local window = tonumber(ARGV[WINDOW])
  local sec, micros, late = server_clock(ARGV[FIXED_REQUEST + DEADLINE])
  if late then
    return late
  end
  -- In whole seconds, as the counters are named: the cheapest arithmetic for the common case.
  local start = sec - sec % window
  local partial = ARGV[FIXED_REQUEST + PARTIAL] == "1"
  local life_ms = (start + 2 * window - sec) * 1000 - micros / 1000
  local granted, count = counter_take(KEYS[1] .. ":" .. start, want, limit, partial, life_ms)
  if granted ~= nil and granted > 0 then
    return {granted, limit, limit - count, (start + window - sec) * US - micros}
  end
end
