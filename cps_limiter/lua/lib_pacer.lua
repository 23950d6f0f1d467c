-- Library, the pacer of the paced window and the rules' paced rule: the next free moment, the
-- permits `spacing` apart. Put after lib_core.lua (cps_limiter/_scripts.py); defines only.
--
-- KEYS     the pacer: the next free moment, microseconds since EPOCH, as a string
-- Units    microseconds; window_us: the window's length
-- Defines  paced_spacing(window_us, headroom, limit) -> microseconds between permits;
--          pacer_store(key, next_free, now, window_us)

-- Consecutive permits at least this far apart keep any window to `limit`; the headroom widens
-- the spacing beyond window / limit.
local function paced_spacing(window_us, headroom, limit)
  return math.ceil(window_us * (1 + headroom) / limit)
end

-- The pacer keeps the next free moment until it has passed, and a window more.
local function pacer_store(key, next_free, now, window_us)
  redis.call("SET", key, string.format("%d", next_free), "PX", math.ceil((next_free - now) / 1000) + window_us / 1000)
end
