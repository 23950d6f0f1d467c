-- Library, the fixed window's common request: counted in the current window's counter (named
-- as lib_windows.lua names them) before anything else is read. Put after lib_core.lua and
-- before the fixed window's grant block (cps_limiter/_scripts.py); defines only.
--
-- KEYS     none of its own: the counter's name is the caller's
-- Units    life_ms: milliseconds a new counter lives
-- Defines  counter_take(key, want, limit, partial, life_ms) -> granted, the count after (nil,
--          nil when Redis refused the write)

-- The common request, counted first and checked after: one INCRBY where reading the counter
-- first would cost two. A request that does not fit is taken back at once (the script is
-- atomic, so nobody sees it), or cut to what fits when partial. A Redis out of memory refuses
-- the first write (pcall): nil then, and the caller's reads decide, so that a request over the
-- limit is still denied. life_ms: how long a new counter lives.
local function counter_take(key, want, limit, partial, life_ms)
  local count = redis.pcall("INCRBY", key, want)
  if type(count) ~= "number" then
    return nil, nil
  end
  if count <= limit then
    if count == want then
      redis.call("PEXPIRE", key, math.ceil(life_ms))
    end
    return want, count
  end
  local before = count - want
  if partial and before < limit then
    redis.call("DECRBY", key, count - limit)
    return limit - before, limit
  end
  redis.call("DECRBY", key, want)
  return 0, before
end
