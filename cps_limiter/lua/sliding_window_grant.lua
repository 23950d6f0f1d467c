-- Sliding window, the common request first: permits of a limiter without an adaptive policy
-- that fit in the log now. The limiter runs this block between adaptive.lua and
-- sliding_window.lua, in one script: when the permits fit it grants them exactly as
-- sliding_window.lua would (same entries, same member names, same expiries) and answers at
-- once, skipping the strategy's parsing, its helpers and its look-ahead; otherwise it writes
-- nothing but the trimming of expired entries, which sliding_window.lua would do anyway, and
-- sliding_window.lua decides the request as it would alone.
--
-- KEYS, ARGV  as in sliding_window.lua: KEYS[1] the log, KEYS[2] the member counter;
--             ARGV[1] limit, ARGV[2] window (seconds), ARGV[3] permits, ARGV[6] mode,
--             ARGV[7] deadline (unix milliseconds, "0": none), and the last ARGV "1" when
--             adaptive (then this block does nothing)
-- Reply    {granted, limit, remaining, reset_after}: reset_after in integer microseconds; or the
--          deadline's error, as sliding_window.lua would give it
if ARGV[6] == "acquire" and ARGV[#ARGV] ~= "1" then
  local limit = tonumber(ARGV[1])
  local want = tonumber(ARGV[3])
  -- Up to one ZADD's worth (sliding_window.lua's chunk): Lua's unpack is bounded by its C stack.
  if want > 0 and want <= limit and want <= 500 then
    local clock = redis.call("TIME")
    local now_sec, micros = tonumber(clock[1]), tonumber(clock[2])
    local too_late = past_deadline(now_sec, micros, ARGV[7])
    if too_late then
      return too_late
    end
    local now = now_sec * 1000000 + micros
    local window = math.floor(tonumber(ARGV[2]) * 1000000 + 0.5)
    redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", string.format("%.0f", now - window))
    local count = redis.call("ZCARD", KEYS[1])
    if count + want <= limit then
      -- Reserved entries may lie ahead of now: the log lives until the newest has left.
      local newest = redis.call("ZRANGE", KEYS[1], -1, -1, "WITHSCORES")
      local last = redis.call("INCRBY", KEYS[2], want)
      local stamp = string.format("%.0f", now)
      local members = {}
      for j = 1, want do
        members[2 * j - 1] = stamp
        members[2 * j] = last - want + j
      end
      redis.call("ZADD", KEYS[1], unpack(members))
      local ttl = window
      if newest[2] ~= nil then
        ttl = math.max(tonumber(newest[2]), now) + window - now
      end
      local ttl_ms = math.ceil(ttl / 1000) + 1
      redis.call("PEXPIRE", KEYS[1], ttl_ms)
      redis.call("PEXPIRE", KEYS[2], ttl_ms)
      return {want, limit, limit - count - want, ttl}
    end
  end
end
