-- Library, the window counters: the fixed window's counting, which the paced window and the
-- rules' fixed and paced rules count with too (lib_counter.lua holds its common request, and
-- lib_paced.lua the paced slot search). Put after lib_core.lua (cps_limiter/_scripts.py);
-- defines only.
--
-- Keys     one counter per window of `window` whole seconds, the windows aligned to unix
--          seconds on the Redis clock, named base .. ":" .. window_start (unix seconds), e.g.
--          "cps:1705318245". A counter holds the permits whose moment falls in its window, never
--          more than the limit in force, and outlives its window by one window, so that it
--          expires by itself within two. On a cluster base is a hash tag: the names come from
--          TIME, so they are not declared in KEYS, and every counter hashes to base's slot.
-- Units    moments and window starts: microseconds since EPOCH
-- Defines  window_of(base, window) -> w, a window's state: base, us (its length), phase, used
--          (the counts read, by start); window_start(w, t); window_key(w, start);
--          window_used(w, start) (read once); window_add(w, moments, n, each,
--          now); window_clear(w, now)

local function window_of(base, window)
  -- Windows start at multiples of `window` in unix seconds, wherever EPOCH falls.
  return {base = base, us = window * US, phase = (EPOCH % window) * US, used = {}}
end

local function window_start(w, t)
  return t - ((t + w.phase) % w.us)
end

local function window_key(w, start)
  return w.base .. ":" .. (start / US + EPOCH)
end

local function window_used(w, start)
  local used = w.used[start]
  if used == nil then
    used = tonumber(redis.call("GET", window_key(w, start)) or "0")
    w.used[start] = used
  end
  return used
end

-- Counts `each` permits at each of moments[1..n] in its window's counter: one INCRBY per
-- window however many moments fall in it.
local function window_add(w, moments, n, each, now)
  local added = {}
  for j = 1, n do
    local start = window_start(w, moments[j])
    added[start] = (added[start] or 0) + each
  end
  for start, count in pairs(added) do
    local key = window_key(w, start)
    -- The expiry is set once, when the counter is new: later grants would set the same moment.
    if redis.call("INCRBY", key, count) == count then
      redis.call("PEXPIRE", key, math.ceil((start + 2 * w.us - now) / 1000))
    end
  end
end

local function window_clear(w, now)
  local start = window_start(w, now)
  for k = -1, MAX_WINDOWS_AHEAD do
    redis.call("DEL", window_key(w, start + k * w.us))
  end
end
