-- Rules: one decision over several limits at once (a trunk's CPS, a campaign's CPS, a campaign's
-- concurrency), all or nothing, in one script: a permit is granted only when every rule has room
-- for it, and a rule that denies leaves nothing taken from the others.
--
-- KEYS     per rule, in the order of the rules:
--            paced:       base, base .. ":pace" (as paced_window.lua; counters base .. ":" .. t)
--            fixed:       base (counters base .. ":" .. t, as fixed_window.lua)
--            token:       base .. ":tat" (as token_bucket.lua: seconds since EPOCH)
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
--          limited_by, expired}: retry_after, reset_after and wait are seconds as strings (Redis truncates
--          Lua numbers). limit and reset_after are rule 1's; remaining is the least any rule has
--          left. wait and offsets are as paced_window.lua's (offsets "" without a paced rule).
--          limited_by is the 1-based index of the rule that held the grant back (0: none).
--          retry_after is "inf" when the request can never be granted as asked. expired is how
--          many leases this decision found past their ttl, never freed by their holder.
-- Guarantee: each rule keeps its own guarantee (a counter never exceeds its limit in force; a
-- paced rule's permits are spacing apart; no more than limit leases are live), and a permit is
-- counted in each CPS rule in the window of its moment. A lease lives until released (ZREM) or
-- until ttl after its permit's moment, on the Redis clock: a crashed holder's lease frees itself.
-- At most one rule may be paced. Each rule counts with its strategy's library part
-- (lib_windows.lua, lib_gcra.lua, lib_sliding.lua), which the limiter runs before this script
-- with lib_core.lua and adaptive.lua: adaptive.lua's ARGV and KEYS come last, and they adjust
-- rule 1 when it is a CPS rule.
-- The positions of ARGV's request fields, and of the rules after the lease ids.
local N_RULES, R_PERMITS, R_PARTIAL, R_MAX_WAIT, R_DEADLINE, N_IDS = 1, 2, 3, 4, 5, 6

local sec, micros, late = server_clock(ARGV[R_DEADLINE])
if late then
  return late
end
local now = (sec - EPOCH) * US + micros
local now_ms = sec * 1000 + math.floor(micros / 1000)
-- A token rule's TAT is in seconds since EPOCH, a sliding rule's log in unix microseconds.
local now_s = (sec - EPOCH) + micros / US
local UNIX = EPOCH * US

local n = tonumber(ARGV[N_RULES])
local permits = tonumber(ARGV[R_PERMITS])
local partial = ARGV[R_PARTIAL] == "1"
local max_wait_us = math.floor(tonumber(ARGV[R_MAX_WAIT]) * US + 0.5)
local rules, paced = {}, nil
local a, k = N_IDS + 1 + tonumber(ARGV[N_IDS]), 1
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
    rule.w = window_of(rule.key, tonumber(ARGV[a + 2]))
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
if rules[1].kind == "token" then
  rules[1].rate, rules[1].burst = adaptive_limit(rules[1].rate, sec, micros, rules[1].burst)
elseif rules[1].kind ~= "concurrency" then
  rules[1].limit = adaptive_limit(rules[1].limit, sec, micros)
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
    sliding_trim(rule.key, now + UNIX, rule.win)
  elseif rule.kind == "token" then
    -- A bucket's limit is its burst: the most it grants at once.
    rule.limit = rule.burst
    rule.interval = rule.period / rule.rate
    rule.tat = gcra_tat(rule.key, now_s)
    rule.stored = rule.tat
  end
end

-- Leases first: expired ones go, and the room they leave bounds the slots worth looking for.
local want, limited_by, expired = permits, 0, 0
for _, rule in ipairs(rules) do
  if rule.kind == "concurrency" then
    expired = expired + redis.call("ZREMRANGEBYSCORE", rule.key, "-inf", now_ms)
    rule.active = redis.call("ZCARD", rule.key)
    -- A lease id already in the set is this request's own, sent again after a reply that came
    -- late or never: it is held by this request, not counted against it.
    for j = 1, tonumber(ARGV[N_IDS]) do
      if redis.call("ZSCORE", rule.key, ARGV[N_IDS + j]) then
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
local slots, first, next_free, after = {}, nil, now, now
if paced ~= nil then
  paced.spacing = paced_spacing(paced.w.us, paced.headroom, paced.limit)
  next_free = math.max(tonumber(redis.call("GET", paced.pace) or "0"), now)
  slots, first, after = paced_slots(paced.w, paced.limit, paced.spacing, next_free, now + max_wait_us, want, now)
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
    if rule.kind == "fixed" then
      local start = window_start(rule.w, t)
      if window_used(rule.w, start) >= rule.limit then
        limited_by, stop = rule.index, start + rule.w.us
        break
      end
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
      -- GCRA at the permit's moment: the bucket must hold one then.
      local tat = math.max(rule.tat, t / US)
      if gcra_free(t / US, tat, rule.interval, rule.burst) < 1 then
        limited_by, stop = rule.index, math.floor(gcra_at(tat, rule.interval, rule.burst, 1) * US)
        break
      end
      rule.next = tat + rule.interval
    end
  end
  if stop ~= nil then
    break
  end
  for _, rule in ipairs(rules) do
    if rule.kind == "fixed" then
      local start = window_start(rule.w, t)
      rule.w.used[start] = rule.w.used[start] + 1
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
    local start = window_start(paced.w, slots[j])
    paced.w.used[start] = paced.w.used[start] - 1
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
      left = gcra_free(now_s, rule.tat, rule.interval, rule.burst)
    else
      left = rule.limit - window_used(rule.w, window_start(rule.w, now))
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
    local latest = math.max(sliding_newest(rule.key), rule.taken[#rule.taken] or 0)
    return latest > 0 and seconds(latest + rule.win - UNIX - now) or "0"
  elseif rule.kind == "fixed" then
    local start = window_start(rule.w, now)
    return window_used(rule.w, start) > 0 and seconds(start + rule.w.us - now) or "0"
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
    retry = paced_retry(first, need, rule.spacing, max_wait_us, now)
  elseif need <= rule.limit then
    retry = seconds(stop - now)
  end
  -- Nothing was written: what remains is read afresh, not from the counts of the search.
  for _, other in ipairs(rules) do
    if other.w ~= nil then
      other.w.used = {}
    end
    other.tat = other.stored
    if other.kind == "sliding" then
      other.taken = {}
    end
  end
  return {0, 0, rules[1].limit, remaining(0), retry, reset_after(rules[1], next_free), "0", "", limited_by, expired}
end
if granted == permits then
  limited_by = 0
end

-- Grant: count each permit in its window's counter in every CPS rule, lease each in every
-- concurrency rule until ttl after its moment.
local last = next_free
for _, rule in ipairs(rules) do
  if granted == 0 then
    break
  elseif rule.kind == "sliding" then
    sliding_log(rule.key, rule.seq, rule.taken, granted, rule.taken[granted] + rule.win - UNIX - now)
    -- Counted once in the log now: remaining reads it from there.
    rule.taken = {}
  elseif rule.kind == "token" then
    gcra_store(rule.key, rule.tat, now_s)
  elseif rule.kind == "concurrency" then
    local longest = 0
    for j = 1, granted do
      local expiry = now_ms + math.floor((slots[j] - now) / 1000) + rule.ttl
      redis.call("ZADD", rule.key, expiry, ARGV[N_IDS + j])
      longest = math.max(longest, expiry - now_ms)
    end
    -- The set outlives its last lease by a ttl: a lease that expired unfreed is still there for
    -- the next decision to count (expired), not gone with the key.
    if granted > 0 and redis.call("PTTL", rule.key) < longest + rule.ttl then
      redis.call("PEXPIRE", rule.key, longest + rule.ttl)
    end
  else
    window_add(rule.w, slots, granted, 1, now)
  end
end
if paced ~= nil and granted > 0 then
  last = slots[granted] + paced.spacing
  pacer_store(paced.pace, last, now, paced.w.us)
end

local wait = granted > 0 and seconds(slots[1] - now) or "0"
return {1, granted, rules[1].limit, remaining(granted), "0", reset_after(rules[1], last), wait, paced_offsets(slots, granted), limited_by, expired}
