-- Library, the token bucket as GCRA (generic cell rate algorithm), with the semantics of
-- go-redis/redis_rate and redis-cell: only the theoretical arrival time (TAT) of the next permit
-- is stored. Prepended after lib_core.lua (cps_limiter/_scripts.py); defines only.
--
-- Keys     the TAT: seconds since EPOCH, as a string with every digit of the double
-- Units    moments in seconds since EPOCH; interval = period / rate, seconds per permit
-- Defines  gcra_tat(key, now) -> the TAT, never before now; gcra_free(now, tat, interval,
--          burst) -> the permits the bucket holds at now; gcra_at(tat, interval, burst, need)
--          -> the moment `need` permits are held; gcra_store(key, tat, now)

local function gcra_tat(key, now)
  return math.max(tonumber(redis.call("GET", key) or "0"), now)
end

local function gcra_free(now, tat, interval, burst)
  -- Times are absolute, so their differences carry rounding of about 1e-8 s: the tolerance
  -- keeps 0.9 s / 0.1 s from counting as 8. A local of the function, not of the library: the
  -- function would capture that as an upvalue, built again on every call.
  local EPSILON = 1e-6
  local free = math.floor((now + interval * burst - tat) / interval + EPSILON)
  return math.max(math.min(free, burst), 0)
end

local function gcra_at(tat, interval, burst, need)
  return tat + need * interval - interval * burst
end

local function gcra_store(key, tat, now)
  -- %.17g keeps every digit of the double; tostring would keep 14.
  redis.call("SET", key, string.format("%.17g", tat), "PX", math.max(math.ceil((tat - now) * 1000), 1))
end
