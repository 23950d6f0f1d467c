-- Sliding window, the common request first: permits of a limiter without an adaptive policy
-- that fit in the log now. The limiter runs this block between the library and
-- sliding_window.lua, in one script: when the permits fit it grants them as sliding_window.lua
-- would and answers at once, skipping the strategy's parsing and its look-ahead; otherwise it
-- writes nothing but the trimming of expired entries, which sliding_window.lua would do
-- anyway, and sliding_window.lua decides the request as it would alone.
--
-- KEYS, ARGV  as in sliding_window.lua: KEYS[1] the log, KEYS[2] the sequence (lib_sliding.lua);
--             ARGV[LIMIT], ARGV[WINDOW] (seconds), the request from SLIDING_REQUEST on
--             (lib_core.lua), and the last ARGV "1" when adaptive (then this block does nothing)
-- Reply    {granted, limit, remaining, reset_after}: reset_after in integer microseconds; or the
--          deadline's error, as sliding_window.lua would give it
local want, limit = common_request(SLIDING_REQUEST, LIMIT)
if want ~= nil then
  local window = math.floor(tonumber(ARGV[WINDOW]) * US + 0.5)
  local sec, micros, late = server_clock(ARGV[SLIDING_REQUEST + DEADLINE])
  if late then
    return late
  end
  local now = sec * US + micros
  sliding_trim(KEYS[1], now, window)
  local count = redis.call("ZCARD", KEYS[1])
  if count + want <= limit then
    -- Reserved entries may lie ahead of now: the log lives until the newest has left.
    local ttl = math.max(sliding_newest(KEYS[1]), now) + window - now
    local moments = {}
    for j = 1, want do
      moments[j] = now
    end
    sliding_log(KEYS[1], KEYS[2], moments, want, ttl)
    return {want, limit, limit - count - want, ttl}
  end
end
