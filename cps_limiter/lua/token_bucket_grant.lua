-- Token bucket, the common request first: permits of a limiter without an adaptive policy that
-- the bucket holds now. The limiter runs this block between adaptive.lua and token_bucket.lua,
-- in one script: when the permits are there it answers at once, skipping the strategy's
-- parsing and the adaptive call; otherwise it writes nothing and token_bucket.lua decides the
-- request as it would alone. The arithmetic is token_bucket.lua's, term for term.
--
-- KEYS, ARGV  as in token_bucket.lua: KEYS[1] the TAT (seconds since EPOCH below, a string);
--             ARGV[1] rate (permits per period), ARGV[2] burst, ARGV[3] period (seconds),
--             ARGV[4] permits, ARGV[7] mode, ARGV[8] deadline (unix milliseconds, "0": none),
--             and the last ARGV "1" when adaptive (then this block does nothing)
-- Reply    {granted, limit, remaining, reset_after}: reset_after in integer microseconds
--          (rounded up); or the deadline's error, as token_bucket.lua would give it
if ARGV[7] == "acquire" and ARGV[#ARGV] ~= "1" then
  local want = tonumber(ARGV[4])
  local full = tonumber(ARGV[2])
  if want > 0 and want <= full then
    local clock = redis.call("TIME")
    local now_sec, micros = tonumber(clock[1]), tonumber(clock[2])
    local too_late = past_deadline(now_sec, micros, ARGV[8])
    if too_late then
      return too_late
    end
    local per_second = tonumber(ARGV[1])
    local now = (now_sec - 1767225600) + micros / 1000000
    local step = tonumber(ARGV[3]) / per_second
    local offset = step * full
    local tat = math.max(tonumber(redis.call("GET", KEYS[1]) or "0"), now)
    local held = math.max(math.min(math.floor((now + offset - tat) / step + 1e-6), full), 0)
    if held >= want then
      local new_tat = tat + want * step
      redis.call(
        "SET", KEYS[1], string.format("%.17g", new_tat), "PX", math.max(math.ceil((new_tat - now) * 1000), 1)
      )
      local left = math.max(math.floor((now + offset - new_tat) / step + 1e-6), 0)
      local limit = math.max(math.floor(per_second + 1e-9), 1)
      return {want, limit, left, math.ceil((new_tat - now) * 1000000)}
    end
  end
end
