-- Library, the window counters: the fixed window's counting, which the paced window and the
-- rules' fixed and paced rules count with too, and the paced slot search. Prepended after
-- lib_core.lua (cps_limiter/_scripts.py); defines only.
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
--          window_used(w, start) (read once); window_add(w, start, n, now);
--          window_add_all(w, moments, n, now); window_clear(w, now);
--          counter_take(key, want, limit, partial, life_ms) -> granted, count (nil: not written);
--          paced_slots(w, limit, spacing, from, horizon, want, now) -> slots, first, next;
--          pacer_store(key, next_free, now, w); paced_retry(first, need, spacing, max_wait_us,
--          now); paced_offsets(slots, n)

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

local function window_add(w, start, n, now)
  local key = window_key(w, start)
  -- The expiry is set once, when the counter is new: later grants would set the same moment.
  if redis.call("INCRBY", key, n) == n then
    redis.call("PEXPIRE", key, math.ceil((start + 2 * w.us - now) / 1000))
  end
end

-- One INCRBY per window however many moments fall in it.
local function window_add_all(w, moments, n, now)
  local added = {}
  for j = 1, n do
    local start = window_start(w, moments[j])
    added[start] = (added[start] or 0) + 1
  end
  for start, count in pairs(added) do
    window_add(w, start, count, now)
  end
end

local function window_clear(w, now)
  local start = window_start(w, now)
  for k = -1, MAX_WINDOWS_AHEAD do
    redis.call("DEL", window_key(w, start + k * w.us))
  end
end

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

-- The paced slots: from `from` on, `spacing` apart, skipping windows already full, at most
-- `want` of them and none after `horizon`; each is counted in w.used as it is found. Returns
-- the slots, the first free moment (nil when none lies within MAX_WINDOWS_AHEAD windows) and
-- the moment after the last slot.
local function paced_slots(w, limit, spacing, from, horizon, want, now)
  local last_window = window_start(w, now) + MAX_WINDOWS_AHEAD * w.us
  local slots, first, t = {}, nil, from
  while #slots < want and t < last_window do
    local start = window_start(w, t)
    if window_used(w, start) >= limit then
      t = start + w.us
    else
      first = first or t
      if t > horizon then
        break
      end
      slots[#slots + 1] = t
      w.used[start] = w.used[start] + 1
      t = t + spacing
    end
  end
  return slots, first, t
end

-- The pacer keeps the next free moment until it has passed, and a window more.
local function pacer_store(key, next_free, now, w)
  redis.call("SET", key, string.format("%d", next_free), "PX", math.ceil((next_free - now) / 1000) + w.us / 1000)
end

-- A paced refusal's retry_after: when the first free slot comes, if the request's slots fit
-- within max_wait from there; never ("inf") otherwise.
local function paced_retry(first, need, spacing, max_wait_us, now)
  if first ~= nil and (need - 1) * spacing <= max_wait_us then
    return seconds(first - now)
  end
  return "inf"
end

-- The later slots' moments, microseconds after the first, space-separated ("" for one).
local function paced_offsets(slots, n)
  local offsets = {}
  for j = 2, n do
    offsets[#offsets + 1] = string.format("%d", slots[j] - slots[1])
  end
  return table.concat(offsets, " ")
end
