-- Token bucket, the common request first: permits of a limiter without an adaptive policy that
-- the bucket holds now. The limiter runs this block between the library and token_bucket.lua,
-- in one script: when the permits are there it answers at once, skipping the strategy's
-- parsing and the adaptive call; otherwise it writes nothing and token_bucket.lua decides the
-- request as it would alone.
--
-- KEYS, ARGV  as in token_bucket.lua: KEYS[1] the TAT (lib_gcra.lua); ARGV[RATE] (permits per
--             period), ARGV[BURST], ARGV[PERIOD] (seconds), the request from TOKEN_REQUEST on
--             (lib_core.lua), and the last ARGV "1" when adaptive (then this block does nothing)
-- Reply    {granted, limit, remaining, reset_after}: reset_after in integer microseconds
--          (rounded up); or the deadline's error, as token_bucket.lua would give it
local want, burst = common_request(TOKEN_REQUEST, BURST)
if want ~= nil then
  local interval = tonumber(ARGV[PERIOD]) / tonumber(ARGV[RATE])
  local sec, micros, late = server_clock(ARGV[TOKEN_REQUEST + DEADLINE])
  if late then
    return late
  end
  local now = (sec - EPOCH) + micros / US
  local tat = gcra_tat(KEYS[1], now)
  if gcra_free(now, tat, interval, burst) >= want then
    tat = tat + want * interval
    gcra_store(KEYS[1], tat, now)
    return {want, burst, gcra_free(now, tat, interval, burst), math.ceil((tat - now) * US)}
  end
end
