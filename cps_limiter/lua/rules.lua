-- Rules: one decision over several limits at once (a trunk's CPS, a campaign's CPS, a campaign's
-- concurrency), all or nothing, in one script: a permit is granted only when every rule has room
-- for it, and a rule that denies leaves nothing taken from the others.
--
-- KEYS     per rule, in the order of the rules:
--            paced:       base, base .. ":pace" (as paced_window.lua; counters base .. ":" .. t)
--            fixed:       base (counters base .. ":" .. t, as fixed_window.lua)
--            token:       base .. ":tat" (as token_bucket.lua: seconds since EPOCH below)
--            sliding:     base .. ":log", base .. ":seq" (as sliding_window.lua)
--            concurrency: the lease set, a ZSET: member = lease id, score = expiry, unix ms
--          On a cluster every base carries the same hash tag, so one decision is one slot.
-- ARGV[1]  n: the number of rules (>= 1)
-- ARGV[2]  permits asked for (integer >= 0)
-- ARGV[3]  "1": partial (the longest run of permits every rule allows, up to permits); "0": all
--          or nothing
-- ARGV[4]  max_wait: seconds (float >= 0) a paced rule may reserve slots ahead; without a paced
--          rule every permit is for now
-- ARGV[5]  deadline: the caller's, unix milliseconds on its own clock ("0": none); a request
--          that arrives after it is refused with an error and writes nothing
-- ARGV[6]  m: the number of lease ids (permits when a concurrency rule is present, else 0)
-- ARGV[7 .. 6 + m]  the lease ids, in the order the permits are granted; an id already held
--          (the same request sent again) is this request's, not another holder's
-- then     per rule: its kind and parameters:
--            "paced", limit (permits per window), window (whole seconds), headroom (0 <= h < 1)
--            "fixed", limit (permits per window), window (whole seconds)
--            "token", rate (permits per period), burst (integer >= 1), period (seconds)
--            "sliding", limit (permits per window), window (seconds, float)
--            "concurrency", limit (leases held at once), ttl (milliseconds a lease lives)
-- Reply    {allowed (0/1), granted, limit, remaining, retry_after, reset_after, wait, offsets,
--          limited_by}: retry_after, reset_after and wait are seconds as strings (Redis truncates
--          Lua numbers). limit and reset_after are rule 1's; remaining is the least any rule has
--          left. wait and offsets are as paced_window.lua's (offsets "" without a paced rule).
--          limited_by is the 1-based index of the rule that held the grant back (0: none).
--          retry_after is "inf" when the request can never be granted as asked.
-- Guarantee: each rule keeps its own guarantee (a counter never exceeds its limit in force; a
-- paced rule's permits are spacing apart; no more than limit leases are live), and a permit is
-- counted in each CPS rule in the window of its moment. A lease lives until released (ZREM) or
-- until ttl after its permit's moment, on the Redis clock: a crashed holder's lease frees itself.
-- At most one rule may be paced. The limiter runs adaptive.lua before this script: its ARGV and
-- KEYS come last, and they adjust rule 1 when it is a CPS rule.
local EPOCH = 1767225600
local US = 1000000
local MAX_WINDOWS_AHEAD = 64

local time = redis.call("TIME")
local sec, micros = tonumber(time[1]), tonumber(time[2])
local late = past_deadline(sec, micros, ARGV[5])
if late then
  return late
end
local now = (sec - EPOCH) * US + micros
local now_ms = sec * 1000 + math.floor(micros / 1000)

local n = tonumber(ARGV[1])
local permits = tonumber(ARGV[2])
local partial = ARGV[3] == "1"
local max_wait_us = math.floor(tonumber(ARGV[4]) * US + 0.5)
local ids = 6
local rules, paced = {}, nil
local a, k = 7 + tonumber(ARGV[6]), 1
for i = 1, n do
  local rule = {kind = ARGV[a], limit = tonumber(ARGV[a + 1]), key = KEYS[k], index = i}
  k = k + 1
  if rule.kind == "concurrency" then
    rule.ttl = tonumber(ARGV[a + 2])
    a = a + 3
  elseif rule.kind == "token" then
    rule.rate, rule.burst = rule.limit, tonumber(ARGV[a + 2])
    rule.period = tonumber(ARGV[a + 3])
    a = a + 4
  elseif rule.kind == "sliding" then
    rule.win = math.floor(tonumber(ARGV[a + 2]) * US + 0.5)
    rule.seq = KEYS[k]
    rule.taken = {}
    k = k + 1
    a = a + 3
  else
    rule.window_us = tonumber(ARGV[a + 2]) * US
    rule.phase = (EPOCH % tonumber(ARGV[a + 2])) * US
    rule.used = {}
    a = a + 3
    if rule.kind == "paced" then
      rule.headroom = tonumber(ARGV[a])
      rule.pace = KEYS[k]
      k = k + 1
      a = a + 1
      paced = rule
    end
  end
  rules[i] = rule
end
local factor, cap = adaptive_factor(sec, micros)
if rules[1].kind == "token" then
  -- As token_bucket.lua: a cap replaces the rate, and the health factor scales rate and burst.
  local first = rules[1]
  if cap ~= nil or factor ~= 1 then
    local base_rate = first.rate
    first.rate = (cap or first.rate) * factor
    first.burst = math.max(math.floor(first.burst * first.rate / base_rate), 1)
  end
elseif rules[1].kind ~= "concurrency" then
  rules[1].limit = math.max(math.floor((cap or rules[1].limit) * factor), 1)
end
-- A token rule's state: its TAT as token_bucket.lua keeps it, in seconds since EPOCH.
local EPSILON = 1e-6
local now_s = (sec - EPOCH) + micros / US
-- A sliding rule's log is scored in unix microseconds, as sliding_window.lua scores it.
local UNIX = EPOCH * US
local function digits(us)
  return string.format("%.0f", us)
end
local function logged_after(rule, from)
  local held = redis.call("ZCOUNT", rule.key, "(" .. digits(from), "+inf")
  for _, moment in ipairs(rule.taken) do
    if moment > from then
      held = held + 1
    end
  end
  return held
end
for _, rule in ipairs(rules) do
  if rule.kind == "sliding" then
    redis.call("ZREMRANGEBYSCORE", rule.key, "-inf", digits(now + UNIX - rule.win))
  end
  if rule.kind == "token" then
    rule.limit = math.max(math.floor(rule.rate + 1e-9), 1)
    rule.interval = rule.period / rule.rate
    rule.offset = rule.interval * rule.burst
    rule.tat = math.max(tonumber(redis.call("GET", rule.key) or "0"), now_s)
    rule.stored = rule.tat
  end
end

local function start_of(rule, t)
  return t - ((t + rule.phase) % rule.window_us)
end
local function counter(rule, start)
  return rule.key .. ":" .. string.format("%d", start / US + EPOCH)
end
local function used_in(rule, start)
  if rule.used[start] == nil then
    rule.used[start] = tonumber(redis.call("GET", counter(rule, start)) or "0")
  end
  return rule.used[start]
end
local function seconds(us)
  return tostring(math.max(us, 0) / US)
end

-- Leases first: expired ones go, and the room they leave bounds the slots worth looking for.
local want, limited_by = permits, 0
for _, rule in ipairs(rules) do
  if rule.kind == "concurrency" then
    redis.call("ZREMRANGEBYSCORE", rule.key, "-inf", now_ms)
    rule.active = redis.call("ZCARD", rule.key)
    -- A lease id already in the set is this request's own, sent again after a reply that came
    -- late or never: it is held by this request, not counted against it.
    for j = 1, tonumber(ARGV[6]) do
      if redis.call("ZSCORE", rule.key, ARGV[ids + j]) then
        rule.active = rule.active - 1
      end
    end
    local room = math.max(rule.limit - rule.active, 0)
    if room < want then
      want, limited_by = room, rule.index
    end
  end
end

-- The moments: a paced rule's slots (as paced_window.lua finds them), else all now.
local slots, first, next_free = {}, nil, now
if paced ~= nil then
  paced.spacing = math.ceil(paced.window_us * (1 + paced.headroom) / paced.limit)
  next_free = math.max(tonumber(redis.call("GET", paced.pace) or "0"), now)
  local last_window = start_of(paced, now) + MAX_WINDOWS_AHEAD * paced.window_us
  local t = next_free
  while #slots < want and t < last_window do
    local start = start_of(paced, t)
    if used_in(paced, start) >= paced.limit then
      t = start + paced.window_us
    else
      first = first or t
      if t > now + max_wait_us then
        break
      end
      slots[#slots + 1] = t
      used_in(paced, start)
      paced.used[start] = paced.used[start] + 1
      t = t + paced.spacing
    end
  end
  if #slots < want then
    want, limited_by = #slots, paced.index
  end
else
  for j = 1, want do
    slots[j] = now
  end
end

-- Every other CPS rule counts each permit in the window of its moment: the longest run of
-- moments that all of them have room for.
local granted, stop = 0, nil
for j = 1, want do
  local t = slots[j]
  for _, rule in ipairs(rules) do
    if rule.kind == "fixed" and used_in(rule, start_of(rule, t)) >= rule.limit then
      limited_by, stop = rule.index, start_of(rule, t) + rule.window_us
      break
    elseif rule.kind == "sliding" then
      -- As sliding_window.lua: every entry after the moment less the window counts, the
      -- later ones too, so that no interval of the window ever holds more than the limit.
      local from = t + UNIX - rule.win
      if logged_after(rule, from) >= rule.limit then
        local oldest = redis.call("ZRANGEBYSCORE", rule.key, "(" .. digits(from), "+inf", "WITHSCORES", "LIMIT", 0, 1)
        local leaves = oldest[2] and tonumber(oldest[2]) or (t + UNIX)
        limited_by, stop = rule.index, leaves + rule.win - UNIX
        break
      end
    elseif rule.kind == "token" then
      -- GCRA at the permit's moment: its arrival may run ahead of it by the burst, no more.
      rule.next = math.max(rule.tat, t / US) + rule.interval
      if rule.next - t / US > rule.offset + EPSILON then
        limited_by, stop = rule.index, math.floor((rule.next - rule.offset) * US)
        break
      end
    end
  end
  if stop ~= nil then
    break
  end
  for _, rule in ipairs(rules) do
    if rule.kind == "fixed" then
      local start = start_of(rule, t)
      rule.used[start] = rule.used[start] + 1
    elseif rule.kind == "token" then
      rule.tat = rule.next
    elseif rule.kind == "sliding" then
      rule.taken[#rule.taken + 1] = t + UNIX
    end
  end
  granted = j
end
if paced ~= nil then
  -- Slots found but not granted were counted while looking: uncount them.
  for j = granted + 1, #slots do
    local start = start_of(paced, slots[j])
    paced.used[start] = paced.used[start] - 1
  end
end

local function remaining(held)
  local least = nil
  for _, rule in ipairs(rules) do
    local left
    if rule.kind == "concurrency" then
      left = rule.limit - rule.active - held
    elseif rule.kind == "sliding" then
      left = rule.limit - logged_after(rule, now + UNIX - rule.win)
    elseif rule.kind == "token" then
      left = math.min(math.floor((now_s + rule.offset - rule.tat) / rule.interval + EPSILON), rule.burst)
    else
      left = rule.limit - used_in(rule, start_of(rule, now))
    end
    least = math.min(least or left, left)
  end
  return math.max(least, 0)
end
local function reset_after(rule, last)
  if rule.kind == "paced" then
    return seconds(last - now)
  elseif rule.kind == "token" then
    return tostring(math.max(rule.tat - now_s, 0))
  elseif rule.kind == "sliding" then
    local newest = redis.call("ZRANGE", rule.key, -1, -1, "WITHSCORES")
    local last_taken = rule.taken[#rule.taken] or 0
    local latest = math.max(newest[2] and tonumber(newest[2]) or 0, last_taken)
    return latest > 0 and seconds(latest + rule.win - UNIX - now) or "0"
  elseif rule.kind == "fixed" then
    return used_in(rule, start_of(rule, now)) > 0 and seconds(start_of(rule, now) + rule.window_us - now) or "0"
  end
  return "0"
end

local need = partial and math.min(permits, 1) or permits
if granted < need then
  local rule, retry = rules[math.max(limited_by, 1)], "inf"
  if rule.kind == "concurrency" then
    local short = need - (rule.limit - rule.active)
    if need <= rule.limit then
      local freed = redis.call("ZRANGE", rule.key, short - 1, short - 1, "WITHSCORES")
      retry = seconds((tonumber(freed[2]) - now_ms) * 1000)
    end
  elseif rule.kind == "paced" then
    if first ~= nil and (need - 1) * rule.spacing <= max_wait_us then
      retry = seconds(first - now)
    end
  elseif rule.kind == "sliding" then
    if need <= rule.limit then
      retry = seconds(stop - now)
    end
  elseif rule.kind == "token" then
    if need <= rule.burst then
      retry = seconds(stop - now)
    end
  elseif need <= rule.limit then
    retry = seconds(stop - now)
  end
  -- Nothing was written: what remains is read afresh, not from the counts of the search.
  for _, other in ipairs(rules) do
    other.used = {}
    other.tat = other.stored
    if other.kind == "sliding" then
      other.taken = {}
    end
  end
  return {0, 0, rules[1].limit, remaining(0), retry, reset_after(rules[1], next_free), "0", "", limited_by}
end
if granted == permits then
  limited_by = 0
end

-- Grant: count each permit in its window's counter in every CPS rule, lease each in every
-- concurrency rule until ttl after its moment.
local last = next_free
for _, rule in ipairs(rules) do
  if rule.kind == "sliding" then
    if granted > 0 then
      local last = redis.call("INCRBY", rule.seq, granted)
      -- ZADD in chunks: Lua's unpack is bounded by its C stack.
      for from = 1, granted, 500 do
        local members = {}
        for j = from, math.min(from + 499, granted) do
          members[#members + 1] = digits(rule.taken[j])
          members[#members + 1] = last - granted + j
        end
        redis.call("ZADD", rule.key, unpack(members))
      end
      local ttl_ms = math.ceil((rule.taken[granted] + rule.win - UNIX - now) / 1000) + 1
      redis.call("PEXPIRE", rule.key, ttl_ms)
      redis.call("PEXPIRE", rule.seq, ttl_ms)
      -- Counted once in the log now: remaining reads it from there.
      rule.taken = {}
    end
  elseif rule.kind == "token" then
    if granted > 0 then
      redis.call(
        "SET", rule.key, string.format("%.17g", rule.tat), "PX",
        math.max(math.ceil((rule.tat - now_s) * 1000), 1)
      )
    end
  elseif rule.kind == "concurrency" then
    local longest = 0
    for j = 1, granted do
      local expiry = now_ms + math.floor((slots[j] - now) / 1000) + rule.ttl
      redis.call("ZADD", rule.key, expiry, ARGV[ids + j])
      longest = math.max(longest, expiry - now_ms)
    end
    if granted > 0 and redis.call("PTTL", rule.key) < longest then
      redis.call("PEXPIRE", rule.key, longest)
    end
  else
    local added = {}
    for j = 1, granted do
      local start = start_of(rule, slots[j])
      added[start] = (added[start] or 0) + 1
    end
    for start, count in pairs(added) do
      local key = counter(rule, start)
      if redis.call("INCRBY", key, count) == count then
        redis.call("PEXPIRE", key, math.ceil((start + 2 * rule.window_us - now) / 1000))
      end
    end
  end
end
if paced ~= nil and granted > 0 then
  last = slots[granted] + paced.spacing
  redis.call("SET", paced.pace, string.format("%d", last), "PX", math.ceil((last - now) / 1000) + paced.window_us / 1000)
end

local offsets = {}
for j = 2, granted do
  offsets[#offsets + 1] = string.format("%d", slots[j] - slots[1])
end
local wait = granted > 0 and seconds(slots[1] - now) or "0"
return {1, granted, rules[1].limit, remaining(granted), "0", reset_after(rules[1], last), wait, table.concat(offsets, " "), limited_by}
