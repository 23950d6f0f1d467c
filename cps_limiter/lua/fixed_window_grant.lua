-- Fixed window, the common request first: permits of a limiter without an adaptive policy,
-- granted in the current window. The limiter runs this block between adaptive.lua and
-- fixed_window.lua, in one script: when the permits fit it answers at once, skipping the
-- strategy's parsing, the adaptive reads and the look-ahead; otherwise it writes nothing and
-- fixed_window.lua decides the request as it would alone.
--
-- KEYS, ARGV  as in fixed_window.lua: KEYS[1] the base name of the counters
--             KEYS[1] .. ":" .. window_start (unix seconds); ARGV[1] limit, ARGV[2] window
--             (seconds), ARGV[3] permits, ARGV[6] mode, ARGV[7] deadline (unix milliseconds,
--             "0": none), and the last ARGV "1" when adaptive (then this block does nothing)
-- Reply    {granted, limit, remaining, reset_after}: reset_after in integer microseconds; or the
--          deadline's error, as fixed_window.lua would give it
if ARGV[6] == "acquire" and ARGV[#ARGV] ~= "1" then
  local limit = tonumber(ARGV[1])
  local want = tonumber(ARGV[3])
  if want > 0 and want <= limit then
    local clock = redis.call("TIME")
    local now_sec, micros = tonumber(clock[1]), tonumber(clock[2])
    local too_late = past_deadline(now_sec, micros, ARGV[7])
    if too_late then
      return too_late
    end
    local span = tonumber(ARGV[2])
    local from = now_sec - (now_sec % span)
    local name = KEYS[1] .. ":" .. from
    -- pcall: a Redis out of memory refuses a script's first write, and a request it would
    -- deny must still be denied by fixed_window.lua's reads, as before this block counted.
    local count = redis.pcall("INCRBY", name, want)
    if type(count) == "number" then
      if count <= limit then
        if count == want then
          -- A new counter: it outlives its window by one window, so it expires within two.
          local into = (now_sec - from) + micros / 1000000
          redis.call("PEXPIRE", name, math.ceil((2 * span - into) * 1000))
        end
        return {want, limit, limit - count, (from + span - now_sec) * 1000000 - micros}
      end
      -- Taken back at once (the script is atomic, so nobody sees it); fixed_window.lua decides.
      redis.call("DECRBY", name, want)
    end
  end
end
